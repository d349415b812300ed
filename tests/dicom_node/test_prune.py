"""Issue 12 item 12: `meddet db prune --older-than 90d` bounds the audit DB, results and
failed spools; on real SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from dicom_node.audit.db import make_engine, make_session_factory, transaction
from dicom_node.audit.models import (
    Association,
    CleanupRecord,
    Instance,
    Job,
    JobEvent,
    JobState,
    Outbox,
    QuarantineRecord,
    SendAttempt,
    Series,
    SeriesState,
)
from dicom_node.cli import app
from dicom_node.cli import node as _node_commands  # noqa: F401  (registers the commands)
from dicom_node.config import Settings
from dicom_node.loopback import wait_for
from dicom_node.retention import RetentionLoop
from migrations import upgrade

NOW = datetime.now(UTC)
OLD = NOW - timedelta(days=200)
RECENT = NOW - timedelta(days=10)


@dataclass
class World:
    settings: Settings
    sessions: sessionmaker[Session]
    jobs: dict[str, int]
    series: dict[str, int]
    folders: dict[str, Path]


def _folder(path: Path, when: datetime) -> Path:
    path.mkdir(parents=True)
    (path / "object.dcm").write_bytes(b"x" * 100)
    os.utime(path, (when.timestamp(), when.timestamp()))
    return path


def _series(session: Session, settings: Settings, name: str, at: datetime, spool: bool) -> Series:
    folder = settings.spool_dir / "1.2.3" / f"1.2.3.{name}"
    if spool:
        _folder(folder, at)
    series = Series(
        series_instance_uid=f"1.2.3.{name}",
        study_instance_uid="1.2.3",
        spool_path=str(folder),
        state=SeriesState.selected,
        first_received_at=at,
        last_received_at=at,
        completed_at=at,
    )
    session.add(series)
    session.flush()
    return series


def _job(session: Session, settings: Settings, series: Series, state: JobState, at: datetime) -> Job:
    job = Job(
        series_id=series.id,
        series_instance_uid=series.series_instance_uid,
        model_version="v1",
        state=state,
        created_at=at,
        updated_at=at,
    )
    session.add(job)
    session.flush()
    job.results_path = str(_folder(settings.results_dir / str(job.id), at))
    session.add_all(
        [
            JobEvent(job_id=job.id, state="queued", at=at),
            JobEvent(job_id=job.id, state=state.value, at=at),
            Outbox(job_id=job.id, created_at=at, published_at=at),
            SendAttempt(job_id=job.id, destination="PACS@h:104", outcome="success", at=at),
        ]
    )
    return job


def build(tmp_path: Path, url: str) -> World:
    """Old and recent rows of every kind, with folders on disk."""
    upgrade(url)
    settings = Settings(data_dir=tmp_path / "data", database_url=url)
    sessions = make_session_factory(make_engine(url))
    jobs, series, folders = {}, {}, {}
    with transaction(sessions) as session:
        old_assoc = Association(
            calling_ae="CT", called_ae="MEDDET", address="10.0.0.1", started_at=OLD, ended_at=OLD, outcome="released"
        )
        session.add_all(
            [
                old_assoc,
                Association(calling_ae="CT", called_ae="MEDDET", address="10.0.0.1", started_at=OLD),
                Association(
                    calling_ae="CT",
                    called_ae="MEDDET",
                    address="10.0.0.1",
                    started_at=RECENT,
                    ended_at=RECENT,
                    outcome="released",
                ),
            ]
        )
        for name, state, at, series_at in [
            ("done", JobState.done, OLD, OLD),
            ("failed", JobState.failed, OLD, OLD),
            ("failed_recently", JobState.failed, RECENT, OLD),
            ("running", JobState.running, OLD, OLD),
        ]:
            s = _series(session, settings, name, series_at, spool=True)
            series[name] = s.id
            jobs[name] = _job(session, settings, s, state, at).id
        session.add(
            Instance(
                series_id=series["failed_recently"],
                association_id=old_assoc.id,
                sop_instance_uid="1.2.3.9",
                sop_class_uid="1.2",
                transfer_syntax_uid="1.2",
                size_bytes=1,
                sha256="0" * 64,
                spool_path="x",
                received_at=OLD,
            )
        )
        session.add(
            Instance(
                series_id=series["failed"],
                sop_instance_uid="1.2.3.8",
                sop_class_uid="1.2",
                transfer_syntax_uid="1.2",
                size_bytes=1,
                sha256="0" * 64,
                spool_path="x",
                received_at=OLD,
            )
        )
        skipped = _series(session, settings, "skipped", OLD, spool=False)  # retention took its folder
        series["skipped"] = skipped.id
        session.add_all(
            [
                QuarantineRecord(path="q1", reason="bad", at=OLD),
                QuarantineRecord(path="q2", reason="bad", at=RECENT),
                SendAttempt(destination="PACS@h:104", outcome="unreachable", at=OLD),
                CleanupRecord(path="p", kind="spool", reason="r", at=OLD),
            ]
        )
    folders["orphan_old"] = _folder(settings.results_dir / "999", OLD)
    folders["orphan_recent"] = _folder(settings.results_dir / "998", RECENT)
    return World(settings, sessions, jobs, series, folders)


@pytest.fixture(params=["sqlite", "postgresql"])
def world(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[World]:
    url = f"sqlite:///{tmp_path / 'prune.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    built = build(tmp_path, url)
    yield built
    built.sessions.kw["bind"].dispose()


def count(world: World, model: type) -> int:
    with world.sessions() as session:
        return int(session.scalar(select(func.count()).select_from(model)) or 0)


def snapshot(world: World) -> dict[str, int]:
    models = [Job, JobEvent, Outbox, SendAttempt, Series, Instance, Association, QuarantineRecord, CleanupRecord]
    return {m.__tablename__: count(world, m) for m in models}


def run_cli(world: World, *args: str) -> dict:
    env = {"MEDDET_DATA_DIR": str(world.settings.data_dir), "MEDDET_DATABASE_URL": world.settings.database_url}
    result = CliRunner().invoke(app, ["db", "prune", "--older-than", "90d", "--json", *args], env=env)
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{") :])


def test_dry_run_lists_and_deletes_nothing(world: World) -> None:
    before = snapshot(world)
    report = run_cli(world, "--dry-run")
    assert snapshot(world) == before
    assert all(Path(f["path"]).exists() for f in report["folders"])
    assert report["rows"]["jobs"] == 2 and report["rows"]["job_events"] == 4
    assert report["rows"]["series"] == 2 and report["rows"]["instances"] == 1
    paths = {f["path"] for f in report["folders"]}
    assert str(world.folders["orphan_old"]) in paths and str(world.folders["orphan_recent"]) not in paths


def test_prune_deletes_what_is_old_and_finished_and_records_it(world: World) -> None:
    planned = run_cli(world, "--dry-run")
    report = run_cli(world)
    assert report["rows"] == planned["rows"]
    assert {f["path"] for f in report["folders"]} == {f["path"] for f in planned["folders"]}
    expected = {
        "jobs": 2,
        "job_events": 4,
        "outbox": 2,
        "send_attempts": 2,
        "series": 2,
        "instances": 1,
        "associations": 1,
        "quarantine": 1,
        "send_attempts_without_job": 1,
        "cleanup": 1,
    }
    assert report["rows"] == expected
    with world.sessions() as session:
        kept = {j.id for j in session.scalars(select(Job))}
        assert kept == {world.jobs[n] for n in ("failed_recently", "running")}
        assert session.get(Series, world.series["done"]) is not None  # its spool is retention's
        assert session.get(Series, world.series["failed"]) is None
        assert session.get(Series, world.series["skipped"]) is None
        instance = session.scalar(select(Instance))
        assert instance.sop_instance_uid == "1.2.3.9" and instance.association_id is None
        assert {a.outcome for a in session.scalars(select(Association))} == {"open", "released"}
        records = list(session.scalars(select(CleanupRecord).where(CleanupRecord.kind == "prune")))
        assert len(records) == 1 and "jobs 2" in records[0].reason
        assert (
            session.scalar(select(func.count()).select_from(CleanupRecord).where(CleanupRecord.kind == "results")) == 3
        )
    results = world.settings.results_dir
    assert not (results / str(world.jobs["done"])).exists() and not (results / str(world.jobs["failed"])).exists()
    assert (results / str(world.jobs["failed_recently"])).exists() and world.folders["orphan_recent"].exists()
    assert not world.folders["orphan_old"].exists()
    spool = world.settings.spool_dir / "1.2.3"
    assert not (spool / "1.2.3.failed").exists()  # a failed job's series, idle since the cutoff
    assert (spool / "1.2.3.done").exists() and (spool / "1.2.3.failed_recently").exists()
    assert (spool / "1.2.3.running").exists()
    again = run_cli(world)
    assert again["folders"] == [] and again["rows"]["jobs"] == 0


def test_older_than_must_be_an_age_or_a_date(tmp_path: Path) -> None:
    env = {"MEDDET_DATA_DIR": str(tmp_path)}
    result = CliRunner().invoke(app, ["db", "prune", "--older-than", "ninety days"], env=env)
    assert result.exit_code == 2 and "--older-than" in result.output


def test_the_node_prunes_on_its_retention_pass_when_told_how_old(world: World) -> None:
    """MEDDET_PRUNE_OLDER_THAN_DAYS: the retention loop of ``meddet serve`` runs the prune."""
    settings = world.settings.model_copy(update={"prune_older_than_days": 90.0})
    loop = RetentionLoop(settings, world.sessions, interval=0.05)
    loop.start()
    try:
        wait_for(lambda: count(world, Job) == 2, 30, "the scheduled prune", interval=0.05)
    finally:
        loop.stop()
    with world.sessions() as session:
        assert {j.id for j in session.scalars(select(Job))} == {world.jobs[n] for n in ("failed_recently", "running")}
        reasons = [r.reason for r in session.scalars(select(CleanupRecord).where(CleanupRecord.kind == "prune"))]
    assert reasons and "jobs 2" in reasons[0]
    assert not world.folders["orphan_old"].exists() and world.folders["orphan_recent"].exists()


def test_without_the_setting_the_retention_pass_prunes_nothing(world: World) -> None:
    before = snapshot(world)
    RetentionLoop(world.settings, world.sessions).run_once()
    after = snapshot(world)
    assert after.pop("cleanup") == before.pop("cleanup") + 1  # retention took the done series' spool
    assert after == before and world.folders["orphan_old"].exists()


def test_the_prune_age_is_a_setting(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("MEDDET_PRUNE_OLDER_THAN_DAYS", "90")
    assert Settings(data_dir=tmp_path).prune_older_than_days == 90.0
    monkeypatch.delenv("MEDDET_PRUNE_OLDER_THAN_DAYS")
    assert Settings(data_dir=tmp_path).prune_older_than_days is None
