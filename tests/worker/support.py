"""Helpers for worker and loop tests: audit DBs, series recorded as the node records them, Redis,
`meddet worker` (the loopback parts themselves are dicom_node/loopback.py)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis
from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import jobs
from dicom_node.audit.db import make_engine, make_session_factory, transaction
from dicom_node.audit.models import Job, Series, SeriesState, utcnow
from dicom_node.events import InstanceStored
from dicom_node.headers import inspect_instance
from dicom_node.loopback import MeddetProcess, free_port, wait_for
from dicom_node.recorder import AuditRecorder
from dicom_node.spool import StoredFile

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
POSTGRES_ADMIN_URL = os.environ.get("MEDDET_TEST_POSTGRES", "postgresql+psycopg2://postgres@127.0.0.1:5432/test")
CLAIM_KEY = "meddet-tests:claim"


def migrated_sessions(url: str) -> sessionmaker[Session]:
    """Run the real migrations on ``url`` and return a session factory."""
    from migrations import upgrade

    upgrade(url)
    return make_session_factory(make_engine(url))


def register_series(sessions: sessionmaker[Session], datasets: list[Dataset], spool: Path, model_version: str) -> int:
    """Write ``datasets`` to ``spool`` (a series folder) and record them through the node's
    audit recorder; then select the series and enqueue its job as the assembler does. The job id."""
    spool.mkdir(parents=True, exist_ok=True)
    recorder = AuditRecorder(sessions)
    with transaction(sessions) as session:
        for ds in datasets:
            path = spool / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            data = path.read_bytes()
            stored = StoredFile(
                path, revision=0, sha256=hashlib.sha256(data).hexdigest(), size=len(data), duplicate=False
            )
            recorder.apply(session, InstanceStored(None, inspect_instance(data), stored, utcnow()))
        series = session.scalars(
            select(Series).where(Series.series_instance_uid == datasets[0].SeriesInstanceUID)
        ).one()
        series.state, series.completed_at = SeriesState.selected, utcnow()
        job = jobs.enqueue_series(session, series, model_version)
        return job.id


def job_state(sessions: sessionmaker[Session], job_id: int) -> str:
    with sessions() as session:
        job = session.get(Job, job_id)
        assert job is not None
        return job.state.value


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

    def start(self) -> RedisServer:
        exe = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.proc = subprocess.Popen(
            [
                exe,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "yes",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        client = redis.Redis("127.0.0.1", self.port)
        wait_for(lambda: _pings(client), 10, "redis-server to start", interval=0.05)
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


def start_worker(env: dict[str, str], log: Path, *extra: str) -> MeddetProcess:
    """``meddet worker`` with fast retries and a 20 s visibility timeout (``extra`` overrides)."""
    args = ["worker", "--concurrency", "1", "--retry-backoff", "0.5", "--visibility-timeout", "20"]
    return MeddetProcess([*args, *extra], env, log, ready="ready")


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new database on the PostgreSQL of :data:`POSTGRES_ADMIN_URL` (trust auth), dropped afterwards."""
    from sqlalchemy import text

    name = f"meddet_{uuid.uuid4().hex[:10]}"
    admin = make_engine(POSTGRES_ADMIN_URL).execution_options(isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        admin.dispose()
        raise RuntimeError(f"PostgreSQL at {POSTGRES_ADMIN_URL} is not reachable: {exc}") from exc
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
