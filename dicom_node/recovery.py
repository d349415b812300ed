"""Crash recovery: make the audit DB agree with what is on disk.

C-STORE success is given once a file is in the spool; its DB row is written a moment later on
another thread. After a crash, files without rows are recorded here, before the SCP starts.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.db import transaction
from dicom_node.audit.models import Instance, QuarantineRecord, utcnow
from dicom_node.headers import Rejected, inspect_instance
from dicom_node.logging import get_logger
from dicom_node.recorder import record_instance
from dicom_node.spool import Spool, StoredFile, parse_spool_name

log = get_logger(__name__)


def reconcile(spool: Spool, session_factory: sessionmaker[Session]) -> int:
    """Record spool files the DB does not know; returns how many were recorded."""
    spool.clean_tmp()
    with session_factory() as session:
        known = set(session.scalars(select(Instance.spool_path)))
    missing = [path for path in spool.iter_files() if str(path) not in known]
    if not missing:
        return 0
    with transaction(session_factory) as session:
        for path in missing:
            _record_file(session, spool, path)
    log.warning("recovered spool files missing from the audit DB", files=len(missing))
    return len(missing)


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
