"""Retention against a running node over loopback (issue 12 item 7).

A series folder removed by retention must not refuse later instances of that series, and an
instance acknowledged between retention's plan and its delete must stay on disk.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from pydicom import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import retention, statuses
from dicom_node.audit.models import Instance, Job, JobState, Series
from dicom_node.config import Settings
from dicom_node.loopback import wait_for
from dicom_node.node import Node
from tests.factories import make_mr_series
from tests.integration.receiving import completed, running_node, send

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(node_settings: Settings) -> Settings:
    return node_settings.model_copy(update={"spool_retention_hours": 0.0})


@pytest.fixture
def node(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Node]:
    with running_node(settings, session_factory) as running:
        yield running


def _late_instance(first: Dataset, seed: int) -> Dataset:
    """One more instance of ``first``'s series (new SOP Instance UID)."""
    late = make_mr_series(1, 64, 64, seed=seed, images_in_acquisition=False)[0]
    late.StudyInstanceUID = first.StudyInstanceUID
    late.SeriesInstanceUID = first.SeriesInstanceUID
    return late


def _finished_series(node: Node, factory: sessionmaker[Session], n: int = 5) -> list[Dataset]:
    """A series received, completed, and its job done a while ago: retention may remove it."""
    datasets = make_mr_series(n, 64, 64, images_in_acquisition=False)
    assert send(node.port, datasets) == [statuses.SUCCESS] * n
    series = wait_for(lambda: completed(factory, datasets[0].SeriesInstanceUID))
    with factory() as session:
        row = session.get(Series, series.id)
        row.completed_at = datetime.now(UTC) - timedelta(minutes=5)
        for job in session.scalars(select(Job).where(Job.series_id == series.id)):
            job.state = JobState.done
        session.commit()
    return datasets


def _spooled(node: Node, ds: Dataset) -> Path:
    folder = node.spool.series_dir(ds.StudyInstanceUID, ds.SeriesInstanceUID)
    return folder / f"{ds.SOPInstanceUID}.dcm"


def test_a_late_instance_after_retention_is_stored_not_refused(
    node: Node, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    datasets = _finished_series(node, session_factory)
    removed = retention.collect_garbage(settings, session_factory)
    assert [r.kind for r in removed] == ["spool"]
    assert not _spooled(node, datasets[0]).parent.exists()
    late = _late_instance(datasets[0], seed=7)
    assert send(node.port, [late]) == [statuses.SUCCESS]  # was 0xA700 until a restart
    assert _spooled(node, late).is_file()
    wait_for(lambda: late.SOPInstanceUID in _recorded(session_factory))


def _recorded(factory: sessionmaker[Session]) -> set[str]:
    with factory() as session:
        return set(session.scalars(select(Instance.sop_instance_uid)))


def test_an_instance_acknowledged_between_plan_and_delete_survives(
    node: Node, settings: Settings, session_factory: sessionmaker[Session], monkeypatch
) -> None:
    datasets = _finished_series(node, session_factory)
    late = _late_instance(datasets[0], seed=8)
    real_plan = retention.plan

    def plan_then_receive(*args, **kwargs):  # type: ignore[no-untyped-def]
        removals = real_plan(*args, **kwargs)
        assert send(node.port, [late]) == [statuses.SUCCESS]  # acknowledged: on disk
        return removals

    monkeypatch.setattr(retention, "plan", plan_then_receive)
    retention.collect_garbage(settings, session_factory)
    assert _spooled(node, late).is_file(), "an acknowledged instance was deleted"


def test_a_removal_deletes_only_the_planned_files(settings: Settings, session_factory: sessionmaker[Session]) -> None:
    """Deterministic half of the race: a file spooled after the plan, not yet recorded."""
    folder = settings.spool_dir / "1.2" / "1.2.3"
    folder.mkdir(parents=True)
    (folder / "1.2.3.1.dcm").write_bytes(b"x" * 10)
    with session_factory() as session:
        session.add(
            Series(
                series_instance_uid="1.2.3",
                study_instance_uid="1.2",
                spool_path=str(folder),
                state="skipped",
                completed_at=datetime.now(UTC) - timedelta(hours=1),
            )
        )
        session.commit()
        (removal,) = retention.plan(settings, session, datetime.now(UTC))
    (folder / "1.2.3.2.dcm").write_bytes(b"y" * 10)  # acknowledged after the plan
    with session_factory() as session, session.begin():
        assert retention._remove(session, removal)
    assert sorted(p.name for p in folder.iterdir()) == ["1.2.3.2.dcm"]
