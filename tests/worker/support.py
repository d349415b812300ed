"""Helpers for worker and loop tests: audit DBs, series registered as the node does, Redis."""

from __future__ import annotations

import hashlib
import shutil
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from pydicom import Dataset
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs
from dicom_node.audit.db import make_engine, make_session_factory, transaction
from dicom_node.audit.models import Instance, Job, Series, SeriesState, utcnow

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
CLAIM_KEY = "meddet-tests:claim"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def migrated_sessions(url: str) -> sessionmaker[Session]:
    """Run the real migrations on ``url`` and return a session factory."""
    from migrations import upgrade

    upgrade(url)
    return make_session_factory(make_engine(url))


def register_series(
    sessions: sessionmaker[Session], datasets: list[Dataset], spool: Path, model_version: str
) -> int:
    """Write ``datasets`` to ``spool`` and record them as the node does; enqueue; the job id."""
    spool.mkdir(parents=True, exist_ok=True)
    first = datasets[0]
    with transaction(sessions) as session:
        series = Series(
            series_instance_uid=first.SeriesInstanceUID,
            study_instance_uid=first.StudyInstanceUID,
            modality="MR",
            state=SeriesState.selected,
            n_instances=len(datasets),
            spool_path=str(spool),
            completed_at=utcnow(),
        )
        session.add(series)
        session.flush()
        for ds in datasets:
            path = spool / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            data = path.read_bytes()
            session.add(
                Instance(
                    series_id=series.id,
                    sop_instance_uid=ds.SOPInstanceUID,
                    revision=0,
                    sop_class_uid=ds.SOPClassUID,
                    transfer_syntax_uid=ds.file_meta.TransferSyntaxUID,
                    size_bytes=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    spool_path=str(path),
                )
            )
        job = jobs.enqueue_series(session, series, model_version)
        return job.id


def job_state(sessions: sessionmaker[Session], job_id: int) -> str:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.state.value


def wait_for(predicate, timeout: float, interval: float = 0.1, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@contextmanager
def claimed_redis_db() -> Iterator[str]:
    """A Redis URL on the shared server with a database no other test run holds; flushed after."""
    for db in range(15, 7, -1):
        client = redis.Redis(REDIS_HOST, REDIS_PORT, db=db)
        if client.set(CLAIM_KEY, uuid.uuid4().hex, nx=True, ex=3600):
            try:
                yield f"redis://{REDIS_HOST}:{REDIS_PORT}/{db}"
            finally:
                client.flushdb()
                client.close()
            return
        client.close()
    raise RuntimeError("no free Redis database among 8..15 (stale test claims? FLUSHDB them)")


class RedisServer:
    """A private redis-server on a free loopback port that a test can stop and start again."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None
        workdir.mkdir(parents=True, exist_ok=True)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [exe, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis("127.0.0.1", self.port)
        wait_for(lambda: _pings(client), 10, 0.05, "redis-server to start")
        client.close()
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.exceptions.ConnectionError:
        return False


def checkpoint_for_tests(folder: Path) -> Path:
    """The shipped checkpoint, or (until it ships) a tiny untrained one written to ``folder``.

    The tiny one's classification bias is raised so that it boxes discs everywhere: its findings
    are meaningless but plentiful, which is all a test of the job loop needs.
    """
    from detector import SHIPPED_CHECKPOINT

    if SHIPPED_CHECKPOINT.is_file():
        return SHIPPED_CHECKPOINT
    path = folder / "tiny-untrained.pt"
    if not path.is_file():
        import torch

        from detector import checkpoint
        from detector.config import load_config
        from detector.models import build_detector

        torch.manual_seed(0)
        cfg = load_config("tiny")
        model = build_detector(cfg)
        with torch.no_grad():
            model.head.gfl_cls.bias[:] = torch.tensor([0.5, 1.0])  # herniation, normal_disc
        checkpoint.save(checkpoint.make_payload(model, cfg, "tiny"), path)
    return path


class RecordingSCP:
    """A pynetdicom Storage SCP on loopback that records every C-STORE it receives (duplicates too)."""

    def __init__(self, port: int | None = None, ae_title: str = "DEST") -> None:
        self.port = port or free_port()
        self.ae_title = ae_title
        self.received: list[Dataset] = []
        self._server = None

    @property
    def destination(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def start(self) -> "RecordingSCP":
        from pynetdicom import AE, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification

        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax)
        ae.add_supported_context(Verification)

        def on_store(event):  # type: ignore[no-untyped-def]
            ds = event.dataset
            ds.file_meta = event.file_meta
            self.received.append(ds)
            return 0x0000

        self._server = ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    def uids(self) -> list[str]:
        return [str(ds.SOPInstanceUID) for ds in self.received]


class MeddetProcess:
    """``meddet ARGS`` as a subprocess in its own process group; up once its log shows ``ready``."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, ready: str) -> None:
        import sys

        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from dicom_node.cli import main; main()", *args],
            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )
        wait_for(lambda: ready in log.read_text(errors="replace") or self.proc.poll() is not None,
                 90, 0.1, f"meddet {args[0]}: {ready!r}")
        assert self.proc.poll() is None, log.read_text()

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM (graceful: a worker finishes its job, the node drains), then SIGKILL."""
        import os
        import signal

        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)


def start_worker(env: dict[str, str], log: Path, *extra: str) -> MeddetProcess:
    """``meddet worker`` with fast retries and a 20 s visibility timeout (``extra`` overrides)."""
    args = ["worker", "--concurrency", "1", "--retry-backoff", "0.5", "--visibility-timeout", "20"]
    return MeddetProcess([*args, *extra], env, log, ready="ready")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new database on the PostgreSQL at 127.0.0.1:5432 (trust auth), dropped afterwards."""
    from sqlalchemy import create_engine, text

    name = f"meddet_worker_{uuid.uuid4().hex[:10]}"
    admin = create_engine("postgresql+psycopg2://postgres@127.0.0.1:5432/test",
                          isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield f"postgresql+psycopg2://postgres@127.0.0.1:5432/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
