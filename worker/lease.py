"""The lease of the delivery running in this thread: held while the pipeline runs, renewed by a
heartbeat thread, and checked by every pipeline step (:func:`worker.pipeline.job_session`).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from sqlalchemy.orm import Session, sessionmaker

from dicom_node import leases
from dicom_node.audit.db import TRANSIENT_DB_ERRORS, short_error, transaction
from dicom_node.audit.models import utcnow
from dicom_node.logging import get_logger

log = get_logger(__name__)

#: The token of the lease this thread's delivery holds (None outside a delivery).
current_lease: ContextVar[str | None] = ContextVar("meddet_lease", default=None)


class Heartbeat:
    """Renews a job's lease every third of ``seconds`` on a daemon thread; stops when the
    lease is no longer ours (the sweeper took it back: the pipeline stops at its next step)."""

    def __init__(self, sessions: sessionmaker[Session], job_id: int, token: str, seconds: float):
        self._sessions = sessions
        self._job_id = job_id
        self._token = token
        self._seconds = seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job_id}", daemon=True)
        self.lost = threading.Event()

    def _run(self) -> None:
        while not self._stop.wait(self._seconds / 3):
            try:
                with transaction(self._sessions) as session:
                    until = leases.lease_until(utcnow(), self._seconds)
                    renewed = leases.extend(session, self._job_id, self._token, until)
            except TRANSIENT_DB_ERRORS as exc:  # try again; the lease may expire meanwhile
                log.warning("lease_not_renewed", job_id=self._job_id, error=short_error(exc))
                continue
            if not renewed:
                log.warning("lease_lost", job_id=self._job_id)
                self.lost.set()
                return

    def __enter__(self) -> Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@contextmanager
def holding(sessions: sessionmaker[Session], job_id: int, token: str, seconds: float) -> Iterator[Heartbeat]:
    """Run the block as the holder of ``token``'s lease, renewed by a heartbeat."""
    marker = current_lease.set(token)
    try:
        with Heartbeat(sessions, job_id, token, seconds) as heartbeat:
            yield heartbeat
    finally:
        current_lease.reset(marker)
