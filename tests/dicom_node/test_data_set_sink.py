"""The intake's temp file writer: gathered fragments, one writev, the same bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dicom_node.intake import HEAD_BYTES, PENDING_BYTES, PENDING_PIECES, DataSetSink

META = b"\0" * 128 + b"DICM" + b"meta" * 10


def fragments(sizes: list[int]) -> list[bytearray]:
    """Fresh buffers of random bytes, one per P-DATA fragment (as read_pdu makes them)."""
    return [bytearray(os.urandom(size)) for size in sizes]


@pytest.mark.parametrize(
    "sizes",
    [
        [],  # no data set bytes at all
        [65_994, 65_964],  # a 256x256 MR as storescu sends it
        [PENDING_BYTES - len(META), 1, PENDING_BYTES + 3, 7],  # across the gathering threshold
        [3] * (PENDING_PIECES * 3 + 5),  # many small fragments: the piece limit
        [1 << 20, 1 << 20, 5],  # fragments bigger than the threshold
    ],
)
def test_file_equals_meta_plus_fragments(tmp_path: Path, sizes: list[int]) -> None:
    parts = fragments(sizes)
    sink = DataSetSink(tmp_path / "a.part", META, limit=64 << 20)
    for part in parts:
        sink.write(memoryview(part))
    sink.close()
    expected = META + b"".join(parts)
    assert (tmp_path / "a.part").read_bytes() == expected
    assert sink.size == len(expected) and sink.received == len(expected) - len(META)
    assert bytes(sink.head) == expected[len(META) :][:HEAD_BYTES]
    assert sink.error is None and not sink.too_large


def test_a_buffer_reused_after_flush_does_not_change_the_file(tmp_path: Path) -> None:
    buffer = bytearray(b"x" * 1000)
    sink = DataSetSink(tmp_path / "b.part", META, limit=1 << 20)
    sink.write(memoryview(buffer))
    sink.flush()  # what the pynetdicom handler path does before its buffer goes away
    buffer[:] = b"y" * 1000
    sink.write(memoryview(buffer))
    sink.close()
    assert (tmp_path / "b.part").read_bytes() == META + b"x" * 1000 + b"y" * 1000


def test_over_the_limit_deletes_the_file_and_only_counts(tmp_path: Path) -> None:
    sink = DataSetSink(tmp_path / "c.part", META, limit=100)
    sink.write(b"a" * 60)
    sink.write(b"b" * 60)
    sink.write(b"c" * 60)
    sink.close()
    assert sink.too_large and sink.received == 180
    assert not (tmp_path / "c.part").exists()


def test_refused_writes_nothing(tmp_path: Path) -> None:
    sink = DataSetSink(tmp_path / "d.part", META, limit=100, refused=0xA700)
    sink.write(b"a" * 10)
    sink.close()
    assert sink.received == 10 and not (tmp_path / "d.part").exists()


def test_an_unwritable_folder_is_an_error_not_an_exception(tmp_path: Path) -> None:
    sink = DataSetSink(tmp_path / "missing" / "e.part", META, limit=100)
    sink.write(b"a" * 10)
    sink.close()
    assert isinstance(sink.error, OSError)
