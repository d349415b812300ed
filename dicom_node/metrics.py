"""Prometheus metrics of the node and the workers (prometheus-client), held by one object.

The node increments ``instances_received`` and ``series_completed``; workers observe the job
histograms; ``jobs_by_state`` is refreshed from the audit DB (:meth:`Metrics.set_job_states`).
A Celery prefork worker serves the sum over its processes with
:func:`enable_multiprocess` (prometheus-client's multiprocess mode).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from threading import Thread
from wsgiref.simple_server import WSGIServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

# Seconds, from a fast job on a GPU to a slow one on CPU.
JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 3, 5, 7.5, 10, 15, 20, 30, 60, 120, 300, 600)
SLICE_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0)


class Metrics:
    """Every metric we export, registered on ``registry`` (a fresh one by default)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.instances_received = Counter(
            "meddet_instances_received", "C-STORE requests by outcome", ["outcome"], registry=r
        )
        self.series_completed = Counter("meddet_series_completed", "Series that reached completion", registry=r)
        self.jobs_by_state = Gauge(
            "meddet_jobs",
            "Jobs by state (from the audit DB)",
            ["state"],
            registry=r,
            multiprocess_mode="livemax",
        )
        self.queue_wait_seconds = Histogram(
            "meddet_queue_wait_seconds", "Queued to running", buckets=JOB_BUCKETS, registry=r
        )
        self.job_run_seconds = Histogram("meddet_job_run_seconds", "Running to done", buckets=JOB_BUCKETS, registry=r)
        self.detector_seconds_per_slice = Histogram(
            "meddet_detector_seconds_per_slice",
            "Detector time per slice",
            buckets=SLICE_BUCKETS,
            registry=r,
        )
        self.jobs_finished = Counter("meddet_jobs_finished", "Task runs by outcome", ["outcome"], registry=r)

    def set_job_states(self, counts: Mapping[str, int]) -> None:
        for state, n in counts.items():
            self.jobs_by_state.labels(state=state).set(n)


def serve_metrics(port: int, registry: CollectorRegistry, host: str = "127.0.0.1") -> tuple[WSGIServer, Thread]:
    """Serve ``/metrics`` on ``host:port`` in a daemon thread; ``server.shutdown()`` stops it.

    ``port=0`` picks a free port (``server.server_port``).
    """
    return start_http_server(port, addr=host, registry=registry)


def enable_multiprocess(directory: Path) -> CollectorRegistry:
    """Switch this process (and the processes it forks) to multiprocess metrics in ``directory``.

    Call before the :class:`Metrics` of any worker process is created; returns the registry
    that sums every process's values, for :func:`serve_metrics`.
    """
    from prometheus_client import multiprocess, values

    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry, path=str(directory))  # type: ignore[no-untyped-call]
    return registry
