"""The audit row's ``sha256`` is the SHA-256 of the whole stored file (file meta + data set).

The receive path does not hash; the audit recorder reads each spooled file back and hashes it
(issue 14). These tests receive over real loopback associations (pynetdicom through the fast
lane and through the stock handler, dcmtk ``storescu``; both durability modes) and compare
every recorded digest with ``hashlib.sha256`` of the file it names.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import statuses
from dicom_node.audit.models import Instance
from dicom_node.config import Settings
from dicom_node.events import InstanceStored
from dicom_node.spool import Spool, StoredFile, file_sha256, with_sha256
from tests.conftest import storescu
from tests.dicom_node.test_audit_recorder import failures, recorded, run_recorder, spooled
from tests.factories import make_mr_series, write_series
from tests.integration.receiving import running_node, send

pytestmark = pytest.mark.timeout(120)


def rows(factory: sessionmaker[Session]) -> list[tuple[str, str, int]]:
    """(spool path, sha256, size) of every recorded instance."""
    with factory() as session:
        found = session.execute(select(Instance.spool_path, Instance.sha256, Instance.size_bytes))
        return [(path, digest, size) for path, digest, size in found]


def assert_digests_match_files(factory: sessionmaker[Session], expected_rows: int) -> None:
    found = rows(factory)
    assert len(found) == expected_rows
    for path, digest, size in found:
        data = Path(path).read_bytes()
        assert (digest, size) == (hashlib.sha256(data).hexdigest(), len(data)), path


def resent_with_other_pixels(ds: Dataset) -> Dataset:
    """The same SOP Instance UID with different bytes: kept as revision 1."""
    other = make_mr_series(1, 256, 256, study_uid=str(ds.StudyInstanceUID), seed=9)[0]
    other.SeriesInstanceUID = ds.SeriesInstanceUID
    other.SOPInstanceUID = other.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return other


@pytest.mark.parametrize("durability", ["group", "per-instance"])
@pytest.mark.parametrize("lane", [True, False], ids=["fast-lane", "handler"])
def test_pynetdicom_instances_are_recorded_with_their_files_sha256(
    node_settings: Settings,
    session_factory: sessionmaker[Session],
    monkeypatch: pytest.MonkeyPatch,
    durability: str,
    lane: bool,
) -> None:
    if not lane:
        from dicom_node import fastlane

        monkeypatch.setattr(fastlane, "attach", lambda *args: False)
    series = make_mr_series(4, 256, 256)  # 132 KB each: several PDUs, one writev
    # a duplicate (same bytes: no new row) and a revision (different bytes: a second row)
    sent = [*series, series[0], resent_with_other_pixels(series[1])]
    with running_node(node_settings, session_factory, durability=durability, max_pdu=16384) as node:
        assert send(node.port, sent) == [statuses.SUCCESS] * len(sent)
        node.recorder.flush()
        assert (node.handlers.handler_stores == 0) is lane
    assert_digests_match_files(session_factory, expected_rows=5)


@pytest.mark.integration
def test_storescu_instances_are_recorded_with_their_files_sha256(
    node_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    files = write_series(make_mr_series(6, 256, 256), tmp_path / "in")
    with running_node(node_settings, session_factory) as node:
        result = storescu(node.port, files)
        assert result.returncode == 0, result.stderr
        node.recorder.flush()
    assert_digests_match_files(session_factory, expected_rows=6)


def test_file_sha256_reads_the_whole_file_in_pieces(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dicom_node import spool as spool_module

    monkeypatch.setattr(spool_module, "_HASH_PIECE", 1000)
    path = tmp_path / "f.dcm"
    path.write_bytes(bytes(range(256)) * 41)  # not a multiple of the piece
    assert file_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    stored = StoredFile(path, 0, None, 256 * 41, duplicate=False)
    assert with_sha256(stored).sha256 == file_sha256(path)
    assert with_sha256(with_sha256(stored)) == with_sha256(stored)


def test_a_file_gone_before_the_recorder_hashes_it_is_a_failure_not_a_lost_batch(
    session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    spool = Spool(tmp_path / "spool", tmp_path / "tmp", tmp_path / "quarantine", durable=False)
    events = []
    for ds in make_mr_series(3, 16, 16):
        header, stored = spooled(spool, ds)
        events.append(
            InstanceStored(None, header, StoredFile(stored.path, 0, None, stored.size, False), datetime.now(UTC))
        )
    events[1].stored.path.unlink()  # e.g. removed by hand before the row was written
    run_recorder(session_factory, events)
    assert [sop for _, sop, _ in recorded(session_factory)] == sorted(e.header.sop_uid for e in (events[0], events[2]))
    assert_digests_match_files(session_factory, expected_rows=2)
    (failure,) = failures(session_factory)
    assert failure.path == str(events[1].stored.path) and "FileNotFoundError" in failure.reason


def test_a_digest_already_known_is_not_computed_again(
    session_factory: sessionmaker[Session], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Spool.store`` (other paths) and recovery hash in place; the recorder keeps theirs."""
    from dicom_node import spool as spool_module

    spool = Spool(tmp_path / "spool", tmp_path / "tmp", tmp_path / "quarantine", durable=False)
    header, stored = spooled(spool, make_mr_series(1, 16, 16)[0])
    assert stored.sha256 == file_sha256(stored.path)
    monkeypatch.setattr(spool_module, "file_sha256", lambda path: pytest.fail("hashed again"))
    run_recorder(session_factory, [InstanceStored(None, header, stored, datetime.now(UTC))])
    assert rows(session_factory)[0][1] == stored.sha256
