"""One held-out study: protocol, anatomy, rendering, acquisition and ground truth.

``make_study(seed, hard)`` is deterministic in (seed, hard). ``studies(n_routine, n_hard,
seed)`` yields routine then hard studies, study i of each kind seeded from (seed, i).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detector.heldout.anatomy import REPORTED_LEVELS, Spine, sample_spine
from detector.heldout.body_scene import body_scene
from detector.heldout.discs import disc_frame, posterior_point
from detector.heldout.head_scene import sample_head
from detector.heldout.physics import Acquisition, acquire, bias_field, coil_map, posterior_edge
from detector.heldout.render import Plane, Rasterizer, rotation, texture, truth_boxes
from detector.heldout.spine_scene import canal_curve, spine_prims
from detector.heldout.tissues import Sequence, signals

Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class DiscTruth:
    """A disc in the field of view. ``boxes``: slice -> (x0, y0, x1, y1) pixels of the disc
    (annulus + any herniation) on every slice where it shows; ``protrusion_by_slice``: the
    posterior displacement beyond the line joining the adjacent bodies' posterior margins (mm)
    on that slice's centre plane."""

    level: str
    herniated: bool
    protrusion_mm: float
    kind: str  # "normal" | "bulge" | "protrusion" | "extrusion"
    boxes: dict[int, Box]
    protrusion_by_slice: dict[int, float]
    confounders: tuple[str, ...] = ()

    @property
    def reported(self) -> bool:
        return self.level in REPORTED_LEVELS


@dataclass(frozen=True, eq=False)
class HeldoutStudy:
    """A sagittal T2 study: ``volume`` [S, H, W] float32 (rows head -> feet, columns anterior ->
    posterior, slices by lateral position), its geometry and the ground truth."""

    volume: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_thickness: float
    slice_positions: tuple[float, ...]
    hard: bool
    seed: int
    discs: tuple[DiscTruth, ...]
    meta: dict[str, Any] = field(default_factory=dict)

    def boxes_on(self, k: int) -> list[tuple[DiscTruth, Box]]:
        """The discs showing on slice k with their boxes, cranial first."""
        return [(d, d.boxes[k]) for d in self.discs if k in d.boxes]

    @property
    def slice_boxes(self) -> tuple[tuple[tuple[str, Box, bool], ...], ...]:
        """Per slice: (level, box, herniated) of every disc on it."""
        return tuple(tuple((d.level, b, d.herniated) for d, b in self.boxes_on(k)) for k in range(self.volume.shape[0]))

    def disc(self, level: str) -> DiscTruth | None:
        return next((d for d in self.discs if d.level == level), None)


def study_seed(seed: int, i: int) -> int:
    """The seed of study ``i`` of a run seeded with ``seed``."""
    return int(np.random.SeedSequence([int(seed), int(i), 0x4E1D]).generate_state(1)[0])


def studies(n_routine: int, n_hard: int, seed: int, **kw: Any) -> Iterator[HeldoutStudy]:
    """``n_routine`` routine then ``n_hard`` hard studies (``kw``: ``make_study`` options).
    Study i of each kind is ``make_study(study_seed(seed, i), hard)``, so a smaller run is a
    subset of a larger one with the same seed."""
    for i in range(n_routine):
        yield make_study(study_seed(seed, i), hard=False, **kw)
    for i in range(n_hard):
        yield make_study(study_seed(seed, i), hard=True, **kw)


def _matrix(
    rng: np.random.Generator, hard: bool, matrix: int | tuple[int, int] | None
) -> tuple[tuple[int, int], tuple[float, float]]:
    """Display matrix (rows, cols) and pixel spacing (mm): field of view 200-280 mm each way."""
    fov_r = rng.uniform(200.0, 280.0)
    p = [0.35, 0.3, 0.25, 0.05, 0.05] if hard else [0.1, 0.15, 0.25, 0.15, 0.35]
    h = int(rng.choice([256, 320, 384, 448, 512], p=p))
    sp_r = fov_r / h
    sp_c = sp_r * (rng.uniform(1.04, 1.15) if hard and rng.random() < 0.25 else 1.0)
    w = h if rng.random() < 0.65 else int(round(h * rng.uniform(0.8, 0.95) / 16) * 16)
    w = int(np.clip(np.clip(w, int(np.ceil(200.0 / sp_c)), int(280.0 / sp_c)), 256, 512))
    sp_c = min(sp_c, 280.0 / w)
    if matrix is not None:
        fov_c = w * sp_c
        h, w = (matrix, matrix) if isinstance(matrix, int) else matrix
        return (h, w), (fov_r / h, fov_c / w)
    return (h, w), (sp_r, sp_c)


@dataclass(frozen=True)
class Protocol:
    """The acquisition of one study."""

    matrix: tuple[int, int]  # display (rows, cols)
    spacing: tuple[float, float]  # mm (row, col)
    thickness: float
    gap: float
    n_slices: int
    acquired: tuple[int, int]  # k-space lines (rows, cols)
    render: tuple[int, int]
    phase_axis: int
    sequence: Sequence
    yaw: float  # radians, about the vertical axis
    roll: float  # radians, about the AP axis

    @property
    def fov(self) -> tuple[float, float]:
        return self.matrix[0] * self.spacing[0], self.matrix[1] * self.spacing[1]


def sample_protocol(rng: np.random.Generator, hard: bool, matrix: int | tuple[int, int] | None = None) -> Protocol:
    """Field of view 200-280 mm, matrix 256-512, slices 2.5-4 mm (11-20 of them), T2 with or
    without fat saturation, a few degrees of obliquity; hard: coarser, thicker, more oblique."""
    (h, w), (sp_r, sp_c) = _matrix(rng, hard, matrix)
    thickness = float(rng.uniform(3.0, 4.0) if hard else rng.uniform(2.5, 3.5))
    gap = thickness * rng.uniform(0.0, 0.2)
    n_slices = int(rng.integers(11, 18) if hard else rng.integers(13, 21))
    base = rng.uniform(192, 288) if hard else rng.uniform(256, 384)
    phase_axis = int(rng.integers(1, 3))
    acq = [min(int(round(base)), n) for n in (h, w)]
    acq[phase_axis - 1] = min(int(round(base * rng.uniform(0.7, 1.0))), (h, w)[phase_axis - 1])
    if matrix is not None:  # tests: a small matrix, acquired at 3/4 of it
        acq = [int(round(n * 0.75)) for n in (h, w)]
    render = tuple(max(n, int(np.ceil(1.3 * a / 2) * 2)) for n, a in zip((h, w), acq))
    seq = Sequence(
        tr=float(rng.uniform(2500, 4500)),
        te=float(rng.uniform(75, 130) if hard else rng.uniform(85, 115)),
        fat_sat=bool(rng.random() < (0.45 if hard else 0.35)),
        fat_residual=float(rng.uniform(0.05, 0.35) if hard else rng.uniform(0.05, 0.2)),
    )
    yaw = np.radians(rng.uniform(1, 7) if hard else rng.uniform(0, 3)) * rng.choice([-1, 1])
    roll = np.radians(rng.uniform(1, 6) if hard else rng.uniform(0, 3)) * rng.choice([-1, 1])
    return Protocol(
        (h, w),
        (float(sp_r), float(sp_c)),
        thickness,
        float(gap),
        n_slices,
        (acq[0], acq[1]),
        (int(render[0]), int(render[1])),
        phase_axis,
        seq,
        float(yaw),
        float(roll),
    )


def make_study(
    seed: int, hard: bool = False, *, matrix: int | tuple[int, int] | None = None, herniations: bool = True
) -> HeldoutStudy:
    """Generate one study. ``matrix`` overrides the display matrix (tests; the field of view is
    kept, so pixels grow). ``herniations=False`` renders the same study with the herniated
    material left out (and no herniation in the ground truth)."""
    rng = np.random.default_rng([int(seed), int(bool(hard)), 0xC5])
    pr = sample_protocol(rng, hard, matrix)
    (h, w), (sp_r, sp_c), fov = pr.matrix, pr.spacing, pr.fov
    thickness, n_slices, spacing = pr.thickness, pr.n_slices, pr.thickness + pr.gap
    render, acq, seq = pr.render, pr.acquired, pr.sequence
    yaw, roll, phase_axis = pr.yaw, pr.roll, pr.phase_axis

    spine = sample_spine(rng, hard)
    head = sample_head(spine, rng)
    canal = canal_curve(spine, head.clivus_wall())
    body, _ = body_scene(spine, head, rng)
    prims = body + spine_prims(spine, canal, head.frame.y0, rng, hard, herniations)

    # field of view: skull base at the top, at least T1-T2 at the bottom, spine not centred
    v5 = spine.vertebrae[3]
    y_t12 = disc_frame(spine.vertebrae[6], spine.vertebrae[7]).y0
    basion_y = head.frame.y0
    lo, hi = max(y_t12 + 12.0 - fov[0], basion_y - 0.35 * fov[0]), basion_y - 15.0
    y_top = rng.uniform(lo, hi) if lo < hi else hi
    x_canal = float(v5.frame.world(v5.depth / 2 + v5.canal / 2, 0.0)[0])
    fx = rng.uniform(0.42, 0.66)
    z_mid = float(np.mean([v.z for v in spine.vertebrae[:6]])) + (rng.uniform(-4, 4) if hard else rng.uniform(-2, 2))
    center = np.array([x_canal + (0.5 - fx) * fov[1], y_top + fov[0] / 2, z_mid])
    offsets = (np.arange(n_slices) - (n_slices - 1) / 2) * spacing
    plane = Plane(render, (h, w), (sp_r, sp_c), center, rotation(yaw, roll), offsets, thickness)

    sig = signals(seq, rng, marrow_fat=float(rng.uniform(0.3, 0.7)))
    canvas = Rasterizer(plane, sig, texture(rng, plane)).paint(prims)

    # acquisition
    rows, cols = plane.rows_mm(), plane.cols_mm()
    coil_col = posterior_edge(canvas.image[n_slices // 2], cols) + 5.0
    sens = coil_map(
        rows,
        cols,
        coil_col,
        float(rng.uniform(80, 140) if hard else rng.uniform(120, 220)),
        float(rng.uniform(0.05, 0.2) if hard else rng.uniform(0.02, 0.1)),
        float(rng.uniform(0, 2 * np.pi)),
    )
    sens *= bias_field(rng, render, float(rng.uniform(0.15, 0.4) if hard else rng.uniform(0.05, 0.2)))
    canal_col = int(np.argmin(np.abs(cols - (x_canal - center[0]))))
    snr = float(rng.uniform(9, 18) if hard else rng.uniform(22, 50))
    sigma = sig["csf"] * float(sens[render[0] // 2, canal_col]) / snr
    csf_part = canvas.csf * np.float32(sig["csf"])
    static = (canvas.image - csf_part) * sens
    csf_part = csf_part * (1.0 - canvas.void) * sens
    acquisition = Acquisition(
        acquired=(acq[0], acq[1]),
        phase_axis=phase_axis,
        motion_mm=float(rng.uniform(0.2, 1.2) if hard else rng.uniform(0.0, 0.4)),
        motion_period=float(rng.uniform(4, 30)),
        jerk_mm=float(rng.uniform(1, 3) if rng.random() < (0.4 if hard else 0.15) else 0.0) * (1.0 if hard else 0.5),
        pulsation=float(rng.uniform(0.1, 0.4) if hard else rng.uniform(0.0, 0.15)),
        filter_alpha=float(0.0 if rng.random() < (0.7 if hard else 0.5) else rng.uniform(0.1, 0.5)),
        noise_sigma=sigma,
    )
    volume = acquire(static, csf_part, acquisition, (h, w), fov, rng)
    gain = float(10 ** rng.uniform(0.5, 3.5))
    volume *= np.float32(gain / max(sig["csf"], 1e-6))

    discs = _truth(spine, plane, canvas.truth, herniations)
    meta = dict(
        fov_mm=fov,
        matrix=(h, w),
        acquired=tuple(acq),
        render=render,
        phase_axis=phase_axis,
        tr=seq.tr,
        te=seq.te,
        fat_sat=seq.fat_sat,
        snr=snr,
        yaw_deg=float(np.degrees(yaw)),
        roll_deg=float(np.degrees(roll)),
        lordosis_deg=spine.lordosis,
        listhesis=spine.listhesis,
        slice_gap=spacing - thickness,
        gain=gain,
    )
    return HeldoutStudy(
        volume=volume,
        pixel_spacing=(float(sp_r), float(sp_c)),
        slice_thickness=thickness,
        slice_positions=tuple(float(center[2] + o) for o in offsets),
        hard=bool(hard),
        seed=int(seed),
        discs=discs,
        meta=meta,
    )


def _truth(spine: Spine, plane: Plane, parts: dict, herniations: bool) -> tuple[DiscTruth, ...]:
    out: list[DiscTruth] = []
    vs = spine.vertebrae
    for i, d in enumerate(spine.discs):
        boxes = truth_boxes(plane, parts.get(d.level, []))
        if not boxes:
            continue
        top = max(a for _, a in boxes.values())
        shown = {k: b for k, (b, a) in boxes.items() if a >= 0.3 * top and a >= 8.0}
        f = disc_frame(vs[i], vs[i + 1])
        row, col, _ = plane.to_pixel(np.array([f.x0, f.y0, (vs[i].z + vs[i + 1].z) / 2]))
        if not (1.0 <= row <= plane.display[0] - 1.0 and 0.0 <= col <= plane.display[1]) or not shown:
            continue
        hernia = d.hernia if herniations else None
        xq, yq = posterior_point(d, vs[i], vs[i + 1])
        zc = (vs[i].z + vs[i + 1].z) / 2
        prot: dict[int, float] = {}
        for k in shown:
            dz = plane.z_at(k, xq, yq) - zc
            p = float(hernia.lateral(dz)) if hernia is not None else 0.0
            prot[k] = round(max(p, d.bulge), 3)
        conf = tuple(
            n
            for n, on in (
                ("dark", d.dark > 0),
                ("osteophyte", d.spur_post > 0),
                ("anterior_spur", d.spur_ant > 0),
                ("modic", d.modic > 0),
                ("listhesis", bool(spine.listhesis and spine.listhesis[0] == d.level)),
            )
            if on
        )
        kind = d.kind if hernia is not None or d.hernia is None else ("bulge" if d.bulge >= 0.3 else "normal")
        size = hernia.depth if hernia else d.bulge
        out.append(
            DiscTruth(
                level=d.level,
                herniated=hernia is not None,
                protrusion_mm=round(size, 3),
                kind=kind,
                boxes=dict(sorted(shown.items())),
                protrusion_by_slice=dict(sorted(prot.items())),
                confounders=conf,
            )
        )
    return tuple(out)
