"""The console's web plumbing: who is asking (session cookie, HTTP Basic or an API token),
roles, CSRF, templates, error pages, security headers and an access log without query strings.

Pages are plain functions ``fn(request, ctx) -> Response`` run on Starlette's thread pool
(the database and argon2 are synchronous); :func:`view` wraps them with the checks.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote, urlsplit

import jinja2
from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dicom_node.audit.accounts import Role
from dicom_node.audit.db import transaction
from dicom_node.config import Settings
from dicom_node.console import users
from dicom_node.console.actions import Operations
from dicom_node.console.preview import PreviewCache
from dicom_node.console.users import Principal, WebSession
from dicom_node.logging import get_logger

log = get_logger("dicom_node.console")

SESSION_COOKIE = "meddet_session"
LOGIN_COOKIE = "meddet_login"  # the login form's CSRF value (double submit)
FLASH_COOKIE = "meddet_flash"
TEMPLATES = Path(__file__).resolve().parent / "templates"
CSP = (
    "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; "
    "frame-ancestors 'none'; base-uri 'none'"
)


@dataclass
class Console:
    """What every request needs; one per app."""

    settings: Settings
    sessions: sessionmaker[Session]
    model_version: str
    templates: jinja2.Environment
    previews: PreviewCache
    operations: Operations
    metrics_registry: Any = None


class HTTPError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Ctx:
    """One request's caller: ``user``, their browser session (None for Basic/token), the form."""

    console: Console
    user: Principal
    web: WebSession | None
    form: FormData | None

    @property
    def csrf(self) -> str:
        return self.web.csrf_token if self.web else ""


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["short_uid"] = lambda uid: "" if not uid else (uid if len(uid) <= 20 else "…" + uid[-18:])
    env.filters["pct"] = lambda v: "" if v is None else f"{float(v):.0%}"
    env.filters["when"] = lambda v: "" if not v else str(v).replace("T", " ")[:19]
    return env


def address(request: Request) -> str | None:
    return request.client.host if request.client else None


def is_https(request: Request) -> bool:
    return request.url.scheme == "https"


def safe_next(target: str | None) -> str:
    """A local path to go to after login (never another site)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    parts = urlsplit(target)
    return parts.path + (f"?{parts.query}" if parts.query else "") if not parts.netloc else "/"


def set_cookie(response: Response, request: Request, name: str, value: str, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="lax", secure=is_https(request))


def flash(response: Response, request: Request, message: str, ok: bool) -> Response:
    set_cookie(response, request, FLASH_COOKIE, quote(("1" if ok else "0") + message[:300]), 60)
    return response


def render(request: Request, ctx: Ctx | None, name: str, status: int = 200, **values: Any) -> HTMLResponse:
    console: Console = request.app.state.console
    raw = request.cookies.get(FLASH_COOKIE)
    message = unquote(raw) if raw else ""
    html = console.templates.get_template(name).render(
        user=ctx.user if ctx else None,
        csrf=ctx.csrf if ctx else "",
        path=request.url.path,
        model_version=console.model_version,
        ae_title=console.settings.ae_title,
        flash=message[1:],
        flash_ok=message[:1] == "1",
        refresh=values.pop("refresh", None),
        **values,
    )
    response = HTMLResponse(html, status_code=status)
    if raw:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def error(request: Request, ctx: Ctx | None, status: int, message: str, api: bool) -> Response:
    if api:
        headers = {"WWW-Authenticate": 'Basic realm="MedDet console"'} if status == 401 else None
        return JSONResponse({"error": message}, status_code=status, headers=headers)
    return render(request, ctx, "error.html", status=status, status_code=status, message=message, title=f"{status}")


def _from_header(console: Console, request: Request, header: str) -> Principal | None:
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer":
        return users.user_for_token(console.sessions, value.strip())
    if scheme.lower() == "basic":
        try:
            name, _, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None
        settings = console.settings
        login = users.authenticate(
            console.sessions,
            name,
            password,
            attempts=settings.console_lockout_attempts,
            lockout=timedelta(minutes=settings.console_lockout_minutes),
            address=address(request),
            via="api",
        )
        return login.user
    return None


def identify(console: Console, request: Request, api: bool) -> tuple[Principal, WebSession | None] | None:
    """The caller: an API request may use ``Authorization`` (Basic or Bearer), every request
    the session cookie."""
    header = request.headers.get("authorization")
    if api and header:
        user = _from_header(console, request, header)
        return (user, None) if user else None
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        web = users.find_session(console.sessions, token)
        if web is not None:
            return web.user, web
    return None


def check_csrf(request: Request, ctx: Ctx) -> None:
    """A POST must come from a browser session, from this site, with the session's token."""
    if ctx.web is None:
        raise HTTPError(403, "forms need a browser login")
    origin = request.headers.get("origin")
    if origin and origin != "null" and urlsplit(origin).netloc != request.headers.get("host", ""):
        raise HTTPError(403, "cross-site request refused")
    sent = str(ctx.form.get("csrf_token", "")) if ctx.form is not None else ""
    if not sent or not hmac.compare_digest(sent, ctx.web.csrf_token):
        raise HTTPError(403, "missing or wrong CSRF token: reload the page and try again")


View = Callable[[Request, Ctx], Response]
Endpoint = Callable[[Request], Awaitable[Response]]


def view(role: Role | None = None, *, api: bool = False) -> Callable[[View], Endpoint]:
    """Wrap ``fn(request, ctx)``: login (redirect or 401), role (403), CSRF on POST (403)."""

    def wrap(fn: View) -> Endpoint:
        async def endpoint(request: Request) -> Response:
            form = await request.form() if request.method == "POST" else None
            return await run_in_threadpool(_handle, fn, request, role, form, api)

        endpoint.__name__ = fn.__name__
        endpoint.__doc__ = fn.__doc__
        return endpoint

    return wrap


def _handle(fn: View, request: Request, role: Role | None, form: FormData | None, api: bool) -> Response:
    console: Console = request.app.state.console
    ctx: Ctx | None = None
    try:
        who = identify(console, request, api)
        if who is None:
            if api:
                raise HTTPError(401, "authentication required (HTTP Basic or a token from `meddet user token`)")
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(target)}", status_code=303)
        ctx = Ctx(console, who[0], who[1], form)
        request.state.user = ctx.user.name
        if role is Role.admin and not ctx.user.is_admin:
            raise HTTPError(403, f"refused: {ctx.user.name} is a {ctx.user.role.value}; this needs an admin")
        if request.method == "POST":
            check_csrf(request, ctx)
        return fn(request, ctx)
    except HTTPError as exc:
        if ctx is not None and request.method == "POST":  # a refused action is on the record too
            with transaction(console.sessions) as session:
                users.record(
                    session, ctx.user.name, "post", "refused", request.url.path[:128], exc.message, address(request)
                )
        return error(request, ctx, exc.status, exc.message, api)


def new_login_token() -> str:
    return secrets.token_urlsafe(24)


class Guard:
    """ASGI middleware: security headers on every response, one access-log line per request
    (method, path, status, user, milliseconds; never the query string, which may hold a
    search term)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                names = {k.lower() for k, _ in headers}
                for key, value in (
                    (b"content-security-policy", CSP.encode()),
                    (b"x-content-type-options", b"nosniff"),
                    (b"x-frame-options", b"DENY"),
                    (b"referrer-policy", b"no-referrer"),
                    (b"cache-control", b"no-store"),
                ):
                    if key not in names:
                        headers.append((key, value))
                if scope.get("scheme") == "https":
                    headers.append((b"strict-transport-security", b"max-age=31536000"))
                message["headers"] = headers
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            state = scope.get("state") or {}
            log.info(
                "http",
                method=scope["method"],
                path=scope["path"],
                status=status["code"],
                user=state.get("user"),
                ms=round(1000 * (time.perf_counter() - started), 1),
            )
