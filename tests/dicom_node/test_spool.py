import json
from pathlib import Path

import pytest

from dicom_node.spool import Spool, SpoolError, parse_spool_name


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    return Spool(tmp_path / "spool", tmp_path / "tmp", tmp_path / "quarantine")


def test_store_is_atomic_and_complete(spool: Spool) -> None:
    stored = spool.store(b"DICM-1", "1.2", "1.2.3", "1.2.3.4")
    assert stored.path == spool.spool_dir / "1.2" / "1.2.3" / "1.2.3.4.dcm"
    assert stored.path.read_bytes() == b"DICM-1"
    assert (stored.revision, stored.duplicate, stored.size) == (0, False, 6)
    assert list(spool.tmp_dir.iterdir()) == []  # nothing partial left behind


def test_same_bytes_are_ignored_different_bytes_become_a_revision(spool: Spool) -> None:
    first = spool.store(b"A", "1.2", "1.2.3", "1.2.3.4")
    again = spool.store(b"A", "1.2", "1.2.3", "1.2.3.4")
    changed = spool.store(b"B", "1.2", "1.2.3", "1.2.3.4")
    changed_again = spool.store(b"B", "1.2", "1.2.3", "1.2.3.4")
    assert again.duplicate and again.path == first.path
    assert changed.revision == 1 and changed.path.name == "1.2.3.4.r1.dcm"
    assert changed_again.duplicate and changed_again.revision == 1
    assert first.path.read_bytes() == b"A"  # never overwritten
    assert parse_spool_name(changed.path.name) == ("1.2.3.4", 1)


def test_invalid_uids_are_refused_before_touching_disk(spool: Spool) -> None:
    with pytest.raises(ValueError, match="SOP instance UID"):
        spool.store(b"x", "1.2", "1.2.3", "../../etc/passwd")
    assert spool.iter_files() == []


def test_quarantine_keeps_bytes_and_reason(spool: Spool) -> None:
    path = spool.quarantine(b"garbage", "unparseable", sop_instance_uid="1.2.9")
    assert path.read_bytes() == b"garbage"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["reason"] == "unparseable" and meta["sop_instance_uid"] == "1.2.9"


def test_write_failure_raises_and_leaves_nothing(spool: Spool, tmp_path: Path) -> None:
    folder = spool.series_dir("1.2", "1.2.3")
    folder.parent.mkdir(parents=True)
    folder.write_text("a file where the series folder should be")
    with pytest.raises((SpoolError, OSError)):
        spool.store(b"x", "1.2", "1.2.3", "1.2.3.4")
    assert list(spool.tmp_dir.iterdir()) == []


def test_clean_tmp_removes_partial_writes(spool: Spool) -> None:
    (spool.tmp_dir / "123-4-5.part").write_bytes(b"half")
    assert spool.clean_tmp() == 1
