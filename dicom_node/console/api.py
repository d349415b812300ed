"""The JSON API under /api/: the rows ``meddet audit ... --json`` prints, from the same query
functions, for HTTP Basic, a token (``Authorization: Bearer``, ``meddet user token NAME``) or
a browser session; plus the preview PNG. Read-only.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dicom_node.audit import queries
from dicom_node.audit.accounts import Role
from dicom_node.audit.models import JobState, SeriesState
from dicom_node.console.preview import PreviewUnavailable, render
from dicom_node.console.web import Ctx, HTTPError, view


def _rows(rows: list[dict[str, Any]]) -> JSONResponse:
    return JSONResponse(rows)


def _common(request: Request, states: type[Enum] | None) -> dict[str, Any]:
    """``since``, ``status`` and ``limit`` as the CLI takes them."""
    p = request.query_params
    args: dict[str, Any] = {}
    try:
        args["since"] = queries.parse_since(p.get("since"))
        args["limit"] = int(p.get("limit", "100"))
    except ValueError as exc:
        raise HTTPError(400, str(exc)) from exc
    if not 1 <= args["limit"] <= 10000:
        raise HTTPError(400, "limit: 1 to 10000")
    if states is not None and p.get("status"):
        if p["status"] not in {s.value for s in states}:
            raise HTTPError(400, f"unknown status {p['status']!r}")
        args["status"] = p["status"]
    return args


@view(api=True)
def series(request: Request, ctx: Ctx) -> Response:
    """``meddet audit series --json``"""
    args = _common(request, SeriesState)
    with ctx.console.sessions() as session:
        return _rows(queries.series_rows(session, **args))


@view(api=True)
def jobs(request: Request, ctx: Ctx) -> Response:
    """``meddet audit jobs --json``"""
    args = _common(request, JobState)
    with ctx.console.sessions() as session:
        return _rows(queries.job_rows(session, **args))


def _job_id(request: Request) -> int:
    return int(request.path_params["job_id"])


@view(api=True)
def job(request: Request, ctx: Ctx) -> Response:
    """``meddet audit job ID --json``"""
    job_id = _job_id(request)
    with ctx.console.sessions() as session:
        if not queries.job_rows(session, job_id=job_id):
            raise HTTPError(404, f"no job {job_id}")
        return _rows(queries.job_history(session, job_id))


@view(api=True)
def preview(request: Request, ctx: Ctx) -> Response:
    """The key slice of a job (or of finding number ``?finding=N``) with its boxes, PNG."""
    raw = request.query_params.get("finding")
    try:
        finding = int(raw) if raw not in (None, "") else None
    except ValueError as exc:
        raise HTTPError(400, "finding: a number") from exc
    try:
        png = render(ctx.console.sessions, ctx.console.settings, _job_id(request), finding, ctx.console.previews)
    except PreviewUnavailable as exc:
        raise HTTPError(404, str(exc)) from exc
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=60"})


@view(Role.admin, api=True)
def failures(request: Request, ctx: Ctx) -> Response:
    """``meddet audit failures --json`` (admins)"""
    args = _common(request, None)
    with ctx.console.sessions() as session:
        return _rows(queries.failure_rows(session, **args))


@view(Role.admin, api=True)
def associations(request: Request, ctx: Ctx) -> Response:
    """``meddet audit associations --json`` (admins)"""
    args = _common(request, None)
    if request.query_params.get("status"):
        args["status"] = request.query_params["status"]
    with ctx.console.sessions() as session:
        return _rows(queries.association_rows(session, **args))


def routes() -> list[Route]:
    return [
        Route("/api/series", series),
        Route("/api/jobs", jobs),
        Route("/api/jobs/{job_id:int}", job),
        Route("/api/jobs/{job_id:int}/preview.png", preview),
        Route("/api/failures", failures),
        Route("/api/associations", associations),
    ]
