"""The relay is the node's and task-free (issue 13): publishing imports no worker code, no torch."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from dicom_node.config import Settings
from dicom_node.outbox import QUEUE, OutboxRelay, broker_config, make_relay
from worker.app import WorkerOptions, celery_config
from worker.dispatch import EmbeddedWorker, make_dispatcher

ROOT = Path(__file__).resolve().parents[2]


def imported_after(code: str) -> set[str]:
    """The top-level modules imported by ``code`` in a fresh interpreter."""
    script = f"{code}\nimport sys\nprint(' '.join(sorted({{m.split('.')[0] for m in sys.modules}})))"
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_the_relay_and_its_publisher_import_no_task_code_and_no_torch(tmp_path: Path) -> None:
    modules = imported_after(
        "from dicom_node.config import Settings\n"
        "from dicom_node.outbox import celery_publisher\n"
        f"celery_publisher(Settings(data_dir={str(tmp_path)!r}, broker_url='redis://127.0.0.1:1/0'))"
    )
    assert "celery" in modules  # it did build the publisher
    assert not modules & {"worker", "torch", "detector"}, modules & {"worker", "torch", "detector"}


def test_serve_in_broker_mode_imports_no_tasks_or_pipeline(tmp_path: Path) -> None:
    """``meddet serve`` builds its dispatcher through ``worker.dispatch.make_dispatcher``."""
    code = (
        "import sys\n"
        "from dicom_node.config import Settings\n"
        "from dicom_node.metrics import Metrics\n"
        "from worker.dispatch import make_dispatcher\n"
        f"make_dispatcher(Settings(data_dir={str(tmp_path)!r}, broker_url='redis://127.0.0.1:1/0'), None, Metrics())\n"
        "assert not {'worker.tasks', 'worker.pipeline', 'worker.app'} & set(sys.modules), sorted(sys.modules)\n"
    )
    assert "torch" not in imported_after(code)


def test_workers_and_relay_share_one_broker_configuration(tmp_path: Path) -> None:
    options = WorkerOptions(visibility_timeout=900.0)
    settings = Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:6379/0")
    shared = broker_config("redis://127.0.0.1:6379/0", 900.0)
    full = celery_config(settings, options)
    assert {k: full[k] for k in shared} == shared
    assert shared["task_default_queue"] == QUEUE == "gpu"
    assert shared["task_routes"] == {"meddet.analyze_series": {"queue": "gpu"}}
    assert full["result_backend_transport_options"] == shared["broker_transport_options"]
    assert shared["broker_transport_options"]["unacked_restore_interval"] == 10


def test_make_dispatcher_hands_out_the_node_relay_or_the_embedded_worker(tmp_path: Path) -> None:
    relay = make_dispatcher(Settings(data_dir=tmp_path, broker_url="redis://127.0.0.1:1/0"), None, None)  # type: ignore[arg-type]
    assert type(relay) is OutboxRelay
    assert type(make_relay(Settings(data_dir=tmp_path, broker_url="redis://x:1/0"), None, None)) is OutboxRelay  # type: ignore[arg-type]
    embedded = make_dispatcher(Settings(data_dir=tmp_path), None, None)  # type: ignore[arg-type]
    assert isinstance(embedded, EmbeddedWorker)
