"""Random anatomy of the neck in millimetres: y caudal (head -> feet), x posterior, basion at (0, 0).

The spine is a chain of bodies whose axes turn from anterior-heading (C2) to posterior-heading
(C7) by the lordosis angle; discs fill the gaps between endplates. Lateral cuts shrink bodies and
discs by an elliptic axial profile, so parasagittal slices cut them shorter or miss them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .spec import ALL_BODIES, ALL_DISCS, HERNIATION_MM

Point = tuple[float, float]


def axes(theta: float) -> tuple[np.ndarray, np.ndarray]:
    """Unit axis (caudal) and posterior normal of a body tilted by theta (rad, + = heading posterior)."""
    return np.array([np.cos(theta), np.sin(theta)]), np.array([-np.sin(theta), np.cos(theta)])


def lateral_factor(z: float, half_width: float) -> float:
    """Fraction of a structure's sagittal depth left at lateral offset z (elliptic axial profile)."""
    q = 1.0 - (z / half_width) ** 2
    return float(np.sqrt(q)) if q > 0 else 0.0


@dataclass(frozen=True)
class Body:
    """A vertebral body: rounded quadrilateral with its own proportions and marrow."""

    name: str
    centre: Point
    theta: float
    height: float
    wedge: float  # anterior minus posterior height (mm)
    depth: float
    half_width: float
    marrow: str  # "normal" | "modic1" | "modic2" | "hemangioma"
    lesion: tuple[float, float, float]  # local (u, v, radius) of a hemangioma, or (side, band, 0) of Modic

    def corners(self, c: float = 1.0) -> np.ndarray:
        """Ant-sup, post-sup, post-inf, ant-inf corners (y, x) cut at lateral factor c."""
        d, p = axes(self.theta)
        front, back = -self.depth / 2 + 0.55 * self.depth * (1 - c), self.depth / 2 - 0.2 * self.depth * (1 - c)
        ha, hp = (self.height + self.wedge / 2) / 2, (self.height - self.wedge / 2) / 2
        o = np.array(self.centre)
        return np.array([o - d * ha + p * front, o - d * hp + p * back, o + d * hp + p * back, o + d * ha + p * front])


@dataclass(frozen=True)
class DiscGeom:
    """A disc between two bodies, with its degeneration and herniation."""

    level: str
    upper: Body
    lower: Body
    kind: str  # normal | bulge | protrusion | extrusion | dark
    bulge: float
    prot: float  # largest posterior displacement (mm) of a herniation, 0 if none
    hern_z: float  # lateral centre of the herniation (mm)
    hern_w: float  # lateral half-extent (mm)
    migration: float  # cranio-caudal shift of an extrusion (mm, + caudal)
    hern_len: float  # cranio-caudal half-length of the herniated material (mm)
    nucleus: float  # nucleus brightness relative to the study's nucleus value (0..1)
    osteophyte: float  # posterior corner osteophyte length (mm)
    half_width: float

    @property
    def protrusion_mm(self) -> float:
        return self.prot if self.prot > 0 else self.bulge

    @property
    def herniated(self) -> bool:
        return self.protrusion_mm >= HERNIATION_MM

    def quad(self, c: float) -> np.ndarray:
        """Ant-upper, post-upper, post-lower, ant-lower corners at lateral factor c."""
        up, lo = self.upper.corners(c), self.lower.corners(c)
        return np.array([up[3], up[2], lo[1], lo[0]])

    def prot_at(self, z: float) -> float:
        return self.prot * lateral_factor(z - self.hern_z, self.hern_w) if self.prot > 0 else 0.0


@dataclass(frozen=True)
class Posterior:
    """Posterior elements of one vertebra: lamina, spinous process and articular pillar."""

    name: str
    lamina: tuple[Point, Point]
    spin_base: Point
    spin_tip: Point
    spin_r: float
    spin_hw: float  # lateral half-width of the spinous process
    pillar: Point
    pillar_theta: float
    pillar_h: float
    facet: float  # facet inclination (rad)


@dataclass(frozen=True)
class Anatomy:
    """Everything the renderer draws, in anatomy mm."""

    bodies: tuple[Body, ...]
    discs: tuple[DiscGeom, ...]
    posts: tuple[Posterior, ...]
    dens: tuple[Point, Point, float]  # base, tip, radius
    c1_ant: tuple[Point, float, float]
    c1_post: tuple[Point, float, float]
    basion: Point
    clivus_top: Point
    clivus_r: float
    opisthion: Point
    cranium: tuple[Point, float, float]  # centre, vertical and AP semi-axes of the cranial cavity
    wall: np.ndarray  # [n, 3] (y, x_anterior_canal_wall, canal_ap) control points, increasing y
    front: np.ndarray  # [n, 2] (y, x) anterior vertebral line
    cord_ap: float
    sac_hw: float
    cord_hw: float
    canal_hw: float
    lateral: tuple[float, float]  # spine's mid-plane lateral offset at y=100 and its slope per 100 mm
    soft: dict[str, float]
    lordosis: float
    tilt: float


def _marrow(rng: np.random.Generator, hard: bool) -> tuple[str, tuple[float, float, float]]:
    r = rng.random()
    if r < (0.10 if hard else 0.05):
        return "modic1", (float(rng.choice([-1.0, 1.0])), float(rng.uniform(2.5, 5.0)), 0.0)
    if r < (0.22 if hard else 0.12):
        return "modic2", (float(rng.choice([-1.0, 1.0])), float(rng.uniform(2.5, 5.0)), 0.0)
    if r < (0.28 if hard else 0.17):
        return "hemangioma", (float(rng.uniform(-3, 3)), float(rng.uniform(-4, 4)), float(rng.uniform(1.5, 4.0)))
    return "normal", (0.0, 0.0, 0.0)


def _disc(rng: np.random.Generator, hard: bool, level: str, up: Body, lo: Body, age: float) -> DiscGeom:
    weight = dict(zip(ALL_DISCS, (0.6, 0.9, 1.1, 1.45, 1.35, 0.6, 0.35, 0.3, 0.3)))[level]
    p_hern = (0.5 if hard else 0.36) * weight
    kind, bulge, prot, mig, hlen = "normal", 0.0, 0.0, 0.0, 0.0
    r = rng.random()
    if r < p_hern:
        extr = rng.random() < 0.25
        kind = "extrusion" if extr else "protrusion"
        prot = float(rng.uniform(1.5, 3.0) if hard else rng.uniform(1.6, 7.0 if extr else 5.0))
        mig = float(rng.uniform(2.0, 5.0) * rng.choice([-1, 1])) if extr else 0.0
        hlen = float(rng.uniform(3.5, 6.0)) if extr else 0.0
    elif r < p_hern + (0.3 if hard else 0.2):
        kind, bulge = "bulge", float(rng.uniform(0.3, 1.2))
    nucleus = float(np.clip(rng.normal(1.0 - 0.5 * age, 0.15), 0.15, 1.0))
    if kind in ("normal", "bulge") and rng.random() < (0.25 if hard else 0.1):
        kind, nucleus = ("dark", float(rng.uniform(0.0, 0.12))) if kind == "normal" else (kind, 0.1)
    central = rng.random() < 0.6
    hz = float(rng.normal(0, 1.0) if central else rng.uniform(3.0, 7.0) * rng.choice([-1, 1]))
    hw = float(rng.uniform(4.0, 9.0) if central else rng.uniform(3.0, 5.5))
    osteo = float(rng.uniform(1.0, 3.0)) if rng.random() < (0.3 if hard else 0.1) else 0.0
    return DiscGeom(level, up, lo, kind, bulge, prot, hz, hw, mig, hlen, nucleus, osteo, up.half_width + 0.5)


def _chain(rng: np.random.Generator, hard: bool, dens_tip: np.ndarray, lordosis: float, tilt: float) -> list[Body]:
    n = len(ALL_BODIES)
    scale = rng.uniform(0.88, 1.12)
    thetas = [
        tilt + lordosis * (i / 5.0 - 0.5) if i <= 5 else tilt + lordosis / 2 + (i - 5) * rng.uniform(0.02, 0.07)
        for i in range(n)
    ]
    heights = [rng.uniform(17, 22) * scale] + [rng.uniform(12, 16) * scale for _ in range(5)]
    heights += [rng.uniform(15, 19) * scale for _ in range(n - 6)]
    depths = [rng.uniform(14, 17) * scale] + [rng.uniform(14, 18) * scale * (1 + 0.02 * i) for i in range(1, 6)]
    depths += [rng.uniform(17, 21) * scale for _ in range(n - 6)]
    widths = [8.5, 8.5, 8.8, 9.2, 9.8, 10.5, 11.5, 12.5, 13.0, 13.5]
    dens_len, dens_r = rng.uniform(12, 16), rng.uniform(4.5, 5.5)
    d0, p0 = axes(thetas[0] - 0.1)
    top = dens_tip + d0 * (dens_len + dens_r)
    centre = top + axes(thetas[0])[0] * heights[0] / 2 - axes(thetas[0])[1] * (depths[0] * 0.5 - dens_r - 1.0)
    bodies: list[Body] = []
    for i, name in enumerate(ALL_BODIES):
        if i > 0:
            prev = bodies[-1]
            gap = rng.uniform(4.5, 6.5) * scale if i < 6 else rng.uniform(3.5, 5.0) * scale
            if hard and rng.random() < 0.2:
                gap *= 0.55
            dm = axes(0.5 * (prev.theta + thetas[i]))[0]
            shift = axes(thetas[i])[1] * (
                rng.uniform(1.5, 3.5) * rng.choice([-1, 1])
                if rng.random() < (0.12 if hard else 0.04) and 0 < i < 7
                else 0.0
            )
            centre = (
                np.array(prev.centre)
                + axes(prev.theta)[0] * prev.height / 2
                + dm * gap
                + axes(thetas[i])[0] * heights[i] / 2
                + shift
            )
        wedge = rng.uniform(-0.8, 0.8) + (thetas[min(i + 1, n - 1)] - thetas[max(i - 1, 0)]) * depths[i] * 0.25
        marrow, lesion = _marrow(rng, hard)
        bodies.append(
            Body(
                name,
                (float(centre[0]), float(centre[1])),
                float(thetas[i]),
                float(heights[i]),
                float(wedge),
                float(depths[i]),
                widths[i] * scale,
                marrow,
                lesion,
            )
        )
    return bodies


def sample_anatomy(rng: np.random.Generator, hard: bool) -> Anatomy:
    """Draw one neck."""
    lordosis = np.radians(rng.uniform(-15, 45) if rng.random() < 0.85 else rng.uniform(-15, 5))
    tilt = np.radians(rng.normal(0, 8))
    age = float(rng.uniform(0.5, 1.0) if hard else rng.uniform(0.0, 0.9))
    basion = np.array([0.0, 0.0])
    dens_tip = basion + np.array([rng.uniform(4, 9), rng.uniform(-1, 4)])
    bodies = _chain(rng, hard, dens_tip, lordosis, tilt)
    c2 = bodies[0]
    d2, p2 = axes(c2.theta - 0.1)
    dens_r = rng.uniform(4.5, 5.5)
    dens_base = np.array(c2.corners()[[0, 1]].mean(axis=0)) + d2 * 2.0 + p2 * 1.0
    dens = ((float(dens_base[0]), float(dens_base[1])), (float(dens_tip[0] + dens_r), float(dens_tip[1])), dens_r)
    discs = tuple(_disc(rng, hard, ALL_DISCS[i], bodies[i], bodies[i + 1], age) for i in range(len(bodies) - 1))
    # canal: anterior wall (posterior body line) and sagittal diameter
    narrow = rng.uniform(10.5, 12.5) if hard and rng.random() < 0.3 else rng.uniform(13.0, 17.5)
    alpha = np.radians(rng.uniform(25, 40))
    clivus_len, clivus_r = rng.uniform(38, 46), rng.uniform(4.5, 6.0)
    clivus_top = basion + clivus_len * np.array([-np.cos(alpha), -np.sin(alpha)])
    n_dir = np.array([-np.sin(alpha), np.cos(alpha)])  # dorsal normal of the clivus
    wall = [(clivus_top + n_dir * clivus_r, narrow + 10), (basion + n_dir * 0.5, narrow + 8)]
    dens_back = np.array(dens[1]) + np.array([0.0, dens_r])
    wall.append((dens_back, narrow + rng.uniform(4, 8)))
    for i, b in enumerate(bodies):
        cn = b.corners()
        ap = narrow * (1.0 + 0.08 * rng.normal()) + (2.5 if i == 0 else 0.0) - (1.5 if i >= 6 else 0.0)
        wall += [(cn[1], ap), (cn[2], ap)]
    wall_arr = np.array([(float(pt[0]), float(pt[1]), float(ap)) for pt, ap in wall])
    wall_arr = wall_arr[np.argsort(wall_arr[:, 0])]
    front = [clivus_top - n_dir * clivus_r, basion - n_dir * clivus_r]
    front += [np.array(p) for b in bodies for p in b.corners()[[0, 3]]]
    front_arr = np.array(front)[np.argsort(np.array(front)[:, 0])]
    # C1 arches at the level of the upper dens
    mid = np.array(dens[1]) * 0.6 + np.array(dens[0]) * 0.4
    adi = rng.uniform(1.5, 3.0)
    a_ap, a_si = rng.uniform(3.0, 4.2), rng.uniform(4.5, 6.0)
    c1_ant = ((float(mid[0]), float(mid[1] - dens_r - adi - a_ap)), a_si, a_ap)
    back_x = float(np.interp(mid[0], wall_arr[:, 0], wall_arr[:, 1] + wall_arr[:, 2]))
    c1_post = (
        (float(mid[0] + rng.uniform(1, 4)), back_x + rng.uniform(3.5, 5.0)),
        rng.uniform(4.0, 5.5),
        rng.uniform(3.5, 5.0),
    )
    posts = tuple(_posterior(rng, b, i, wall_arr) for i, b in enumerate(bodies))
    fm = rng.uniform(30, 38)
    opisthion = basion + np.array([rng.uniform(-2, 6), fm])
    cran = (
        (float(opisthion[0] + 4 - (bv := rng.uniform(55, 70))), float(fm / 2 + rng.uniform(5, 15))),
        bv,
        rng.uniform(75, 90),
    )
    soft = {
        "pv_top": rng.uniform(3, 7),
        "pv_bottom": rng.uniform(12, 20),
        "airway": rng.uniform(9, 16),
        "trachea": rng.uniform(13, 18),
        "neck_front": rng.uniform(18, 30),
        "face_front": rng.uniform(90, 120),
        "chin_dy": rng.uniform(-8, 8),
        "subcut": rng.uniform(4, 15),
        "muscle_gap": rng.uniform(15, 35),
        "scalp": rng.uniform(5, 9),
        "bone": rng.uniform(5, 9),
        "palate_dy": rng.uniform(-6, 4),
        "epid_v": rng.uniform(0.3, 1.0),
        "epid_d": rng.uniform(0.8, 2.0),
        "prepontine": rng.uniform(1.5, 4.0),
        "pons": rng.uniform(20, 27),
        "cisterna": rng.uniform(6, 14),
        "fat_planes": float(rng.integers(2, 5)),
    }
    lat = (float(rng.normal(0, 1.5 if hard else 0.8)), float(rng.normal(0, 2.0 if hard else 1.0)))
    return Anatomy(
        tuple(bodies),
        discs,
        posts,
        dens,
        c1_ant,
        c1_post,
        (0.0, 0.0),
        (float(clivus_top[0]), float(clivus_top[1])),
        clivus_r,
        (float(opisthion[0]), float(opisthion[1])),
        cran,
        wall_arr,
        front_arr,
        rng.uniform(5.5, 7.0),
        rng.uniform(8.0, 10.0),
        rng.uniform(5.5, 7.0),
        rng.uniform(11.5, 13.5),
        lat,
        soft,
        float(lordosis),
        float(tilt),
    )


_SPIN = {
    "C2": (30, 36, 5.5, 6.0),
    "C3": (14, 19, 3.5, 3.5),
    "C4": (14, 19, 3.5, 3.5),
    "C5": (15, 20, 3.5, 3.5),
    "C6": (18, 25, 3.8, 3.8),
    "C7": (27, 34, 4.2, 4.0),
    "T1": (28, 35, 4.2, 4.0),
    "T2": (26, 32, 4.0, 4.0),
    "T3": (25, 30, 4.0, 4.0),
    "T4": (25, 30, 4.0, 4.0),
}


def _posterior(rng: np.random.Generator, b: Body, i: int, wall: np.ndarray) -> Posterior:
    d, p = axes(b.theta)
    cn = b.corners()
    y_mid = float(cn[[1, 2], 0].mean()) + 0.25 * b.height
    x_wall = float(np.interp(y_mid, wall[:, 0], wall[:, 1]))
    ap = float(np.interp(y_mid, wall[:, 0], wall[:, 2])) / max(np.cos(b.theta), 0.5)
    lam0 = (y_mid - 0.45 * b.height, x_wall + ap + 1.5)
    lam1 = (y_mid + 0.35 * b.height, x_wall + ap + 1.5)
    lo, hi, r, hw = _SPIN[b.name]
    slope = np.radians(rng.uniform(15, 35) if i < 5 else rng.uniform(30, 50) if i < 7 else rng.uniform(45, 60))
    direction = p * np.cos(slope) + d * np.sin(slope)
    base = np.array([y_mid, x_wall + ap + 1.0])
    tip = base + direction * rng.uniform(lo, hi)
    pillar = np.array([y_mid - 0.1 * b.height, x_wall + 0.5 * ap])
    return Posterior(
        b.name,
        (lam0, lam1),
        (float(base[0]), float(base[1])),
        (float(tip[0]), float(tip[1])),
        r,
        hw,
        (float(pillar[0]), float(pillar[1])),
        b.theta,
        b.height + 4.0,
        np.radians(rng.uniform(30, 50)),
    )
