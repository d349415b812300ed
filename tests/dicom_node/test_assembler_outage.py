"""The series assembler through a database outage: it keeps trying, and says so once."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy.orm import Session, sessionmaker
from structlog.testing import capture_logs

from dicom_node import assembler as assembler_module
from dicom_node.assembler import SeriesAssembler
from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.loopback import wait_for


def test_an_outage_logs_one_traceback_a_reminder_and_the_recovery(
    tmp_path: Path, session_factory: sessionmaker[Session], monkeypatch
) -> None:
    """Passes every 10 ms against a database that cannot be opened: one traceback (not one
    per pass, as before), reminders at most every FAILING_REMINDER_S, then the recovery."""
    monkeypatch.setattr(assembler_module, "FAILING_REMINDER_S", 0.2)
    down = make_session_factory(make_engine(f"sqlite:///{tmp_path / 'missing' / 'audit.db'}"))
    assembler = SeriesAssembler(
        down, [], quiet_period=0.04, on_selected=lambda session, series: None, poll_interval=0.01
    )
    with capture_logs() as logs:
        assembler.start()
        try:
            time.sleep(0.7)
            assembler._factory = session_factory  # the database is back
            wait_for(lambda: any(e["event"] == "series assembly works again" for e in logs), 10, "the recovery")
        finally:
            assembler.stop()
    failed = [e for e in logs if e["event"].startswith("series assembly pass failed")]
    reminders = [e for e in logs if e["event"] == "series assembly still failing"]
    assert len(failed) == 1 and failed[0]["log_level"] == "error" and failed[0].get("exc_info")
    assert 1 <= len(reminders) <= 5 and all(e["error"] == "OperationalError" for e in reminders)
