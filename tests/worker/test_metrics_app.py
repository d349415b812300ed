"""Metrics over HTTP, and the Celery configuration of the task contract."""

from __future__ import annotations

import urllib.request

import pytest

from dicom_node.config import Settings
from dicom_node.metrics import Metrics, serve_metrics
from worker.app import QUEUE, WorkerOptions, celery_config, make_celery


def test_metrics_are_served_over_http_and_registries_are_independent():
    first, second = Metrics(), Metrics()  # no module-level registry: two can coexist
    first.instances_received.labels(outcome="stored").inc(3)
    first.series_completed.inc()
    first.set_job_states({"queued": 2, "done": 5})
    first.queue_wait_seconds.observe(0.4)
    first.detector_seconds_per_slice.observe(0.02)
    server, thread = serve_metrics(0, first.registry)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        body = urllib.request.urlopen(url, timeout=5).read().decode()
    finally:
        server.shutdown()
        server.server_close()
    assert 'meddet_instances_received_total{outcome="stored"} 3.0' in body
    assert "meddet_series_completed_total 1.0" in body
    assert 'meddet_jobs{state="done"} 5.0' in body
    assert "meddet_queue_wait_seconds_count 1.0" in body
    assert "meddet_detector_seconds_per_slice_bucket" in body
    assert second.registry.get_sample_value("meddet_series_completed_total") == 0.0


def test_celery_app_follows_the_task_contract(tmp_path):
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/9")
    app = make_celery(settings, WorkerOptions(visibility_timeout=30))
    conf = app.conf
    assert conf.broker_url == conf.result_backend == "redis://127.0.0.1:6379/9"
    assert (conf.task_acks_late, conf.task_reject_on_worker_lost) == (True, True)
    assert conf.worker_prefetch_multiplier == 1
    assert conf.task_serializer == "json" and conf.accept_content == ["json"]
    assert conf.task_default_queue == QUEUE
    assert conf.broker_transport_options["visibility_timeout"] == 30
    task = app.tasks["meddet.analyze_series"]
    assert task.acks_late and task.reject_on_worker_lost
    with pytest.raises(ValueError, match="broker_url"):
        celery_config(Settings(data_dir=tmp_path), WorkerOptions())
