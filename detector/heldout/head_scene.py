"""Primitives of the head: the skull, the brain, the skull base and the clivus.

:class:`Head` is a frame at the basion with the clivus and the skull's inner table;
:func:`sample_head` places it above C2 for one study. :func:`scalp_prims` (skin and fat over
the skull) and :func:`head_prims` (skull tables and diploe, brain, posterior fossa,
cerebellum, tentorium, skull base, sinuses, nasal cavity, palate, clivus) are returned in
painting order. The neck around them is in ``body_scene.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from detector.heldout.anatomy import Spine
from detector.heldout.shapes import Ellipse, Poly, Prim, Rigid
from detector.heldout.spine_scene import bone, sub


@dataclass(frozen=True)
class Head:
    """The head of one study, in a frame at the basion (mm, frame axes)."""

    frame: Rigid  # origin at the basion; pitch relative to C2
    clivus_angle: float  # radians from the frame's horizontal
    clivus_len: float
    skull: tuple[float, float, float, float]  # inner table ellipse (a, b, ra, rb) in the frame
    bone_t: float
    scalp_t: float
    opisthion: float  # AP length of the foramen magnum

    def clivus_wall(self, extend: float = 45.0) -> list[tuple[float, float]]:
        """World points along the back of the clivus (+1.5 mm dura), cranial first, to the basion,
        continued beyond its top so the canal curve reaches the top of any field of view."""
        up = np.array([-np.cos(self.clivus_angle), -np.sin(self.clivus_angle)])
        n_back = np.array([np.sin(self.clivus_angle), -np.cos(self.clivus_angle)])
        pts = []
        for t in np.linspace(self.clivus_len + extend, 0.0, 12):
            a, b = up * t + n_back * 1.5
            pts.append(tuple(float(v) for v in self.frame.world(a, b)))
        return pts


def sample_head(spine: Spine, rng: np.random.Generator) -> Head:
    """A head for ``spine``: basion above the dens, pitch, skull and clivus sizes drawn from ``rng``."""
    v = spine.vertebrae[0]
    bx, by = v.frame.world(rng.uniform(-3.0, 1.0), -(v.height / 2 + spine.dens_height) - rng.uniform(4.0, 9.0))
    frame = Rigid(float(bx), float(by), v.phi + np.radians(rng.uniform(-10.0, 10.0)))
    op = rng.uniform(31.0, 38.0)
    ca, ra, rb = rng.uniform(20.0, 30.0), 95.0 * rng.uniform(0.92, 1.08), 72.0 * rng.uniform(0.92, 1.08)
    cb = rng.uniform(0.0, 3.0) - rb * np.sqrt(max(1.0 - ((op - ca) / ra) ** 2, 0.05))
    return Head(
        frame,
        np.radians(rng.uniform(55.0, 70.0)),
        rng.uniform(38.0, 46.0),
        (ca, float(cb), ra, rb),
        rng.uniform(5.0, 8.0),
        rng.uniform(4.0, 8.0),
        op,
    )


def scalp_prims(head: Head) -> list[Prim]:
    """Skin and subcutaneous fat over the skull."""
    ca, cb, ra, rb = head.skull
    c, r = sub(head.frame, ca, cb), head.bone_t + head.scalp_t
    return [
        Ellipse(tissue="skin", frame=c, ra=ra + r, rb=rb + r),
        Ellipse(tissue="fat", frame=c, ra=ra + r - 1.8, rb=rb + r - 1.8, tex=0.06),
    ]


def head_prims(spine: Spine, head: Head, rng: np.random.Generator) -> list[Prim]:
    """Skull, brain, posterior fossa, skull base, sinuses, palate, clivus."""
    f = head.frame
    ca, cb, ra, rb = head.skull
    c = sub(f, ca, cb)
    t = head.bone_t
    out: list[Prim] = [
        Ellipse(tissue="cortex", frame=c, ra=ra + t, rb=rb + t),
        Ellipse(tissue="marrow", frame=c, ra=ra + t - 1.5, rb=rb + t - 1.5, tex=0.15, gain=0.9),
        Ellipse(tissue="cortex", frame=c, ra=ra + 1.5, rb=rb + 1.5),
        Ellipse(tissue="csf", frame=c, ra=ra, rb=rb),
        Ellipse(tissue="brain", frame=c, ra=ra - 2.0, rb=rb - 2.0, tex=0.07),
    ]
    op = head.opisthion
    # foramen magnum: open the bottom of the skull between basion and opisthion
    low = t + head.scalp_t + 4.0
    out.append(Poly(tissue="csf", frame=f, verts=((0.5, -9.0), (op - 0.5, -9.0), (op - 7.0, 4.0), (2.0, 4.0))))
    out.append(Poly(tissue="soft", frame=f, verts=((-70.0, -4.0), (0.0, -1.0), (0.0, 30.0), (-70.0, 30.0)), tex=0.1))
    out.append(Poly(tissue="soft", frame=f, verts=((2.0, 4.0), (op - 7.0, 4.0), (op - 12.0, low), (2.0, low)), tex=0.1))
    # cerebellum, fourth ventricle, tentorium
    cer = sub(f, op * 0.5 + rng.uniform(16, 24), -rng.uniform(24, 30))
    out.append(Ellipse(tissue="cerebellum", frame=cer, ra=rng.uniform(32, 40), rb=rng.uniform(19, 23), tex=0.14))
    out.append(Ellipse(tissue="csf", frame=sub(f, 26.0, -24.0, 0.35), ra=2.5, rb=8.0, hw=6.0))
    up = np.array([-np.cos(head.clivus_angle), -np.sin(head.clivus_angle)]) * head.clivus_len
    tb = -rng.uniform(35.0, 45.0)
    tent = ((up[0] + 12, up[1] - 14), (ca + ra * 0.75, tb), (ca + ra * 0.75, tb + 1.8), (up[0] + 12, up[1] - 12.2))
    out.append(Poly(tissue="ligament", frame=f, verts=tent))
    # skull base in front of the clivus, sphenoid sinus, nasal cavity, palate
    pal = rng.uniform(2.0, 10.0)
    floor = up[1] - rng.uniform(2.0, 8.0)
    out.append(
        Poly(
            tissue="mucosa",
            frame=f,
            verts=((up[0] - 2, up[1] - 4), (-150.0, floor - 6), (-150.0, pal), (-12.0, pal)),
            gain=0.6,
            tex=0.2,
        )
    )
    out += bone(
        Poly(
            tissue="cortex",
            frame=f,
            verts=((up[0] - 2, up[1] - 6), (-150.0, floor - 9), (-150.0, floor - 3), (up[0] - 2, up[1] + 2)),
        ),
        shell=1.2,
    )
    sph = sub(f, up[0] - 13.0, up[1] + 9.0)
    out += [Ellipse(tissue="cortex", frame=sph, ra=12.0, rb=9.5), Ellipse(tissue="air", frame=sph, ra=10.8, rb=8.3)]
    out.append(
        Poly(
            tissue="air",
            frame=f,
            verts=((-32.0, floor + 6), (-110.0, floor + 6), (-110.0, pal - 4), (-32.0, pal - 4)),
            hw=14.0,
        )
    )
    for k in range(3):  # turbinates: curled mucosa, paramedian
        bk = floor + 12 + k * (pal - floor - 14) / 2.5
        fr = sub(f, -72.0 + rng.uniform(-8, 8), bk, rng.uniform(-0.25, 0.25))
        out.append(
            Ellipse(
                tissue="mucosa",
                frame=fr,
                ra=rng.uniform(12, 22),
                rb=rng.uniform(3.5, 6.0),
                zc=rng.choice([-1, 1]) * 8.0,
                hw=5.0,
                gain=1.1,
                tex=0.3,
            )
        )
    out += bone(
        Poly(
            tissue="cortex", frame=f, verts=((-22.0, pal - 3), (-95.0, pal - 4), (-95.0, pal + 5), (-22.0, pal + 3.5))
        ),
        shell=1.2,
    )
    # clivus (cortex + marrow), with the apical ligament down to the dens
    n_ant = np.array([-np.sin(head.clivus_angle), np.cos(head.clivus_angle)])
    cl = ((0.0, 0.0), (float(up[0]), float(up[1])), tuple(up + n_ant * 13.0), tuple(n_ant * 6.0))
    out += bone(Poly(tissue="cortex", frame=f, verts=cl), shell=1.3)
    return out
