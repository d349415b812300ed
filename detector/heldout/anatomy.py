"""The spine of one held-out study: vertebrae C2..T6, discs, their pathology.

Built as a chain from C2 down: each vertebral body is a box (height, AP depth, transverse width)
on the curve of the spine; each disc between two bodies has a centre height and a wedge angle;
summing the wedge angles gives the lordosis (cervical) and kyphosis (thoracic). A listhesis
shifts every vertebra below a disc by a few mm along the AP axis. Sizes are typical adult
values (mm) scaled per study.

The herniation definition (``Hernia.depth``): the largest focal displacement of disc material
behind the line joining the posterior margins of the two adjacent vertebral bodies. Diffuse
bulges (``Disc.bulge``) span the disc's whole width and are not herniations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.heldout.shapes import Rigid

VERTEBRAE = ("C2", "C3", "C4", "C5", "C6", "C7", "T1", "T2", "T3", "T4", "T5", "T6")
DISC_LEVELS = tuple(f"{a}-{b}" for a, b in zip(VERTEBRAE, VERTEBRAE[1:]))
REPORTED_LEVELS = DISC_LEVELS[:6]  # C2-C3 .. C7-T1

_HEIGHT = (16.0, 13.5, 13.5, 13.6, 13.6, 14.5, 16.0, 17.0, 17.5, 18.0, 18.5, 19.0)
_DEPTH = (15.5, 15.5, 15.8, 16.2, 16.8, 16.6, 17.0, 18.0, 19.0, 21.0, 23.0, 25.0)
_WIDTH = (17.0, 17.0, 18.0, 19.5, 21.0, 24.0, 27.0, 28.0, 28.0, 28.0, 29.0, 30.0)
_SPINOUS = (24.0, 16.0, 16.0, 17.0, 21.0, 30.0, 34.0, 36.0, 36.0, 35.0, 34.0, 34.0)
_SPINOUS_TILT = (15.0, 20.0, 22.0, 24.0, 25.0, 25.0, 35.0, 45.0, 55.0, 60.0, 60.0, 60.0)
_HERNIA_WEIGHT = (0.065, 0.26, 0.39, 0.65, 0.585, 0.13)  # per reported level, in a positive study


@dataclass(frozen=True)
class Vertebra:
    """A vertebral body (centre, axis angle ``phi`` from the caudal direction towards posterior)
    and the sizes of its posterior elements."""

    name: str
    x: float
    y: float
    phi: float
    height: float
    depth: float
    width: float
    z: float
    marrow_gain: float
    canal: float  # AP depth of the canal behind the body (to the laminae)
    spinous: float  # spinous process length
    spinous_tilt: float  # radians below the AP axis

    @property
    def frame(self) -> Rigid:
        return Rigid(self.x, self.y, self.phi)


@dataclass(frozen=True)
class Hernia:
    """Focal disc material behind the posterior line: ``depth`` (mm beyond it), lateral centre
    ``z`` (relative to the disc) and half-width, extent along the line, and the kind.
    An extrusion has a lobe ``shift`` mm along the line (cranial < 0 < caudal) and a neck."""

    depth: float
    z: float
    half_width: float
    half_height: float
    kind: str  # "protrusion" | "extrusion"
    shift: float = 0.0
    neck: float = 0.0
    gain: float = 1.0

    def lateral(self, dz: np.ndarray | float) -> np.ndarray:
        """Depth profile across the body (mm) at lateral offsets ``dz`` from the disc centre."""
        q = np.clip((np.asarray(dz, float) - self.z) / self.half_width, -1.0, 1.0)
        return self.depth * np.sqrt(1.0 - q * q)


@dataclass(frozen=True)
class Disc:
    """The disc below vertebra ``upper``: centre height, diffuse bulge, desiccation (0-1),
    herniation, osteophytes (posterior / anterior spur sizes, mm) and its posterior spur's
    lateral half-width."""

    level: str
    upper: int
    height: float
    angle: float  # wedge angle (radians), lordotic > 0
    bulge: float
    dark: float
    hernia: Hernia | None
    spur_post: float = 0.0
    spur_ant: float = 0.0
    spur_hw: float = 6.0
    modic: int = 0  # 0 none, 1 edema (T2 bright), 2 fatty

    @property
    def herniated(self) -> bool:
        return self.hernia is not None

    @property
    def kind(self) -> str:
        if self.hernia is not None:
            return self.hernia.kind
        return "bulge" if self.bulge >= 0.3 else "normal"

    @property
    def protrusion(self) -> float:
        return self.hernia.depth if self.hernia is not None else self.bulge


@dataclass(frozen=True)
class Spine:
    vertebrae: tuple[Vertebra, ...]
    discs: tuple[Disc, ...]
    lordosis: float  # degrees, C2-C7 (negative: kyphotic)
    listhesis: tuple[str, float] | None  # (disc level, mm the lower spine moved posteriorly)
    dens_height: float
    dens_width: float
    cord_ap: float
    cord_hw: float
    sac_hw: float
    epidural: float  # posterior epidural fat thickness
    hemangioma: tuple[int, float, float, float] | None  # vertebra, a, b, radius (body frame)
    flavum: tuple[int, float] | None  # vertebra whose ligamentum flavum is thickened, by mm


def _hernia(rng: np.random.Generator, hard: bool, disc_h: float) -> Hernia:
    depth = rng.uniform(1.5, 3.5) if hard else rng.uniform(2.0, 6.0)
    z = rng.uniform(-1.5, 1.5) if rng.random() < 0.4 else rng.choice([-1.0, 1.0]) * rng.uniform(2.5, 6.5)
    hw = rng.uniform(2.5, 7.0) if hard else rng.uniform(3.0, 10.0)
    gain = rng.uniform(0.55, 1.4)
    if depth >= (2.5 if hard else 3.0) and rng.random() < (0.15 if hard else 0.3):
        shift = rng.choice([-1.0, 1.0]) * (disc_h / 2 + rng.uniform(1.0, 5.0))
        return Hernia(depth, z, hw, rng.uniform(2.5, 4.5), "extrusion", shift, depth * rng.uniform(0.4, 0.7), gain)
    return Hernia(depth, z, hw, disc_h / 2 + rng.uniform(0.5, 2.0), "protrusion", gain=gain)


def _herniated_levels(rng: np.random.Generator) -> set[int]:
    """Indices of herniated discs: none in ~15% of studies, else per-level draws (C5-C6 and
    C6-C7 most often), plus an occasional upper thoracic one."""
    out: set[int] = set()
    if rng.random() >= 0.15:
        out = {i for i, w in enumerate(_HERNIA_WEIGHT) if rng.random() < w}
    if rng.random() < 0.1:
        out.add(int(rng.integers(6, 8)))  # T1-T2 or T2-T3
    return out


def sample_spine(rng: np.random.Generator, hard: bool) -> Spine:
    """Draw the spine of one study (C2 body centre at the origin before a global rotation)."""
    n = len(VERTEBRAE)
    scale = float(np.clip(rng.normal(1.0, 0.07), 0.86, 1.15))

    def jit(base: tuple[float, ...], sd: float = 0.04) -> np.ndarray:
        return np.asarray(base) * scale * (1.0 + rng.normal(0.0, sd, len(base)))

    heights, depths, widths = jit(_HEIGHT), jit(_DEPTH), jit(_WIDTH, 0.05)
    canal_c = rng.normal(13.0, 1.5) if hard else rng.normal(14.5, 1.2)
    canal = np.clip(canal_c + rng.normal(0, 0.6, n), 10.0, 18.0)
    canal[0] = max(canal[0], 15.5 + rng.uniform(0, 2.0))
    canal[6:] = np.clip(rng.normal(14.0, 0.8, n - 6), 12.0, 16.0)

    # discs: heights, wedge angles, pathology
    lordosis = float(np.clip(rng.normal(12.0, 14.0) if hard else rng.normal(18.0, 10.0), -20.0, 42.0))
    angles = np.radians(
        np.concatenate([lordosis / 5.0 + rng.normal(0.0, 2.5, 5), [rng.normal(2.0, 3.0)], -rng.normal(4.0, 1.5, n - 7)])
    )
    if rng.random() < (0.25 if hard else 0.12):  # a local kyphotic segment
        angles[int(rng.integers(1, 5))] -= np.radians(rng.uniform(6.0, 11.0))
    herniated = _herniated_levels(rng)
    p_dark, p_spur, p_bulge = (0.4, 0.3, 0.55) if hard else (0.2, 0.08, 0.35)
    discs: list[Disc] = []
    for i, level in enumerate(DISC_LEVELS):
        cervical = i < 6
        h = (rng.normal(5.2, 0.6) if i < 5 else rng.normal(4.6, 0.5) if i == 5 else rng.normal(3.8, 0.5)) * scale
        h = float(np.clip(h, 2.8, 7.0))
        dark = 0.0
        pd = p_dark * (1.5 if i in (3, 4) else 1.0) * (1.5 if i in herniated else 1.0) * (1.0 if cervical else 0.4)
        if rng.random() < pd:
            dark = rng.uniform(0.5, 1.0)
            h *= 1.0 - 0.45 * dark
        bulge = rng.uniform(0.3, 1.2) if rng.random() < p_bulge else rng.uniform(0.0, 0.25)
        hernia = _hernia(rng, hard, h) if i in herniated else None
        spur_p = rng.uniform(0.8, 2.5) if hard else rng.uniform(0.6, 1.8)
        spur_post = spur_p if rng.random() < p_spur * (2.0 if dark else 1.0) else 0.0
        spur_ant = rng.uniform(1.5, 5.0) if rng.random() < (0.35 if hard else 0.15) * (2.0 if dark else 1.0) else 0.0
        modic = int(rng.integers(1, 3)) if dark and rng.random() < (0.4 if hard else 0.2) else 0
        discs.append(
            Disc(level, i, h, float(angles[i]), bulge, dark, hernia, spur_post, spur_ant, rng.uniform(4.0, 10.0), modic)
        )

    listhesis = None
    if rng.random() < (0.3 if hard else 0.12):
        j = int(rng.integers(1, 5))
        listhesis = (DISC_LEVELS[j], float(rng.choice([-1.0, 1.0]) * rng.uniform(1.5, 4.0 if hard else 3.5)))

    # the chain
    sc_amp, sc_phase = rng.uniform(0, 4.0 if hard else 2.0), rng.uniform(0, 2 * np.pi)
    xs, ys, phis = [0.0], [0.0], [0.0]
    for i in range(1, n):
        d, phi = discs[i - 1], phis[-1]
        hd = d.height
        bx, by = xs[-1] + np.sin(phi) * heights[i - 1] / 2, ys[-1] + np.cos(phi) * heights[i - 1] / 2
        mid = phi + d.angle / 2
        mx, my = bx + np.sin(mid) * hd / 2, by + np.cos(mid) * hd / 2
        nphi = phi + d.angle
        tx, ty = mx + np.sin(nphi) * hd / 2, my + np.cos(nphi) * hd / 2
        cx, cy = tx + np.sin(nphi) * heights[i] / 2, ty + np.cos(nphi) * heights[i] / 2
        if listhesis and listhesis[0] == d.level:
            cx, cy = cx + np.cos(nphi) * listhesis[1], cy - np.sin(nphi) * listhesis[1]
        xs.append(float(cx))
        ys.append(float(cy))
        phis.append(float(nphi))
    xs_a, ys_a, phis_a = np.array(xs), np.array(ys), np.array(phis)
    target = np.radians(rng.uniform(-12.0, 16.0))  # inclination of the C2 -> T1 line
    rot = target - np.arctan2(xs_a[6] - xs_a[0], ys_a[6] - ys_a[0])
    c, s = np.cos(rot), np.sin(rot)
    xs_a, ys_a = xs_a * c + ys_a * s, -xs_a * s + ys_a * c
    phis_a = phis_a + rot

    spinous, tilt = jit(_SPINOUS, 0.08), np.radians(np.asarray(_SPINOUS_TILT) + rng.normal(0, 4, n))
    verts = tuple(
        Vertebra(
            VERTEBRAE[i],
            float(xs_a[i]),
            float(ys_a[i]),
            float(phis_a[i]),
            float(heights[i]),
            float(depths[i]),
            float(widths[i]),
            float(sc_amp * np.sin(i * 0.5 + sc_phase)),
            float(rng.uniform(0.85, 1.15)),
            float(canal[i]),
            float(spinous[i]),
            float(tilt[i]),
        )
        for i in range(n)
    )
    hemangioma = None
    if rng.random() < (0.3 if hard else 0.2):
        k = int(rng.integers(0, 8))
        v = verts[k]
        r = rng.uniform(2.0, 5.0) * scale
        hemangioma = (
            k,
            rng.uniform(-v.depth / 2 + r + 1, v.depth / 2 - r - 1),
            rng.uniform(-1, 1) * (v.height / 2 - r - 1),
            r,
        )
    flavum = (
        (int(rng.integers(1, 6)), float(rng.uniform(1.5, 3.5))) if rng.random() < (0.35 if hard else 0.15) else None
    )
    cord_ap = float(rng.uniform(6.0, 8.0) if hard else rng.uniform(6.5, 8.5))
    return Spine(
        vertebrae=verts,
        discs=tuple(discs),
        lordosis=lordosis,
        listhesis=listhesis,
        dens_height=float(rng.uniform(13.0, 17.0) * scale),
        dens_width=float(rng.uniform(9.0, 11.0) * scale),
        cord_ap=cord_ap,
        cord_hw=float(rng.uniform(5.3, 6.5)),
        sac_hw=float(rng.uniform(9.0, 11.0)),
        epidural=float(rng.uniform(0.8, 2.5)),
        hemangioma=hemangioma,
        flavum=flavum,
    )
