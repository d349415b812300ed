"""What an admin may do from the console, each recorded with who did it and how it ended.

Retry, resend and re-analysis are the worker's (``meddet retry`` / ``resend`` / ``reanalyze``): the CLI, the
composition root, hands them in as :class:`Operations`, so this package never imports the
worker. Release re-checks a quarantined file against the current limits and, when it now
passes, files it in the spool like a received instance (the node's assembler completes its
series); delete removes the file and its note.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import transaction
from dicom_node.audit.models import QuarantineRecord, utcnow
from dicom_node.config import Settings
from dicom_node.console import data
from dicom_node.console.users import Principal, record
from dicom_node.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str


@dataclass(frozen=True)
class Operations:
    """Job operations, each ``(settings, sessions, job_id, who) -> Outcome``; a refusal (the job
    is in the wrong state, a destination is down) is an Outcome with ``ok=False``."""

    retry: Callable[[Settings, sessionmaker[Session], int, str], Outcome]
    resend: Callable[[Settings, sessionmaker[Session], int, str], Outcome]
    reanalyze: Callable[[Settings, sessionmaker[Session], int, str], Outcome]  # with the console's model


def _unavailable(*_args: object) -> Outcome:
    return Outcome(False, "not available in this process (start the console with `meddet serve` or `meddet console`)")


NO_OPERATIONS = Operations(_unavailable, _unavailable, _unavailable)


def _log(
    sessions: sessionmaker[Session], user: Principal, action: str, target: str, outcome: Outcome, address: str | None
) -> Outcome:
    with transaction(sessions) as session:
        record(session, user.name, action, "ok" if outcome.ok else "refused", target, outcome.message, address)
    log.info("console_action", user=user.name, action=action, target=target, ok=outcome.ok)
    return outcome


def _job_action(name: str) -> Callable[..., Outcome]:
    """The console action that runs ``Operations.<name>`` on a job and records who did it."""

    def act(
        settings: Settings,
        sessions: sessionmaker[Session],
        operations: Operations,
        user: Principal,
        job_id: int,
        address: str | None = None,
    ) -> Outcome:
        outcome = getattr(operations, name)(settings, sessions, job_id, user.name)
        return _log(sessions, user, name, f"job {job_id}", outcome, address)

    act.__name__ = act.__qualname__ = name
    return act


retry = _job_action("retry")
resend = _job_action("resend")
reanalyze = _job_action("reanalyze")


def release(
    settings: Settings,
    sessions: sessionmaker[Session],
    operations: Operations,
    user: Principal,
    record_id: int,
    address: str | None = None,
) -> Outcome:
    from dicom_node.headers import Rejected, inspect_instance
    from dicom_node.recording import record_instance
    from dicom_node.spool import Spool

    path = _quarantined(settings, sessions, record_id)
    if path is None:
        return _log(
            sessions, user, "release", f"quarantine {record_id}", Outcome(False, "no such quarantined file"), address
        )
    content = path.read_bytes()
    try:
        header = inspect_instance(content, max_pixels=settings.max_pixels, max_bytes=settings.max_instance_bytes)
    except Rejected as rejected:
        return _log(
            sessions,
            user,
            "release",
            f"quarantine {record_id}",
            Outcome(False, f"still refused: {rejected.reason}"),
            address,
        )
    spool = Spool(settings.spool_dir, settings.incoming_tmp_dir, settings.quarantine_dir)
    stored = spool.store(content, header.study_uid, header.series_uid, header.sop_uid)
    with transaction(sessions) as session:
        record_instance(session, header, stored, utcnow(), None)  # a duplicate changes nothing
    path.with_suffix(".json").unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    what = "already in the spool" if stored.duplicate else f"filed in series {header.series_uid}"
    return _log(sessions, user, "release", f"quarantine {record_id}", Outcome(True, f"released: {what}"), address)


def _quarantined(settings: Settings, sessions: sessionmaker[Session], record_id: int) -> Path | None:
    """The file of quarantine record ``record_id``, if the record and the file are there."""
    with sessions() as session:
        row = session.get(QuarantineRecord, record_id)
        return data.in_quarantine(settings, row.path) if row is not None else None


def delete(
    settings: Settings,
    sessions: sessionmaker[Session],
    operations: Operations,
    user: Principal,
    record_id: int,
    address: str | None = None,
) -> Outcome:
    path = _quarantined(settings, sessions, record_id)
    if path is None:
        return _log(
            sessions, user, "delete", f"quarantine {record_id}", Outcome(False, "no such quarantined file"), address
        )
    size = path.stat().st_size
    path.with_suffix(".json").unlink(missing_ok=True)
    path.unlink(missing_ok=True)
    return _log(
        sessions,
        user,
        "delete",
        f"quarantine {record_id}",
        Outcome(True, f"deleted {path.name} ({size} bytes)"),
        address,
    )
