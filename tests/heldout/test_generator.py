"""The held-out generator: determinism, protocol ranges, ground truth, rendering."""

from __future__ import annotations

import numpy as np
import pytest

from detector.heldout import DISC_LEVELS, REPORTED_LEVELS, make_study, studies, study_seed
from detector.heldout.study import sample_protocol

SMALL = 128


@pytest.fixture(scope="module")
def small() -> list:
    return [make_study(s, hard, matrix=SMALL) for s in range(6) for hard in (False, True)]


def test_deterministic_per_seed() -> None:
    a, b = make_study(11, True, matrix=96), make_study(11, True, matrix=96)
    assert np.array_equal(a.volume, b.volume)
    assert a.discs == b.discs and a.slice_positions == b.slice_positions
    c = make_study(12, True, matrix=96)
    assert not np.array_equal(a.volume[0], c.volume[0])


def test_studies_seeds_from_run_seed_and_index() -> None:
    got = list(studies(2, 1, seed=3, matrix=64))
    assert [s.hard for s in got] == [False, False, True]
    assert [s.seed for s in got] == [study_seed(3, 0), study_seed(3, 1), study_seed(3, 0)]
    again = make_study(got[2].seed, True, matrix=64)
    assert np.array_equal(again.volume, got[2].volume)
    assert not np.array_equal(got[0].volume[0], got[2].volume[0])  # routine and hard of one seed differ
    smaller = list(studies(1, 1, seed=3, matrix=64))  # a subset of the larger run
    assert np.array_equal(smaller[0].volume, got[0].volume) and np.array_equal(smaller[1].volume, got[2].volume)


@pytest.mark.parametrize("hard", [False, True])
def test_protocol_ranges(hard: bool) -> None:
    fat_sat = set()
    for seed in range(300):
        p = sample_protocol(np.random.default_rng([seed, int(hard), 0xC5]), hard)
        assert all(256 <= n <= 512 for n in p.matrix)
        assert all(199.9 <= f <= 280.1 for f in p.fov), p.fov
        assert 2.5 <= p.thickness <= 4.0
        assert 11 <= p.n_slices <= 20
        assert p.acquired[0] <= p.matrix[0] and p.acquired[1] <= p.matrix[1]
        assert abs(np.degrees(p.yaw)) <= 7.0 and abs(np.degrees(p.roll)) <= 6.0
        fat_sat.add(p.sequence.fat_sat)
    assert fat_sat == {True, False}


def test_full_size_study_matches_its_protocol() -> None:
    s = make_study(4, False)
    n, h, w = s.volume.shape
    assert s.volume.dtype == np.float32 and (s.volume >= 0).all()
    assert 11 <= n <= 20 and 256 <= h <= 512 and 256 <= w <= 512
    assert 200 <= h * s.pixel_spacing[0] <= 280.1 and 200 <= w * s.pixel_spacing[1] <= 280.1
    assert 2.5 <= s.slice_thickness <= 4.0
    assert list(s.slice_positions) == sorted(s.slice_positions)


def test_ground_truth_is_consistent(small: list) -> None:
    for s in small:
        n, h, w = s.volume.shape
        levels = [d.level for d in s.discs]
        assert levels == sorted(levels, key=DISC_LEVELS.index)  # cranial first
        assert set(REPORTED_LEVELS) <= set(levels)
        assert any(lv.startswith("T") and lv != "C7-T1" for lv in levels), levels  # thoracic discs in view
        for d in s.discs:
            assert d.boxes and set(d.boxes) == set(d.protrusion_by_slice)
            for k, (x0, y0, x1, y1) in d.boxes.items():
                assert 0 <= k < n and 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
            if d.herniated:
                assert d.protrusion_mm >= 1.5 and d.kind in ("protrusion", "extrusion")
                assert max(d.protrusion_by_slice.values()) <= d.protrusion_mm + 1e-6
                assert len(d.boxes) >= 2  # boxes on neighbouring slices too; the hernia itself is focal
            else:
                assert d.kind in ("normal", "bulge") and d.protrusion_mm <= 1.2
        # discs run down the image in order
        for k in range(n):
            ys = [b[1] for _, b in s.boxes_on(k)]
            assert ys == sorted(ys)
    sizes = [d.protrusion_mm for s in small for d in s.discs if d.herniated and d.reported]
    assert sizes, "no herniation in the sample"


def test_hard_herniations_are_smaller_and_routine_ones_bigger(small: list) -> None:
    for s in small:
        for d in s.discs:
            if d.herniated:
                lo, hi = (1.5, 3.5) if s.hard else (2.0, 6.0)
                assert lo <= d.protrusion_mm <= hi


def test_herniation_renders_in_the_canal() -> None:
    def big(sd: int) -> bool:
        return any(d.herniated and d.protrusion_mm >= 3.0 for d in make_study(sd, False, matrix=64).discs)

    seed = next(sd for sd in range(50) if big(sd))
    with_h = make_study(seed, False, matrix=192)
    without = make_study(seed, False, matrix=192, herniations=False)
    d = max((d for d in with_h.discs if d.herniated), key=lambda d: d.protrusion_mm)
    k = max(d.protrusion_by_slice, key=d.protrusion_by_slice.get)
    x0, y0, x1, y1 = d.boxes[k]
    plain = without.disc(d.level)
    assert plain is not None and not plain.herniated
    # the herniated disc's box reaches further back (posterior = higher column) than without it
    assert x1 > plain.boxes[k][2]
    # and the pixels behind the disc differ, far more than elsewhere
    rows = slice(max(int(y0) - 3, 0), int(y1) + 3)
    cols = slice(int(plain.boxes[k][2]) - 1, int(x1) + 2)
    diff = np.abs(with_h.volume[k] - without.volume[k])
    local = diff[rows, cols].mean()
    assert local > 5 * np.median(diff) and local > 0.02 * with_h.volume[k].max()


def _noise_ratio(v: np.ndarray) -> float:
    d = np.diff(v, axis=2)
    return float(np.median(np.abs(d - np.median(d))) / np.percentile(v, 99))


def test_hard_studies_are_noisier() -> None:
    routine = [_noise_ratio(make_study(s, False, matrix=SMALL).volume) for s in range(4)]
    hard = [_noise_ratio(make_study(s, True, matrix=SMALL).volume) for s in range(4)]
    assert np.mean(hard) > 1.5 * np.mean(routine)


def test_fat_saturation_darkens_fat_not_csf() -> None:
    from detector.heldout.tissues import Sequence, signals

    plain = signals(Sequence(3000.0, 100.0, False), np.random.default_rng(0), marrow_fat=0.5, jitter=0.0)
    fs = signals(Sequence(3000.0, 100.0, True, 0.1), np.random.default_rng(0), marrow_fat=0.5, jitter=0.0)
    assert fs["csf"] == pytest.approx(plain["csf"])
    assert fs["fat"] < 0.15 * plain["fat"] and fs["marrow"] < 0.6 * plain["marrow"]
    assert plain["csf"] > plain["cord"] > plain["muscle"] > plain["cortex"]
