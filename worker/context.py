"""What a task needs, built once per worker process: settings, DB sessions, metrics, detector."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy.orm import Session, sessionmaker

from dicom_node.analysis import Detector
from dicom_node.config import Settings
from dicom_node.metrics import Metrics


@dataclass
class RetryPolicy:
    """Task-level retries: ``max_retries`` tries after the first, waits ``base * 2**n`` (capped)."""

    max_retries: int = 5
    base_seconds: float = 5.0
    max_seconds: float = 300.0

    def countdown(self, attempt: int) -> float:
        wait: float = min(self.max_seconds, self.base_seconds * (2**attempt))  # int ** int is Any to mypy
        return wait


def load_detector(settings: Settings) -> Detector:
    """The analyzer (detector + second stage + operating point) of ``settings.checkpoint``,
    on CUDA when present (imports torch)."""
    from detector.analysis import Analyzer

    return Analyzer.from_checkpoint(settings.checkpoint, device=settings.device)


@dataclass
class WorkerContext:
    """Per-process state of a worker; the detector loads on first use (or :meth:`warm_up`)."""

    settings: Settings
    sessions: sessionmaker[Session]
    metrics: Metrics
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    detector_factory: Callable[[Settings], Detector] = load_detector
    _detector: Detector | None = field(default=None, init=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)

    def detector(self) -> Detector:
        with self._lock:
            if self._detector is None:
                self._detector = self.detector_factory(self.settings)
            return self._detector

    def warm_up(self) -> None:
        self.detector()


def build_context(
    settings: Settings, metrics: Metrics | None = None, retry: RetryPolicy | None = None
) -> WorkerContext:
    """A context with its own engine (call it in the process that uses it, after any fork)."""
    from dicom_node.audit.db import make_engine, make_session_factory

    engine = make_engine(settings.effective_database_url)
    return WorkerContext(
        settings=settings,
        sessions=make_session_factory(engine),
        metrics=metrics or Metrics(),
        retry=retry or RetryPolicy(max_retries=settings.send_retries),
    )
