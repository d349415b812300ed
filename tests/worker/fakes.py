"""Stand-ins for :func:`worker.pipeline.analyze` (no model): they write results as the real one
does, or fail, or kill their process. Picklable by name, so a subprocess can patch them in."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

from pydicom import Dataset

from dicom_node import jobs
from dicom_node.audit.models import JobState
from tests.factories import make_mr_series
from worker import pipeline
from worker.errors import PermanentError


def result_object(seed: int = 0) -> Dataset:
    """A storable dataset standing in for a result object (fixed UIDs per seed)."""
    ds = make_mr_series(1, 16, 16, seed=seed)[0]
    ds.SOPInstanceUID = f"1.2.826.0.1.3680043.10.1{seed}"
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


class FakeAnalyze:
    """Counts its calls, waits ``seconds`` (a long detector), writes results, -> results_written."""

    def __init__(self, seconds: float = 0.0, objects: list[tuple[str, Dataset]] | None = None):
        self.seconds = seconds
        self.objects = objects if objects is not None else [("sr", result_object())]
        self.calls: list[int] = []
        self.writes = 0
        self._lock = threading.Lock()

    def __call__(self, ctx: Any, job_id: int, run: int) -> list[tuple[str, Dataset]]:
        with self._lock:
            self.calls.append(run)
        time.sleep(self.seconds)
        out = pipeline.results_dir(ctx, job_id)
        pipeline.write_results(out, {"findings": [], "run": run}, self.objects)
        with self._lock:
            self.writes += 1
        with pipeline.job_session(ctx, job_id, run) as (session, job):
            job.results_path = str(out)
            jobs.transition(session, job, JobState.results_written, {"objects": len(self.objects)})
        return list(self.objects)


def failing_analyze(reason: str) -> Callable[[Any, int, int], list]:
    def analyze(ctx: Any, job_id: int, run: int) -> list:
        raise PermanentError(reason)

    return analyze


def killed_analyze(ctx: Any, job_id: int, run: int) -> list:
    """The process dies mid-job, as the kernel's OOM killer or a hard time limit does it."""
    os._exit(137)


def retry_once_analyze(ctx: Any, job_id: int, run: int) -> list[tuple[str, Dataset]]:
    """A transient error on the first call in this results folder, then results."""
    from worker.errors import RetriableError

    flag = pipeline.results_dir(ctx, job_id).parent / f".{job_id}.retried"
    if not flag.exists():
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()
        raise RetriableError("database busy")
    return FakeAnalyze(objects=[])(ctx, job_id, run)


def killed_once_analyze(ctx: Any, job_id: int, run: int) -> list[tuple[str, Dataset]]:
    """The process dies on the first call in this results folder (as an OOM kill), then results."""
    flag = pipeline.results_dir(ctx, job_id).parent / f".{job_id}.killed"
    if not flag.exists():
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()
        os._exit(137)
    return FakeAnalyze(objects=[])(ctx, job_id, run)
