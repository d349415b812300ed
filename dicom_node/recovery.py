"""Crash recovery: make the audit DB agree with what is on disk.

C-STORE success is given once a file is in the spool; its DB row is written a moment later on
another thread. After a crash, files without rows are recorded here, before the SCP starts;
after the recorder's queue overflowed, while it runs. Each file is its own transaction: a file
the DB refuses is reported (log line and failure row), left in place and tried again next time,
and the node still starts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import TRANSIENT_DB_ERRORS, short_error, transaction
from dicom_node.audit.models import Instance, QuarantineRecord, utcnow
from dicom_node.durability import flush_files
from dicom_node.headers import Rejected, inspect_instance
from dicom_node.logging import get_logger
from dicom_node.recording import record_instance
from dicom_node.spool import Spool, StoredFile, parse_spool_name

log = get_logger(__name__)


def reconcile(spool: Spool, session_factory: sessionmaker[Session]) -> int:
    """At start-up, before receiving: clean partial writes, record spool files the DB does not
    know. Returns how many were recorded."""
    spool.clean_tmp()
    return record_missing(spool, session_factory)


def record_missing(
    spool: Spool,
    session_factory: sessionmaker[Session],
    flush: Callable[[Path, list[Path]], None] = flush_files,
) -> int:
    """Record spool files without a DB row, one transaction each (safe while receiving).

    The files are flushed first (group commit, dicom_node/durability.py): a file renamed into
    the spool just before a crash may still be only in the page cache, and nothing unflushed
    may be recorded. Returns how many were recorded; an unreachable DB raises, a refused file
    is reported.
    """
    with session_factory() as session:
        known = set(session.scalars(select(Instance.spool_path)))
    missing = [path for path in spool.iter_files() if str(path) not in known]
    if missing:
        flush(spool.spool_dir, missing)
    recorded = 0
    for path in missing:
        try:
            with transaction(session_factory) as session:
                _record_file(session, spool, path)
        except TRANSIENT_DB_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - reported; the other files go on
            _report(session_factory, path, exc)
        else:
            recorded += 1
    if missing:
        log.warning("recovered spool files missing from the audit DB", files=recorded, failed=len(missing) - recorded)
    return recorded


def _report(session_factory: sessionmaker[Session], path: Path, exc: Exception) -> None:
    """A failure row and a log line for a file not recorded (unless the recorder got it)."""
    reason = f"recovery: could not record: {short_error(exc)}"
    with transaction(session_factory) as session:
        if session.scalar(select(Instance.id).where(Instance.spool_path == str(path))):
            return  # recorded meanwhile by the recorder (recovery while receiving)
        log.error("spool file not recorded", path=str(path), reason=reason)
        session.add(QuarantineRecord(path=str(path), reason=reason, at=utcnow()))


def _record_file(session: Session, spool: Spool, path: Path) -> None:
    parsed = parse_spool_name(path.name)
    data = path.read_bytes()
    try:
        header = inspect_instance(data)
    except Rejected as rejected:  # cannot happen for files we wrote, unless the disk lied
        target = spool.quarantine(data, f"recovery: {rejected.reason}")
        path.unlink()
        session.add(QuarantineRecord(path=str(target), reason=rejected.reason, at=utcnow()))
        return
    stored = StoredFile(
        path=path,
        revision=parsed[1] if parsed else 0,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        duplicate=False,
    )
    record_instance(session, header, stored, utcnow(), association_id=None)
