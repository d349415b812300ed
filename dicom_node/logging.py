"""Structured logging (structlog over the standard library).

Log UIDs, AE titles, addresses and counts; never patient names, IDs or birth dates.
"""

from __future__ import annotations

import logging
import sys
from typing import TextIO

import structlog
import structlog.tracebacks


class StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is when a record is emitted, not to the stream it was
    when logging was configured: a stream swapped in and closed since (a CLI test runner, a
    daemon closing its stdio) does not turn every later log line into a logging error."""

    @property
    def stream(self) -> TextIO:
        return sys.stderr

    @stream.setter
    def stream(self, _value: object) -> None:  # StreamHandler.__init__ sets it
        pass


def configure_logging(level: str = "INFO", json: bool = False) -> None:
    """Route structlog and stdlib logging (pynetdicom, celery) through one renderer on stderr."""
    renderer = (
        structlog.processors.JSONRenderer()
        if json
        else structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(),
            # Never print local variables: they can hold patient data.
            exception_formatter=structlog.dev.RichTracebackFormatter(show_locals=False),
        )
    )
    shared = [
        structlog.contextvars.merge_contextvars,
        _json_tracebacks() if json else structlog.processors.StackInfoRenderer(),
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = StderrHandler()
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # pynetdicom logs every PDU and highdicom every copied module at INFO: warnings only,
    # unless debugging.
    for chatty in ("pynetdicom", "highdicom"):
        logging.getLogger(chatty).setLevel(logging.DEBUG if level.upper() == "DEBUG" else logging.WARNING)


def _json_tracebacks() -> structlog.processors.ExceptionRenderer:
    """Tracebacks as dicts without frame locals (structlog's `dict_tracebacks` keeps them, and
    they hold pydicom data sets with patient names and IDs)."""
    return structlog.processors.ExceptionRenderer(structlog.tracebacks.ExceptionDictTransformer(show_locals=False))


def get_logger(name: str) -> structlog.stdlib.BoundLogger:
    return structlog.stdlib.get_logger(name)
