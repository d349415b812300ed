"""Migrations on SQLite and PostgreSQL, audit queries, retention, and the audit CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select
from sqlalchemy.exc import IntegrityError

from dicom_node.audit.db import make_engine, make_session_factory, transaction
from dicom_node.audit.models import Base, CleanupRecord, Instance, Job, JobState, Series, SeriesState
from dicom_node.audit.queries import parse_since, series_rows
from dicom_node.config import Settings
from dicom_node.retention import collect_garbage
from migrations import current_head, upgrade


def assert_schema_matches_models(url: str) -> None:
    tables = set(inspect(make_engine(url)).get_table_names())
    assert set(Base.metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migrations_on_sqlite(sqlite_url: str) -> None:
    assert_schema_matches_models(sqlite_url)
    upgrade(sqlite_url)  # idempotent


@pytest.mark.integration
def test_migrations_on_postgresql(postgres_url: str) -> None:
    upgrade(postgres_url)
    assert_schema_matches_models(postgres_url)
    with make_engine(postgres_url).connect() as conn:
        version = conn.exec_driver_sql("select version_num from alembic_version").scalar()
    assert version == current_head()


@pytest.mark.integration
def test_audit_writes_and_reads_on_postgresql(postgres_url: str) -> None:
    upgrade(postgres_url)
    factory = make_session_factory(make_engine(postgres_url))
    now = datetime.now(UTC)
    with transaction(factory) as session:
        session.add(
            Series(
                series_instance_uid="1.2.3",
                study_instance_uid="1.2",
                spool_path="/x",
                state=SeriesState.skipped,
                failed_rule="sagittal",
                last_received_at=now,
            )
        )
    with factory() as session:
        rows = series_rows(session, since=parse_since("1h"), status="skipped")
    assert [(r["series_instance_uid"], r["failed_rule"]) for r in rows] == [("1.2.3", "sagittal")]


def test_parse_since() -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    assert parse_since("2h", now) == now - timedelta(hours=2)
    assert parse_since("2026-01-01T08:00", now) == datetime(2026, 1, 1, 8, tzinfo=UTC)
    with pytest.raises(ValueError, match="--since"):
        parse_since("yesterday", now)


def test_retention_removes_finished_series_and_old_quarantine(tmp_path: Path, sqlite_url: str) -> None:
    settings = Settings(
        data_dir=tmp_path, database_url=sqlite_url, spool_retention_hours=1, quarantine_retention_days=1
    )
    factory = make_session_factory(make_engine(sqlite_url))
    old = datetime.now(UTC) - timedelta(hours=5)
    folders = {}
    for uid, state, job_states in [
        ("1.1", SeriesState.selected, [JobState.done]),
        ("1.2", SeriesState.selected, [JobState.failed]),
        ("1.3", SeriesState.skipped, []),
        ("1.4", SeriesState.selected, [JobState.failed, JobState.done]),  # superseded (meddet reanalyze)
        ("1.5", SeriesState.selected, [JobState.done, JobState.failed]),  # the later one failed: kept
    ]:
        folder = settings.spool_dir / "9" / uid
        folder.mkdir(parents=True)
        (folder / "a.dcm").write_bytes(b"x" * 10)
        folders[uid] = folder
        with transaction(factory) as session:
            series = Series(
                series_instance_uid=uid, study_instance_uid="9", spool_path=str(folder), state=state, completed_at=old
            )
            session.add(series)
            session.flush()
            for i, job_state in enumerate(job_states):
                session.add(Job(series_id=series.id, series_instance_uid=uid, model_version=f"m{i}", state=job_state))
                session.flush()
    settings.quarantine_dir.mkdir(parents=True)
    stale = settings.quarantine_dir / "old.dcm"
    stale.write_bytes(b"bad")
    os.utime(stale, (0, 0))
    fresh = settings.quarantine_dir / "new.dcm"
    fresh.write_bytes(b"bad")

    planned = collect_garbage(settings, factory, dry_run=True)
    assert {p.path for p in planned} == {folders["1.1"], folders["1.3"], folders["1.4"], stale}
    assert folders["1.1"].exists()  # dry run removes nothing
    collect_garbage(settings, factory)
    assert not folders["1.1"].exists() and not folders["1.3"].exists() and not stale.exists()
    assert folders["1.2"].exists() and folders["1.5"].exists() and fresh.exists()  # failed job: kept for a retry
    with factory() as session:
        records = list(session.scalars(select(CleanupRecord)))
    assert {r.kind for r in records} == {"spool", "quarantine"} and len(records) == 4


def test_audit_cli_json(tmp_path: Path) -> None:
    env = dict(os.environ, MEDDET_DATA_DIR=str(tmp_path))

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dicom_node.cli", *args], env=env, capture_output=True, text=True)

    assert run("db", "upgrade").returncode == 0
    result = run("audit", "series", "--json", "--since", "1d")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []
    bad = run("audit", "jobs", "--since", "yesterday")
    assert bad.returncode != 0 and "--since" in bad.stderr


def _instance_row(series_id: int, sop: str, revision: int = 0) -> dict[str, object]:
    return dict(
        series_id=series_id,
        sop_instance_uid=sop,
        revision=revision,
        sop_class_uid="1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        size_bytes=1,
        sha256="0" * 64,
        spool_path=f"/spool/{series_id}/{sop}.r{revision}.dcm",
        received_at=datetime.now(UTC),
    )


def _check_instances_keyed_by_series(url: str) -> None:
    """From revision 0001 (unique on SOP + revision) to head (unique per series), data kept."""
    upgrade(url, "0001")
    engine = make_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for uid in ("1.1", "1.2"):
            conn.execute(
                Series.__table__.insert().values(
                    series_instance_uid=uid,
                    study_instance_uid="1",
                    spool_path="/s",
                    state="receiving",
                    n_instances=0,
                    first_received_at=now,
                    last_received_at=now,
                )
            )
        conn.execute(Instance.__table__.insert().values(**_instance_row(1, "9.9")))
    engine.dispose()
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(Instance.__table__.insert().values(**_instance_row(2, "9.9")))  # same SOP, 2nd series
        assert conn.execute(select(func.count()).select_from(Instance.__table__)).scalar() == 2
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(Instance.__table__.insert().values(**_instance_row(2, "9.9")))
    engine.dispose()


def test_migration_keys_instances_by_series_on_sqlite(tmp_path: Path) -> None:
    _check_instances_keyed_by_series(f"sqlite:///{tmp_path / 'old.db'}")


@pytest.mark.integration
def test_migration_keys_instances_by_series_on_postgresql(postgres_url: str) -> None:
    _check_instances_keyed_by_series(postgres_url)
