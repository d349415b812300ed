"""Logs never carry patient data, even in a traceback (issue 12, item 1)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import pydicom
import pytest
import structlog

from dicom_node.logging import configure_logging, get_logger

# Kept far from the raising lines: console tracebacks show a few source lines around each frame.
PHI = ("Doe^Jane", "PID-12345", "19700101")


def _patient_dataset() -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PHI
    return ds


def _stderr(capsys: pytest.CaptureFixture[str]) -> str:
    """Captured stderr without ANSI colour codes."""
    return re.sub(r"\x1b\[[0-9;]*m", "", capsys.readouterr().err)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    structlog.reset_defaults()


def _fail_with_patient_in_locals() -> None:
    ds = _patient_dataset()
    raise ValueError(f"decode failed for a {len(ds)}-element data set")


def _log_exception(logger_name: str) -> None:
    log = get_logger(logger_name)
    try:
        _fail_with_patient_in_locals()
    except ValueError:
        log.exception("job_failed", series_uid="1.2.3")


@pytest.mark.parametrize("json", [True, False], ids=["json", "console"])
def test_traceback_has_no_patient_data(json: bool, capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("INFO", json=json)
    _log_exception("meddet.test")
    err = _stderr(capsys)
    assert "ValueError" in err and "decode failed for a 3-element data set" in err
    for phi in PHI:
        assert phi not in err


@pytest.mark.parametrize("json", [True, False], ids=["json", "console"])
def test_stdlib_traceback_has_no_patient_data(json: bool, capsys: pytest.CaptureFixture[str]) -> None:
    """Foreign loggers (celery, pynetdicom) go through the same chain."""
    configure_logging("INFO", json=json)
    try:
        _fail_with_patient_in_locals()
    except ValueError:
        logging.getLogger("celery.test").exception("task failed")
    err = _stderr(capsys)
    assert "ValueError" in err
    for phi in PHI:
        assert phi not in err


def test_logging_follows_stderr_after_the_stream_it_was_configured_on_closed(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Configured while stderr was another stream (a CLI runner's), logging goes on to today's
    stderr once that stream is closed, instead of raising "I/O operation on closed file"."""
    import io
    import sys

    errors: list[BaseException] = []
    monkeypatch.setattr(logging.Handler, "handleError", lambda self, record: errors.append(sys.exc_info()[1]))
    today, temporary = sys.stderr, io.StringIO()
    monkeypatch.setattr(sys, "stderr", temporary)
    configure_logging("INFO")
    get_logger("test").info("while swapped", series_uid="1.2.3")
    assert "while swapped" in temporary.getvalue()
    temporary.close()
    monkeypatch.setattr(sys, "stderr", today)
    get_logger("test").info("after it closed", series_uid="1.2.4")
    assert errors == []
    assert "after it closed" in _stderr(capsys)
