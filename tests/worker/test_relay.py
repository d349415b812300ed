"""The outbox relay publishes to a real Redis, and keeps rows while Redis is down."""

from __future__ import annotations

import base64
import json

import pytest
import redis
from sqlalchemy import select

from dicom_node import jobs
from dicom_node.audit.db import transaction
from dicom_node.audit.models import Outbox
from dicom_node.config import Settings
from dicom_node.loopback import wait_for
from dicom_node.metrics import Metrics
from dicom_node.outbox import OutboxRelay, celery_publisher
from tests.factories import make_mr_series
from tests.worker.support import (
    fresh_postgres_database,
    migrated_sessions,
    register_series,
)
from worker.dispatch import make_dispatcher


def _messages(url: str) -> list[dict]:
    client = redis.Redis.from_url(url)
    try:
        return [json.loads(raw) for raw in client.lrange("gpu", 0, -1)]
    finally:
        client.close()


def _published(sessions) -> list[bool]:
    with sessions() as session:
        return [r.published_at is not None for r in session.scalars(select(Outbox).order_by(Outbox.id))]


def test_relay_publishes_by_task_name_and_marks_rows(sessions, tmp_path, redis_url):
    job_id = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "spool", "v1")
    settings = Settings(data_dir=tmp_path, broker_url=redis_url)
    relay = OutboxRelay(sessions, Metrics(), celery_publisher(settings))
    assert relay.tick() == relay.poll_interval
    assert _published(sessions) == [True]
    (message,) = _messages(redis_url)
    assert message["headers"]["task"] == "meddet.analyze_series"
    args, kwargs, _ = json.loads(base64.b64decode(message["body"]))
    assert (args, kwargs) == ([job_id], {})
    relay.tick()  # nothing pending: nothing published twice
    assert len(_messages(redis_url)) == 1


def test_broker_down_keeps_rows_and_publishes_when_it_returns(sessions, tmp_path, private_redis):
    settings = Settings(data_dir=tmp_path, broker_url=private_redis.url)
    metrics = Metrics()
    dispatcher = make_dispatcher(settings, sessions, metrics, poll_interval=0.2)
    assert isinstance(dispatcher, OutboxRelay)
    private_redis.stop()
    dispatcher.start()
    try:
        register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "a", "v1")
        register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "b", "v1")
        dispatcher.notify()

        def failed_attempts() -> bool:
            with sessions() as session:
                rows = session.scalars(select(Outbox)).all()
                return all(r.attempts >= 1 and r.published_at is None for r in rows[:1])

        wait_for(failed_attempts, 20, what="a failed publish attempt")
        assert _published(sessions) == [False, False]
        with sessions() as session:
            assert "Error" in session.scalars(select(Outbox)).first().last_error
        private_redis.start()
        wait_for(lambda: all(_published(sessions)), 30, what="rows published after Redis returned")
    finally:
        dispatcher.stop()
    assert len(_messages(private_redis.url)) == 2
    samples = {
        s.labels.get("state"): s.value for m in metrics.registry.collect() for s in m.samples if s.name == "meddet_jobs"
    }
    assert samples["queued"] == 2


def test_two_relays_never_hold_the_same_row_on_postgresql(tmp_path):
    with fresh_postgres_database() as url:
        sessions = migrated_sessions(url)
        first = register_series(sessions, make_mr_series(1, 16, 16), tmp_path / "a", "v1")
        second = register_series(sessions, make_mr_series(1, 16, 16), tmp_path / "b", "v1")
        with transaction(sessions) as one, transaction(sessions) as other:
            assert jobs.next_unpublished(one).job_id == first
            assert jobs.next_unpublished(other).job_id == second  # the locked row is skipped
            with transaction(sessions) as third:
                assert jobs.next_unpublished(third) is None
        sessions.kw["bind"].dispose()


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_relays_publish_a_row_once(backend, sessions, tmp_path):
    """Issue 12 item 9: SQLite has no row locks; the row is marked with a compare-and-set
    before it is published, so a second relay (or `meddet retry`) never publishes it too."""
    if backend == "postgresql":
        with fresh_postgres_database() as url:
            pg = migrated_sessions(url)
            _race_two_relays(pg, tmp_path)
            pg.kw["bind"].dispose()
    else:
        _race_two_relays(sessions, tmp_path)


def _race_two_relays(sessions, tmp_path) -> None:  # type: ignore[no-untyped-def]
    import threading

    job_id = register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "spool", "v1")
    published: list[tuple[str, int]] = []
    second = OutboxRelay(sessions, Metrics(), lambda task, job: published.append(("second", job)))
    racer = threading.Thread(target=second.tick)

    def publish_slowly(task: str, job: int) -> None:
        racer.start()  # another relay looks while this one publishes
        racer.join(0.5)
        published.append(("first", job))

    OutboxRelay(sessions, Metrics(), publish_slowly).tick()
    racer.join(10)
    assert published == [("first", job_id)]
    assert _published(sessions) == [True]


def test_the_relay_backs_off_to_its_ceiling_however_long_the_broker_is_down(sessions, tmp_path):
    """A broker down for hours: the back-off stays at max_backoff (2 ** failures once
    overflowed a float after ~1,000 failures and every tick raised instead)."""
    register_series(sessions, make_mr_series(2, 16, 16), tmp_path / "spool", "v1")

    def refuse(task: str, job: int) -> None:
        raise ConnectionError("broker down")

    relay = OutboxRelay(sessions, Metrics(), refuse, poll_interval=0.5, max_backoff=10.0)
    assert [relay.tick() for _ in range(3)] == [1.0, 2.0, 4.0]
    relay._failures = 5000
    assert relay.tick() == 10.0
    assert _published(sessions) == [False]
