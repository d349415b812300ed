"""Issue 12 item 5 in the worker's reader: a declared image size is checked before decoding."""

from __future__ import annotations

import resource
import time
from pathlib import Path

import pytest

from dicom_node.pixels import SeriesError, read_series
from tests.factories import make_mr_series, make_size_bomb, write_series


def test_a_forged_huge_rle_instance_is_refused_before_decoding(tmp_path: Path) -> None:
    bomb = make_size_bomb()  # 65535 x 65535 x 10000 frames declared in ~1 KB
    path = tmp_path / "bomb.dcm"
    bomb.save_as(path, enforce_file_format=True)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    with pytest.raises(SeriesError) as refused:
        read_series([path])
    assert "MEDDET_MAX_PIXELS" in str(refused.value)
    assert "not decoded" in str(refused.value)
    assert time.monotonic() - started < 5
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB


def test_the_limit_counts_the_whole_series(tmp_path: Path) -> None:
    files = write_series(make_mr_series(3, 64, 64), tmp_path)
    assert len(read_series(files, max_pixels=64 * 64 * 3).slices) == 3
    with pytest.raises(SeriesError, match=r"12288 pixels.*over the limit of 8192"):
        read_series(files, max_pixels=64 * 64 * 2)
