"""make_study / studies: protocol, slice rendering with partial volume, acquisition and ground truth."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .anatomy import Anatomy, DiscGeom, lateral_factor, sample_anatomy
from .canal import Voids, paint_canal
from .grid import Grid, smooth_noise
from .physics import Acquisition, acquire, bias_field, sample_acquisition, sample_contrast
from .soft import Lines, make_lines, paint_brainstem, paint_fossa, paint_head, paint_soft
from .spec import LEVELS, AltStudy, Box, Disc
from .spine import disc_protrusion, paint_bones, paint_discs


@dataclass(frozen=True)
class Protocol:
    """Field of view, matrix and slices."""

    fov: tuple[float, float]
    matrix: tuple[int, int]
    thickness: float
    gap: float
    positions: tuple[float, ...]
    fat_sat: bool
    low_start: bool


def sample_protocol(rng: np.random.Generator, hard: bool, n_slices: int | None) -> Protocol:
    rows = int(rng.choice([256, 320, 384, 448, 512]))
    low = rng.random() < 0.15
    fov_h = float(rng.uniform(180, 200) if low else rng.uniform(200, 300))
    spacing = fov_h / rows
    aspect = 1.0 if rng.random() < 0.5 else rng.uniform(0.75, 1.0)
    cols = int(max(256, min(512, 16 * round(rows * aspect / 16))))
    n = int(n_slices if n_slices is not None else rng.integers(11, 21))
    gap = float(rng.uniform(0.0, 0.5)) if rng.random() < 0.5 else 0.0
    cover = rng.uniform(42.0, 62.0)  # mm of lateral coverage
    thick = float(np.clip(min(rng.uniform(2.5, 4.0), cover / n - gap), 2.5, 4.0))
    centre = float(rng.normal(0.0, 3.0 if hard else 1.5))
    pos = tuple(centre + (i - (n - 1) / 2) * (thick + gap) for i in range(n))
    fs = bool(rng.random() < 0.35)
    return Protocol((fov_h, cols * spacing), (rows, cols), thick, gap, pos, fs, bool(low))


def _place(rng: np.random.Generator, a: Anatomy, proto: Protocol, hard: bool) -> Grid:
    """Where the field of view sits on the anatomy (anatomy mm of the image's top-left corner)."""
    fov_h, fov_w = proto.fov
    t1_bottom = float(a.bodies[6].corners()[[2, 3], 0].max())
    top = a.dens[1][0] - rng.uniform(5, 15) if proto.low_start else -rng.uniform(15, 60)
    top = max(top, min(t1_bottom + rng.uniform(0, 25) - fov_h, a.dens[1][0] - 5))
    c4 = a.bodies[2].corners()
    x_ant = float(c4[[0, 3], 1].mean())
    frac = rng.uniform(0.2, 0.55) if hard else rng.uniform(0.3, 0.5)
    left = x_ant - frac * fov_w
    sp = fov_h / proto.matrix[0]
    return Grid(proto.matrix[0], proto.matrix[1], (sp, proto.fov[1] / proto.matrix[1]), (top, left))


def _sub_planes(z: float, thick: float, n: int) -> list[float]:
    return [z + thick * ((j + 0.5) / n - 0.5) for j in range(n)]


def _render_slice(
    a: Anatomy,
    grid: Grid,
    ln: Lines,
    con: dict[str, float],
    base: np.ndarray,
    marrow: np.ndarray,
    z: float,
    thick: float,
    n_sub: int,
    voids: Voids,
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Noise-free slice averaged over sub-planes, and each disc's visible coverage (full image)."""
    acc = np.zeros_like(base)
    cover: dict[str, np.ndarray] = {}
    for zs in _sub_planes(z, thick, n_sub):
        canvas = base.copy()
        occ = np.zeros_like(base)
        paint_brainstem(canvas, a, grid, ln, con, zs)
        paint_fossa(canvas, a, grid, con, zs - float(np.interp(a.basion[0], ln.y, ln.zoff)))
        paint_canal(canvas, a, grid, ln, con, zs, voids)
        discs = paint_discs(canvas, a, grid, ln, con, zs)
        paint_bones(canvas, occ, a, grid, ln, con, zs, marrow)
        acc += canvas
        for level, ((r0, r1, c0, c1), alpha) in discs.items():
            vis = alpha * (1.0 - occ[r0:r1, c0:c1])
            full = cover.setdefault(level, np.zeros_like(base))
            full[r0:r1, c0:c1] += vis / n_sub
    return acc / n_sub, cover


def _disc_truth(cover: np.ndarray) -> tuple[Box, tuple[float, float]] | None:
    mask = cover >= 0.5
    if mask.sum() < 4:
        return None
    rows, cols = np.nonzero(mask)
    w = cover[rows, cols]
    centre = (float((rows + 0.5) @ w / w.sum()), float((cols + 0.5) @ w / w.sum()))
    box = (float(cols.min()), float(rows.min()), float(cols.max() + 1), float(rows.max() + 1))
    return box, centre


def _confounders(disc: DiscGeom) -> tuple[str, ...]:
    """A disc's degenerative confounders, named as ``detector.heldout`` names them."""
    drawn = (("osteophyte", disc.osteophyte > 0), ("dark", disc.nucleus < 0.15))
    return tuple(name for name, on in drawn if on)


def _slice_protrusion(disc: DiscGeom, ln: Lines, z: float, thick: float, n_sub: int) -> float:
    """Displacement on the slice's centre plane, or on its nearest sub-plane that cuts the disc."""
    for zs in sorted([z, *_sub_planes(z, thick, n_sub)], key=lambda p: abs(p - z)):
        value = disc_protrusion(disc, ln, zs)
        if value is not None:
            return round(value, 3)
    return 0.0


def _landmarks(a: Anatomy, grid: Grid, ln: Lines, z: float) -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}

    def put(name: str, pt: tuple[float, float], present: bool) -> None:
        if present and grid.inside(*pt):
            out[name] = grid.to_pixel(*pt)

    def zr(y: float) -> float:
        return z - float(np.interp(y, ln.y, ln.zoff))

    for b, post in zip(a.bodies[:8], a.posts[:8]):
        put(f"body:{b.name}", b.centre, lateral_factor(zr(b.centre[0]), b.half_width) >= 0.15)
        if b.name != "T2":
            put(f"spinous:{b.name}", post.spin_tip, lateral_factor(zr(b.centre[0]), post.spin_hw) > 0.2)
    base, tip, r = a.dens
    put("dens", ((base[0] + tip[0]) / 2, (base[1] + tip[1]) / 2), lateral_factor(zr(tip[0]), r + 1.0) > 0.2)
    put("c1_arch", a.c1_ant[0], lateral_factor(zr(tip[0]), 9.0) > 0.2)
    put("clivus", a.basion, abs(zr(a.basion[0])) <= 14.0 * np.sqrt(1 - 0.2**2))
    return out


@dataclass(frozen=True, eq=False)
class Scene:
    """Everything fixed for one (seed, hard, n_slices, positions) before slices are rendered."""

    anatomy: Anatomy
    protocol: Protocol
    positions: tuple[float, ...]
    grid: Grid
    contrast: dict[str, float]
    acquisition: Acquisition
    lines: Lines
    base: np.ndarray  # z-independent soft tissues and head, noise-free
    tex: tuple[np.ndarray, np.ndarray]
    bias: np.ndarray
    voids: Voids


def make_scene(seed: int, hard: bool, n_slices: int | None = None, positions: Sequence[float] | None = None) -> Scene:
    """Anatomy, protocol, contrast and acquisition of a study (the anatomy depends on seed, hard only)."""
    ss = np.random.SeedSequence([int(seed), int(bool(hard)), 0xA17])
    r_anat, r_proto, r_place, r_con, r_phys, r_tex = (np.random.default_rng(s) for s in ss.spawn(6))
    a = sample_anatomy(r_anat, hard)
    proto = sample_protocol(r_proto, hard, n_slices)
    pos = tuple(float(p) for p in positions) if positions is not None else proto.positions
    grid = _place(r_place, a, proto, hard)
    con = sample_contrast(r_con, hard, proto.fat_sat)
    acq = sample_acquisition(r_phys, hard, min(grid.spacing))
    ln = make_lines(a, grid)
    shape = (grid.rows, grid.cols)
    tex = smooth_noise(r_tex, shape, 3.0 / min(grid.spacing))
    tex2 = smooth_noise(r_tex, shape, 1.5 / min(grid.spacing))
    base = np.zeros(shape, dtype=np.float32)
    paint_soft(base, a, grid, ln, con, tex)
    paint_head(base, a, grid, ln, con, tex)
    bias = bias_field(r_tex, shape, grid.xs, ln.skin.astype(np.float32), acq, min(grid.spacing))
    n_voids = int(r_phys.integers(0, 4 if hard else 2)) if r_phys.random() < 0.7 else 0
    voids: Voids = tuple(
        (
            float(r_phys.uniform(a.bodies[0].centre[0], a.bodies[5].centre[0])),
            float(r_phys.uniform(3, 9)),
            float(r_phys.uniform(0.4, 0.9)),
        )
        for _ in range(n_voids)
    )
    return Scene(a, proto, pos, grid, con, acq, ln, base, (tex, tex2), bias, voids)


def clean_slice(sc: Scene, z: float, voids: bool = True) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Noise-free slice at lateral position z (mm), before acquisition, and the discs' coverage."""
    phase = np.pi * z / 9.0
    tex, tex2 = sc.tex
    marrow = sc.contrast["marrow"] * (1 + 0.14 * (np.cos(phase) * tex2 + np.sin(phase) * tex))
    return _render_slice(
        sc.anatomy,
        sc.grid,
        sc.lines,
        sc.contrast,
        sc.base,
        marrow,
        z,
        sc.protocol.thickness,
        sc.acquisition.sub_planes,
        sc.voids if voids else (),
    )


def make_study(
    seed: int, hard: bool, n_slices: int | None = None, positions: Sequence[float] | None = None
) -> AltStudy:
    """One synthetic sagittal T2 study; deterministic in its arguments. ``positions`` (mm) replaces
    the protocol's slices, the anatomy and contrast staying those of (seed, hard)."""
    sc = make_scene(seed, hard, n_slices, positions)
    a, grid, ln, con, acq, proto, pos, voids = (
        sc.anatomy,
        sc.grid,
        sc.lines,
        sc.contrast,
        sc.acquisition,
        sc.protocol,
        sc.positions,
        sc.voids,
    )
    shape = (grid.rows, grid.cols)
    vol = np.zeros((len(pos), *shape), dtype=np.float32)
    covers: list[dict[str, np.ndarray]] = []
    landmarks: dict[int, dict[str, tuple[float, float]]] = {}
    for k, z in enumerate(pos):
        obj, cover = clean_slice(sc, z)
        r_noise = np.random.default_rng([int(seed), int(bool(hard)), int(round(z * 1000)) & 0xFFFFFFFF])
        vol[k] = acquire(obj, sc.bias, acq, r_noise)
        covers.append(cover)
        landmarks[k] = _landmarks(a, grid, ln, z)
    discs = []
    for geom in a.discs:
        if geom.level not in LEVELS:
            continue
        boxes: dict[int, Box] = {}
        centres: dict[int, tuple[float, float]] = {}
        for k, cover in enumerate(covers):
            found = _disc_truth(cover[geom.level]) if geom.level in cover else None
            if found is not None:
                boxes[k], centres[k] = found
        if boxes:
            by_slice = {k: _slice_protrusion(geom, ln, pos[k], proto.thickness, acq.sub_planes) for k in sorted(boxes)}
            discs.append(
                Disc(
                    geom.level,
                    geom.herniated,
                    round(geom.protrusion_mm, 3),
                    geom.kind,
                    boxes,
                    centres,
                    by_slice,
                    _confounders(geom),
                )
            )
    meta = {
        "generator": "altgen",
        "fov_mm": proto.fov,
        "matrix": proto.matrix,
        "slice_thickness_mm": proto.thickness,
        "slice_gap_mm": proto.gap,
        "sequence": "T2 FSE" + (" fat-sat" if proto.fat_sat else ""),
        "fat_sat": proto.fat_sat,
        "acquired_fraction": acq.keep,
        "phase_axis": "rows" if acq.phase_axis == 0 else "columns",
        "motion_ghosts": acq.ghost > 0,
        "noise_sigma_rel_csf": acq.sigma,
        "flow_voids": len(voids),
        "lordosis_deg": float(np.degrees(a.lordosis)),
        "tilt_deg": float(np.degrees(a.tilt)),
        "low_start": proto.low_start,
        "contrast": dict(con),
        "gain": acq.gain,
    }
    return AltStudy(vol, grid.spacing, pos, bool(hard), int(seed), tuple(discs), landmarks, meta)


def studies(n_routine: int, n_hard: int, seed: int) -> Iterator[AltStudy]:
    """Routine studies then hard ones; study i is seeded from (seed, i)."""
    for i in range(n_routine + n_hard):
        sub = int(np.random.SeedSequence([int(seed), i]).generate_state(1)[0])
        yield make_study(sub, hard=i >= n_routine)
