"""The console's pages and the app factory.

Overview, series (filters, search by UID or accession), a series with its jobs, jobs, a job
(timeline, findings, previews, result objects and their sends), and for admins associations,
failures (with the quarantined files), settings and the action log. Admin actions are POST
forms with the session's CSRF token.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from enum import Enum
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from dicom_node.audit import queries
from dicom_node.audit.accounts import Role
from dicom_node.audit.models import JobState, SeriesState
from dicom_node.config import Settings, masked_values, setting_sources
from dicom_node.console import actions, api, data, users
from dicom_node.console.preview import PreviewCache
from dicom_node.console.web import (
    LOGIN_COOKIE,
    SESSION_COOKIE,
    Console,
    Ctx,
    Guard,
    HTTPError,
    address,
    flash,
    make_templates,
    new_login_token,
    render,
    safe_next,
    set_cookie,
    view,
)
from dicom_node.leases import IN_FLIGHT

UID_TEXT = re.compile(r"^[0-9.]+$")
ACCESSION_SCAN = 500  # accession search reads the headers of this many newest series


def _day(value: str) -> datetime | None:
    try:
        return datetime.strptime(value, "%Y-%m-%d").replace(tzinfo=UTC) if value else None
    except ValueError as exc:
        raise HTTPError(400, f"date {value!r}: use YYYY-MM-DD") from exc


def _state(value: str, allowed: type[Enum]) -> str | None:
    if value and value not in {s.value for s in allowed}:
        raise HTTPError(400, f"unknown state {value!r}")
    return value or None


@view()
def overview(request: Request, ctx: Ctx) -> Response:
    with ctx.console.sessions() as session:
        counts = data.overview(session, ctx.console.settings, datetime.now(UTC))
        recent = queries.job_rows(session, limit=10)
    return render(request, ctx, "overview.html", title="Overview", counts=counts, recent=recent, refresh=15)


@view()
def series_list(request: Request, ctx: Ctx) -> Response:
    p = request.query_params
    day = _day(p.get("date", ""))
    filters: dict[str, Any] = {
        "status": _state(p.get("state", ""), SeriesState),
        "modality": p.get("modality", "").strip() or None,
        "calling_ae": p.get("calling_ae", "").strip() or None,
        "since": day,
        "until": day + timedelta(days=1) if day else None,
    }
    search = p.get("q", "").strip()
    with ctx.console.sessions() as session:
        if not search:
            rows = queries.series_rows(session, limit=100, **filters)
        else:
            rows = queries.series_rows(session, limit=100, uid=search, **filters) if UID_TEXT.match(search) else []
            recent = queries.series_rows(session, limit=ACCESSION_SCAN, **filters)
            paths = data.first_instance_paths(session, [r["series_instance_uid"] for r in recent])
            seen = {r["series_instance_uid"] for r in rows}
            rows += [
                r
                for r in recent
                if r["series_instance_uid"] not in seen
                and data.matches_accession(data.header_of(paths.get(r["series_instance_uid"])), search)
            ]
        paths = data.first_instance_paths(session, [r["series_instance_uid"] for r in rows])
    headers = {uid: data.header_of(path) for uid, path in paths.items()}
    return render(
        request,
        ctx,
        "series_list.html",
        title="Series",
        rows=rows,
        headers=headers,
        params={k: p.get(k, "") for k in ("state", "modality", "calling_ae", "date", "q")},
        states=[s.value for s in SeriesState],
    )


@view()
def series_page(request: Request, ctx: Ctx) -> Response:
    uid = request.path_params["uid"]
    with ctx.console.sessions() as session:
        extra = data.series_extra(session, uid)
        if extra is None:
            raise HTTPError(404, "no such series")
        row = next(
            (r for r in queries.series_rows(session, uid=uid, limit=50) if r["series_instance_uid"] == uid), None
        )
        if row is None:
            raise HTTPError(404, "no such series")
        study = [
            r
            for r in queries.series_rows(session, uid=row["study_instance_uid"], limit=50)
            if r["study_instance_uid"] == row["study_instance_uid"] and r["series_instance_uid"] != uid
        ]
        job_list = queries.job_rows(session, series_uid=uid)
        sent_by = data.senders(session, uid)
        path = data.first_instance_paths(session, [uid]).get(uid)
    return render(
        request,
        ctx,
        "series.html",
        title="Series",
        row=row,
        extra=extra,
        study=study,
        jobs=job_list,
        senders=sent_by,
        header=data.header_of(path),
    )


@view()
def jobs_list(request: Request, ctx: Ctx) -> Response:
    status = _state(request.query_params.get("state", ""), JobState)
    with ctx.console.sessions() as session:
        rows = queries.job_rows(session, status=status, limit=200)
    return render(
        request, ctx, "jobs.html", title="Jobs", rows=rows, state=status or "", states=[s.value for s in JobState]
    )


def _job_id(request: Request) -> int:
    try:
        return int(request.path_params["job_id"])
    except ValueError as exc:
        raise HTTPError(404, "no such job") from exc


@view()
def job_page(request: Request, ctx: Ctx) -> Response:
    job_id = _job_id(request)
    with ctx.console.sessions() as session:
        found = queries.job_rows(session, job_id=job_id)
        if not found:
            raise HTTPError(404, f"no job {job_id}")
        history = queries.job_history(session, job_id)
        result = data.results(session, ctx.console.settings, job_id)
    findings = result.findings.get("findings", []) if result and result.findings else []
    state = JobState(found[0]["state"])
    return render(
        request,
        ctx,
        "job.html",
        title=f"Job {job_id}",
        job=found[0],
        history=history,
        result=result,
        findings=findings,
        previews=data.preview_slices(findings),
        can_retry=state in (JobState.failed, JobState.quarantined),
        can_reanalyze=found[0]["model_version"] != ctx.console.model_version and state not in IN_FLIGHT,
        can_resend=state in (JobState.done, JobState.failed, JobState.results_written)
        and bool(result and result.objects),
    )


def _act(request: Request, ctx: Ctx, action: Any, target: int, back: str) -> Response:
    console = ctx.console
    outcome = action(console.settings, console.sessions, console.operations, ctx.user, target, address(request))
    return flash(RedirectResponse(back, status_code=303), request, outcome.message, outcome.ok)


@view(Role.admin)
def job_retry(request: Request, ctx: Ctx) -> Response:
    job_id = _job_id(request)
    return _act(request, ctx, actions.retry, job_id, f"/jobs/{job_id}")


@view(Role.admin)
def job_reanalyze(request: Request, ctx: Ctx) -> Response:
    job_id = _job_id(request)
    return _act(request, ctx, actions.reanalyze, job_id, f"/jobs/{job_id}")


@view(Role.admin)
def job_resend(request: Request, ctx: Ctx) -> Response:
    job_id = _job_id(request)
    return _act(request, ctx, actions.resend, job_id, f"/jobs/{job_id}")


@view(Role.admin)
def quarantine_release(request: Request, ctx: Ctx) -> Response:
    return _act(request, ctx, actions.release, int(request.path_params["record_id"]), "/failures")


@view(Role.admin)
def quarantine_delete(request: Request, ctx: Ctx) -> Response:
    return _act(request, ctx, actions.delete, int(request.path_params["record_id"]), "/failures")


@view(Role.admin)
def associations(request: Request, ctx: Ctx) -> Response:
    status = request.query_params.get("outcome", "").strip() or None
    with ctx.console.sessions() as session:
        rows = queries.association_rows(session, status=status, limit=200)
    return render(request, ctx, "associations.html", title="Associations", rows=rows, outcome=status or "")


@view(Role.admin)
def failures(request: Request, ctx: Ctx) -> Response:
    with ctx.console.sessions() as session:
        rows = queries.failure_rows(session, limit=200)
        files = data.quarantined_files(session, ctx.console.settings)
    return render(request, ctx, "failures.html", title="Failures", rows=rows, files=files)


@view(Role.admin)
def settings_page(request: Request, ctx: Ctx) -> Response:
    settings = ctx.console.settings
    values = masked_values(settings)
    sources = setting_sources(settings, settings.model_config.get("toml_file"))  # type: ignore[arg-type]
    rows = [{"name": f"MEDDET_{k.upper()}", "value": v, "source": sources[k]} for k, v in values.items()]
    return render(request, ctx, "settings.html", title="Settings", rows=rows)


@view(Role.admin)
def activity(request: Request, ctx: Ctx) -> Response:
    return render(
        request,
        ctx,
        "activity.html",
        title="Activity",
        rows=users.recent_actions(ctx.console.sessions),
        people=users.list_users(ctx.console.sessions),
    )


@view()
def logout(request: Request, ctx: Ctx) -> Response:
    users.close_session(ctx.console.sessions, request.cookies.get(SESSION_COOKIE, ""), address(request))
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


# ---- login (no session yet: the form's CSRF value is a double-submit cookie) -----------------


def _login_form(request: Request, message: str = "", status: int = 200) -> Response:
    token = request.cookies.get(LOGIN_COOKIE) or new_login_token()
    response = render(
        request,
        None,
        "login.html",
        status=status,
        title="Log in",
        login_token=token,
        next=safe_next(request.query_params.get("next")),
        message=message,
    )
    set_cookie(response, request, LOGIN_COOKIE, token, 3600)
    return response


async def login(request: Request) -> Response:
    if request.method == "GET":
        return _login_form(request)
    form = await request.form()
    return await run_in_threadpool(
        _login,
        request,
        str(form.get("csrf_token", "")),
        str(form.get("username", "")),
        str(form.get("password", "")),
        str(form.get("next", "/")),
    )


def _login(request: Request, token: str, name: str, password: str, target: str) -> Response:
    import hmac

    console: Console = request.app.state.console
    settings = console.settings
    cookie = request.cookies.get(LOGIN_COOKIE, "")
    if not cookie or not token or not hmac.compare_digest(cookie, token):
        return _login_form(request, "The form expired; please log in again.", 403)
    result = users.authenticate(
        console.sessions,
        name.strip(),
        password,
        attempts=settings.console_lockout_attempts,
        lockout=timedelta(minutes=settings.console_lockout_minutes),
        address=address(request),
    )
    if result.user is None:
        return _login_form(request, "Wrong user name or password, or the account is locked for a while.", 401)
    session_token = users.open_session(console.sessions, result.user, settings.console_session_hours)
    response = RedirectResponse(safe_next(target), status_code=303)
    set_cookie(response, request, SESSION_COOKIE, session_token, int(settings.console_session_hours * 3600))
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


def healthz(request: Request) -> Response:
    console: Console = request.app.state.console
    try:
        with console.sessions() as session:
            session.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - reported as unhealthy
        return JSONResponse({"status": "error", "database": type(exc).__name__}, status_code=503)
    return JSONResponse({"status": "ok", "model": console.model_version})


def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    return Response(generate_latest(request.app.state.console.metrics_registry), media_type=CONTENT_TYPE_LATEST)


async def not_found(request: Request, exc: Exception) -> Response:
    if request.url.path.startswith("/api/"):
        return JSONResponse({"error": "not found"}, status_code=404)
    return PlainTextResponse("not found", status_code=404)


def create_app(
    settings: Settings,
    sessions: sessionmaker[Session],
    model_version: str,
    metrics_registry: Any = None,
    operations: actions.Operations = actions.NO_OPERATIONS,
) -> Starlette:
    """The console app over ``sessions`` (the audit DB, migrated). ``operations``: retry and
    resend, from the CLI; ``metrics_registry`` adds an unauthenticated ``/metrics`` when the
    node exports metrics (``MEDDET_METRICS_PORT``)."""
    routes = [
        Route("/", overview),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/series", series_list),
        Route("/series/{uid}", series_page),
        Route("/jobs", jobs_list),
        Route("/jobs/{job_id}", job_page),
        Route("/jobs/{job_id}/retry", job_retry, methods=["POST"]),
        Route("/jobs/{job_id}/reanalyze", job_reanalyze, methods=["POST"]),
        Route("/jobs/{job_id}/resend", job_resend, methods=["POST"]),
        Route("/associations", associations),
        Route("/failures", failures),
        Route("/quarantine/{record_id:int}/release", quarantine_release, methods=["POST"]),
        Route("/quarantine/{record_id:int}/delete", quarantine_delete, methods=["POST"]),
        Route("/settings", settings_page),
        Route("/activity", activity),
        Route("/healthz", healthz),
        *api.routes(),
    ]
    if metrics_registry is not None and settings.metrics_port is not None:
        routes.append(Route("/metrics", metrics))
    app = Starlette(routes=routes, middleware=[Middleware(Guard)], exception_handlers={404: not_found})
    app.state.console = Console(
        settings, sessions, model_version, make_templates(), PreviewCache(), operations, metrics_registry
    )
    return app
