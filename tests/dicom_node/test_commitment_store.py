"""Pending Storage Commitment requests on disk (dicom_node/commitment_store.py): written whole,
read back oldest first, forgotten when answered; broken, stale or half-written files are dropped."""

from __future__ import annotations

import os
import time
from pathlib import Path

from dicom_node.commitment_store import MAX_AGE_S, PendingRequests

MR = "1.2.840.10008.5.1.4.1.1.4"


def test_saved_requests_come_back_in_order_until_removed(tmp_path: Path) -> None:
    pending = PendingRequests(tmp_path / "data" / "commitment")
    assert pending.load() == []  # no folder yet
    first = pending.save("1.2.3", "SCU", [(MR, "1.2.3.4"), (MR, "1.2.3.5")])
    second = pending.save("1.2.9", "OTHER", [(MR, "1.2.9.1")])
    loaded = pending.load()
    assert [(r.transaction_uid, r.calling_ae, r.references) for r in loaded] == [
        ("1.2.3", "SCU", [(MR, "1.2.3.4"), (MR, "1.2.3.5")]),
        ("1.2.9", "OTHER", [(MR, "1.2.9.1")]),
    ]
    assert [r.path for r in loaded] == [first, second]
    pending.remove(first)
    assert [r.transaction_uid for r in pending.load()] == ["1.2.9"]
    assert not list(pending.folder.glob(".*.tmp"))  # nothing half-written left behind


def test_broken_stale_and_half_written_files_are_dropped(tmp_path: Path) -> None:
    pending = PendingRequests(tmp_path / "commitment")
    kept = pending.save("1.2.3", "SCU", [(MR, "1.2.3.4")])
    stale = pending.save("1.2.4", "SCU", [(MR, "1.2.4.1")])
    old = time.time() - MAX_AGE_S - 60
    os.utime(stale, (old, old))
    (pending.folder / "00000000000000000001-1.2.5.json").write_text("{not json")
    (pending.folder / "00000000000000000002-1.2.6.json").write_text(
        '{"transaction_uid": "1.2.6", "calling_ae": "SCU", "references": [["x", "1.2"]]}'
    )
    (pending.folder / ".00000000000000000003-1.2.7.json.1-2-abc.tmp").write_text("{")
    assert [r.path for r in pending.load()] == [kept]
    assert sorted(p.name for p in pending.folder.iterdir()) == [kept.name]
