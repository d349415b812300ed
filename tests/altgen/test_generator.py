"""detector.altgen: determinism, geometry, orientation, ground truth and contrast of the generator."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import numpy as np
import pytest

from detector.altgen import BODIES, LEVELS, AltStudy, make_study, studies
from detector.altgen.anatomy import axes, lateral_factor
from detector.altgen.canal import canal_bounds
from detector.altgen.generator import clean_slice, make_scene
from detector.altgen.grid import Grid
from detector.altgen.spine import disc_offset, disc_protrusion, paint_discs

PACKAGE = Path(__file__).resolve().parents[2] / "detector" / "altgen"
SEEDS = [(s, h) for s in range(6) for h in (False, True)]


@pytest.fixture(scope="module")
def full() -> dict[tuple[int, bool], AltStudy]:
    return {(s, h): make_study(s, h) for s, h in SEEDS}


def mid(study: AltStudy) -> int:
    return int(np.argmin(np.abs(np.array(study.slice_positions))))


def test_deterministic() -> None:
    a, b = make_study(11, True, positions=[-3.0, 0.0, 3.0]), make_study(11, True, positions=[-3.0, 0.0, 3.0])
    assert np.array_equal(a.volume, b.volume)
    assert a.discs == b.discs and a.landmarks == b.landmarks
    c = make_study(12, True, positions=[-3.0, 0.0, 3.0])
    assert c.volume.shape != a.volume.shape or not np.array_equal(a.volume, c.volume)


def test_shapes_dtypes_and_spacing(full: dict[tuple[int, bool], AltStudy]) -> None:
    for s in full.values():
        n, h, w = s.volume.shape
        assert s.volume.dtype == np.float32 and np.isfinite(s.volume).all() and s.volume.min() >= 0
        assert 11 <= n <= 20 and n == len(s.slice_positions) == len(s.landmarks)
        assert 256 <= h <= 512 and 256 <= w <= 512
        fov = (h * s.pixel_spacing[0], w * s.pixel_spacing[1])
        assert 179 < fov[0] < 301 and 0.74 * fov[0] < fov[1] <= fov[0] + 1e-6
        assert np.allclose(fov, s.meta["fov_mm"])
        gaps = np.diff(s.slice_positions)
        assert np.all(gaps > 0) and np.allclose(gaps, gaps[0])
        assert 2.5 <= s.meta["slice_thickness_mm"] <= 4.0 and gaps[0] >= s.meta["slice_thickness_mm"] - 1e-9
        assert abs(np.mean(s.slice_positions)) < 12


def test_n_slices_and_positions() -> None:
    s = make_study(4, False, n_slices=13)
    assert s.volume.shape[0] == 13
    pos = [-7.25, 1.5, 18.0]
    p = make_study(4, False, positions=pos)
    assert p.slice_positions == tuple(pos) and p.volume.shape[0] == 3 and set(p.landmarks) == {0, 1, 2}
    assert p.volume.shape[1:] == s.volume.shape[1:]  # same protocol and anatomy
    assert all(set(d.boxes) <= {0, 1, 2} for d in p.discs)


def test_orientation_head_up_face_left(full: dict[tuple[int, bool], AltStudy]) -> None:
    for (seed, hard), s in full.items():
        lm = s.landmarks[mid(s)]
        rows = [lm[f"body:{b}"][0] for b in BODIES if f"body:{b}" in lm]
        assert len(rows) >= 6 and np.all(np.diff(rows) > 0)  # cranial first, C2 above C3 ...
        if "clivus" in lm:
            assert lm["clivus"][0] < lm["dens"][0] < lm["body:C2"][0]
        assert lm["c1_arch"][1] < lm["dens"][1]  # anterior arch in front of the dens
        for b in ("C3", "C4", "C5"):
            if f"spinous:{b}" in lm:
                assert lm[f"body:{b}"][1] < lm[f"spinous:{b}"][1]
        sc = make_scene(seed, hard)
        z = s.slice_positions[mid(s)]
        cb = canal_bounds(sc.anatomy, sc.lines, z)
        for b in ("C3", "C4", "C5", "C6"):
            r, c = lm[f"body:{b}"]
            cord_col = (cb["cord_lo"][int(r)] + cb["cord_hi"][int(r)]) / 2
            cord_px = (cord_col - sc.grid.origin[1]) / sc.grid.spacing[1]
            assert c < cord_px - 5  # vertebral body anterior (left) of the cord


def test_boxes_and_landmarks_inside_image(full: dict[tuple[int, bool], AltStudy]) -> None:
    for s in full.values():
        _, h, w = s.volume.shape
        assert [d.level for d in s.discs] == [lv for lv in LEVELS if lv in {d.level for d in s.discs}]
        assert len(s.discs) >= 4
        for d in s.discs:
            assert d.level in LEVELS and set(d.boxes) == set(d.centres)
            for k, (x0, y0, x1, y1) in d.boxes.items():
                assert 0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h
                r, c = d.centres[k]
                assert y0 <= r <= y1 and x0 <= c <= x1
                assert 3 <= (y1 - y0) * s.pixel_spacing[0] < 25 and 4 <= (x1 - x0) * s.pixel_spacing[1] < 35
        for pts in s.landmarks.values():
            for r, c in pts.values():
                assert 0 <= r < h and 0 <= c < w


def test_herniation_flags_and_rate(full: dict[tuple[int, bool], AltStudy]) -> None:
    discs = [d for s in full.values() for d in s.discs]
    for d in discs:
        assert d.herniated == (d.protrusion_mm >= 1.5)
        assert d.kind in ("normal", "bulge", "protrusion", "extrusion", "dark")
        assert (d.protrusion_mm == 0) == (d.kind in ("normal", "dark"))
        if d.kind == "bulge":
            assert 0.3 <= d.protrusion_mm <= 1.2
    rate = np.mean([d.herniated for d in discs])
    assert 0.2 < rate < 0.55
    assert len({d.level for d in discs if d.herniated}) >= 4
    hard = [d.protrusion_mm for (_, h), s in full.items() if h for d in s.discs if d.herniated]
    assert max(hard) <= 3.0


def test_lateral_slices_cut_fewer_discs(full: dict[tuple[int, bool], AltStudy]) -> None:
    for s in full.values():
        m = mid(s)
        count = [sum(k in d.boxes for d in s.discs) for k in range(len(s.slice_positions))]
        assert count[0] < count[m] and count[-1] < count[m]
        for d in s.discs:
            if d.protrusion_mm == 0 and m in d.boxes:  # a normal disc is cut shorter laterally
                width = {k: x1 - x0 for k, (x0, _, x1, _) in d.boxes.items()}
                assert all(width[k] <= width[m] + 1.0 for k in (0, len(s.slice_positions) - 1) if k in width)


def test_protrusion_by_slice_per_disc(full: dict[tuple[int, bool], AltStudy]) -> None:
    for s in full.values():
        for d in s.discs:
            values = d.protrusion_by_slice
            assert set(values) == set(d.boxes) and all(v >= 0 for v in values.values())
            assert max(values.values()) <= d.protrusion_mm + 1e-6
            if d.kind in ("normal", "dark"):
                assert all(v == 0 for v in values.values())
            elif d.kind == "bulge":  # a bulge is drawn on every slice that cuts the disc
                assert all(v == pytest.approx(d.protrusion_mm, abs=1e-3) for v in values.values())


def test_protrusion_by_slice_follows_the_herniation() -> None:
    centre_checked = lateral_checked = 0
    for seed, hard in [(s, h) for s in range(4) for h in (False, True)]:
        sc = make_scene(seed, hard)
        hern = [g for g in sc.anatomy.discs if g.level in LEVELS and g.herniated]
        pos: list[float] = []
        for g in hern:
            zc = g.hern_z + disc_offset(g, sc.lines)
            pos += [zc, zc - g.hern_w - 1.5, zc + g.hern_w + 1.5]
        if not pos:
            continue
        study = make_study(seed, hard, positions=pos)
        by_level = {d.level: d for d in study.discs}
        for i, g in enumerate(hern):
            d = by_level[g.level]
            centre = d.protrusion_by_slice[3 * i]  # the slice through the herniation's centre
            assert centre >= 1.5 and centre == pytest.approx(d.protrusion_mm, abs=2e-3)
            centre_checked += 1
            for k in (3 * i + 1, 3 * i + 2):  # beyond its lateral extent: nothing protrudes
                if k in d.protrusion_by_slice:
                    assert d.protrusion_by_slice[k] == 0.0
                    lateral_checked += 1
    assert centre_checked >= 5 and lateral_checked >= 3


@pytest.mark.parametrize("seed", [0, 3])
def test_protrusion_by_slice_agrees_with_the_drawn_disc(seed: int) -> None:
    """At mid-height, the disc painted on a 0.05 mm grid reaches the reported displacement beyond the line."""
    sc = make_scene(seed, False)
    checked = 0
    for g in sc.anatomy.discs[:6]:
        if g.migration != 0:  # a migrated extrusion reaches past the corners, beside the annulus' endplate ends
            continue
        for dz in (0.0, 0.6 * g.hern_w):
            zd = g.hern_z + dz
            value = disc_protrusion(g, sc.lines, zd + disc_offset(g, sc.lines))
            if value is None:
                continue
            q = g.quad(lateral_factor(zd, g.half_width))
            ctr = q.mean(axis=0)
            grid = Grid(400, 500, (0.05, 0.05), (float(ctr[0]) - 10.0, float(ctr[1]) - 5.0))
            canvas = np.zeros((grid.rows, grid.cols), dtype=np.float32)
            done = paint_discs(canvas, sc.anatomy, grid, sc.lines, sc.contrast, zd + disc_offset(g, sc.lines))
            (r0, r1, c0, c1), alpha = done[g.level]
            rr, cc = np.nonzero(alpha >= 0.5)
            line = (q[2] - q[1]) / np.hypot(*(q[2] - q[1]))
            normal = np.array([-line[1], line[0]]) * np.sign(np.dot([-line[1], line[0]], axes(g.upper.theta)[1]))
            disp = (grid.ys[r0:r1][rr] - q[1][0]) * normal[0] + (grid.xs[c0:c1][cc] - q[1][1]) * normal[1]
            along = (grid.ys[r0:r1][rr] - q[1][0]) * line[0] + (grid.xs[c0:c1][cc] - q[1][1]) * line[1]
            inner = np.abs(along - np.hypot(*(q[2] - q[1])) / 2) <= 0.25  # mid-height: bulge and herniation peak
            assert max(float(disp[inner].max()), 0.0) == pytest.approx(value, abs=0.1)
            checked += 1
    assert checked >= 4


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_csf_brighter_than_cord_and_nucleus_brighter_than_annulus(seed: int) -> None:
    sc = make_scene(seed, False, positions=[0.0])
    img, _ = clean_slice(sc, 0.0, voids=False)
    cb = canal_bounds(sc.anatomy, sc.lines, 0.0)
    g = sc.grid
    cord, csf = [], []
    for body in sc.anatomy.bodies[1:5]:
        for r in range(
            int((body.centre[0] - g.origin[0]) / g.spacing[0]) - 2,
            int((body.centre[0] - g.origin[0]) / g.spacing[0]) + 3,
        ):
            edges = [cb[k][r] for k in ("sac_lo", "cord_lo", "cord_hi", "sac_hi")]
            s0, c0, c1, s1 = ((np.array(edges) - g.origin[1]) / g.spacing[1]).tolist()
            cord += img[r, int(np.ceil(c0 + 1)) : int(c1 - 1)].tolist()  # whole pixels inside the masks
            csf += img[r, int(np.ceil(s0 + 1)) : int(c0 - 1)].tolist()
            csf += img[r, int(np.ceil(c1 + 1)) : int(s1 - 1)].tolist()
    assert len(cord) >= 40 and len(csf) >= 5
    assert np.mean(csf) > np.mean(cord) + 0.2
    for disc in sc.anatomy.discs[:6]:
        if disc.kind == "dark" or disc.nucleus < 0.3:
            continue
        q = disc.quad(1.0)
        centre = q.mean(axis=0)
        ant = (q[0] + q[3]) / 2 * 0.8 + centre * 0.2
        px = [
            (int((p[0] - g.origin[0]) / g.spacing[0]), int((p[1] - g.origin[1]) / g.spacing[1])) for p in (centre, ant)
        ]
        nucleus, annulus = (img[r - 1 : r + 2, c - 1 : c + 2].mean() for r, c in px)
        assert nucleus > annulus + 0.1


def test_routine_noise_is_moderate() -> None:
    s = make_study(2, False, positions=[0.0])
    sc = make_scene(2, False, positions=[0.0])
    bg = s.volume[0][:, -8:]  # posterior air outside the neck
    assert bg.mean() < 0.2 * s.volume[0].max()
    assert sc.contrast["csf"] == max(sc.contrast.values())


def test_studies_routine_then_hard() -> None:
    out = list(studies(2, 1, seed=7))
    assert [s.hard for s in out] == [False, False, True]
    assert len({s.seed for s in out}) == 3
    again = next(studies(1, 0, seed=7))
    assert np.array_equal(again.volume, out[0].volume)


def test_imports_only_numpy_stdlib_and_itself() -> None:
    allowed = set(sys.stdlib_module_names) | {"numpy", "__future__"}
    for path in PACKAGE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level > 0:
                    continue  # relative: the package itself
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] in allowed, f"{path.name} imports {name}"


def test_development_seeds_are_never_training_draws_and_discs_are_found_by_level() -> None:
    from detector.altgen import TRAINING_SEEDS, development_seed

    seeds = [development_seed(9400, i) for i in range(50)]
    assert len(set(seeds)) == 50 and min(seeds) >= TRAINING_SEEDS  # training draws rng.integers(TRAINING_SEEDS)
    assert development_seed(9400, 3) == seeds[3]
    study = make_study(5, hard=False, positions=(0.0,))
    for disc in study.discs:
        assert study.disc(disc.level) is disc
    assert study.disc("L4-L5") is None
