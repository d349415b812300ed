"""Broker mode: ``meddet serve`` relays jobs through a private Redis to a ``meddet worker``, with
the audit DB on a private PostgreSQL cluster. Faults, each while series arrive: the worker's pool
process SIGKILLed mid-job, Redis stopped and started, PostgreSQL stopped and started.

Only private servers are stopped (free loopback ports, temp folders); the machine's shared
Redis and PostgreSQL are never touched.
"""

from __future__ import annotations

import json
import os
import signal
import time

from sqlalchemy import select

from benchmarks.faultsuite.context import Context, count_row, flatten, wait_settled
from benchmarks.faultsuite.generator import SeriesFiles
from benchmarks.faultsuite.nodes import ServeProcess, WorkerProcess, suite_env
from benchmarks.faultsuite.report import Row
from benchmarks.faultsuite.senders import Ledger, Traffic
from benchmarks.faultsuite.services import PrivatePostgres
from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.audit.models import Job, JobEvent, JobState
from dicom_node.loopback import wait_for
from tests.worker.support import RedisServer

# Longer than the PostgreSQL outage (a lease renewed just before it must outlive it), short
# enough that a delivery lost with the killed pool process is swept back soon.
LEASE_SECONDS = "12"
REPUBLISH_SECONDS = "30"  # a job whose message the Redis restart dropped is published again soon


def running_pid(database_url: str) -> tuple[int, int] | None:
    """(job id, pid) of a running job, from its latest ``running`` event."""
    engine = make_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            job_id = session.scalar(select(Job.id).where(Job.state == JobState.running).limit(1))
            if job_id is None:
                return None
            detail = session.scalar(
                select(JobEvent.detail)
                .where(JobEvent.job_id == job_id, JobEvent.state == "running")
                .order_by(JobEvent.id.desc())
                .limit(1)
            )
            return (job_id, int(json.loads(detail)["pid"])) if detail else None
    finally:
        engine.dispose()


def run(ctx: Context) -> Row:
    sizes = ctx.sizes
    ctx.phase(
        f"distributed: {sizes.dist_senders} senders x 3 x {sizes.dist_series} series, Redis + "
        "PostgreSQL (private) + meddet worker"
    )
    redis = RedisServer(ctx.workdir / "redis").start()
    postgres = PrivatePostgres()
    reason = postgres.unavailable()
    if reason is None:
        try:
            postgres.init()
        except Exception as exc:  # noqa: BLE001 - e.g. no rights to run initdb: say so, go on
            reason = f"private cluster failed to start: {exc}"
    if reason is not None:
        ctx.skip(f"PostgreSQL outage ({reason}); the distributed phase uses SQLite")
        database_url = f"sqlite:///{ctx.workdir / 'distributed-audit.db'}"
    else:
        database_url = postgres.url
    env = suite_env(
        ctx.destination.destination,
        ctx.checkpoint,
        ctx.workdir / "distributed-data",
        database_url,
        MEDDET_BROKER_URL=redis.url,
        MEDDET_JOB_LEASE_SECONDS=LEASE_SECONDS,
        MEDDET_JOB_REPUBLISH_SECONDS=REPUBLISH_SECONDS,
    )
    node = worker = None
    try:
        node = ServeProcess("dist-node", env, ctx.logs, ctx.rss, json_first=True).start()
        worker = WorkerProcess("worker", env, ctx.logs, ctx.rss, json_first=False).start()
        row = _faults(ctx, node, database_url, redis, postgres if reason is None else None)
        ctx.rss.sample()
        row.node_rss_mib, row.worker_rss_mib = ctx.rss.mib("dist-node"), ctx.rss.mib("worker")
        return row
    finally:
        for process in (worker, node):
            if process is not None:
                process.stop()
        redis.stop()
        postgres.remove()


def _faults(
    ctx: Context, node: ServeProcess, database_url: str, redis: RedisServer, postgres: PrivatePostgres | None
) -> Row:
    sizes = ctx.sizes
    parts = [ctx.generator.for_senders(f"dist-{k}", sizes.dist_senders, sizes.dist_series) for k in range(3)]
    ledger = Ledger()

    def send(part: list[list[SeriesFiles]]) -> Traffic:
        return Traffic(part, node.port, ledger, sizes.timeout).start()

    send(parts[0]).join()
    try:
        job_id, pid = wait_for(lambda: running_pid(database_url), 60, "a running job", interval=0.02)
        os.kill(pid, signal.SIGKILL)
        ctx.note(f"distributed: worker pool process {pid} SIGKILLed while running job {job_id}")
    except TimeoutError:
        ctx.skip("worker SIGKILL: no job was caught running within 60 s")

    def outage(name: str, service, seconds: float, part) -> None:  # type: ignore[no-untyped-def]
        """Stop ``service``, send ``part`` meanwhile, start it again after ``seconds``."""
        started = time.monotonic()
        service.stop()
        traffic = send(part)
        time.sleep(max(0.0, seconds - (time.monotonic() - started)))
        service.start()
        ctx.note(
            f"distributed: {name} down {time.monotonic() - started:.1f} s while "
            f"{sum(len(s.files) for s in flatten(part))} instances were sent"
        )
        traffic.join()

    outage("Redis", redis, sizes.redis_outage, parts[1])
    if postgres is not None:
        outage("PostgreSQL", postgres, sizes.postgres_outage, parts[2])
    else:
        send(parts[2]).join()

    every = [s for part in parts for s in flatten(part)]
    wait_settled(ctx, database_url, every, "distributed jobs")
    return count_row("distributed", ctx, database_url, every, ledger)
