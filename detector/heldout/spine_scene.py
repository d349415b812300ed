"""Primitives of the spinal column: canal contents, posterior elements, C1/C2, bodies, discs.

The canal follows a curve along its anterior wall (the posterior clivus, the back of the dens
with its transverse ligament, then the posterior margins of the vertebral bodies and discs);
the thecal sac, cord (continuing into the medulla and pons) and flow voids are strips of that
curve. Everything is returned in painting order (later primitives cover earlier ones).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from detector.heldout.anatomy import Spine, Vertebra
from detector.heldout.discs import DiscSolid, disc_frame, disc_solid
from detector.heldout.shapes import Band, Box, Curve, Ellipse, Poly, Prim, Rigid


def sub(f: Rigid, a: float, b: float, dphi: float = 0.0) -> Rigid:
    """A frame at (a, b) of ``f``, turned by ``dphi``."""
    x, y = f.world(a, b)
    return Rigid(float(x), float(y), f.phi + dphi)


def bone(p: Prim, gain: float = 1.0, shell: float = 1.0, tex: float = 0.06) -> list[Prim]:
    """Cortex (the shape) and marrow (the shape shrunk by ``shell`` mm)."""
    return [
        p if p.tissue == "cortex" else replace(p, tissue="cortex"),
        replace(p, tissue="marrow", grow=p.grow - shell, gain=gain, tex=tex),
    ]


def canal_curve(spine: Spine, clivus: list[tuple[float, float]]) -> Curve:
    """The curve of the canal's anterior wall, head to feet (``clivus``: points on the back of
    the clivus, cranial first, ending at the basion)."""
    v2 = spine.vertebrae[0]
    f = v2.frame
    dens_back = spine.dens_width / 2 + 2.5  # transverse ligament behind the dens
    pts = list(clivus)
    for b in np.linspace(-(v2.height / 2 + spine.dens_height) + 2, -v2.height / 2, 4):
        pts.append(tuple(float(t) for t in f.world(dens_back, b)))
    for v in spine.vertebrae:
        for b in (-v.height / 2 + 0.8, v.height / 2 - 0.8):
            pts.append(tuple(float(t) for t in v.frame.world(v.depth / 2, b)))
    last = spine.vertebrae[-1]
    pts.append(tuple(float(t) for t in last.frame.world(last.depth / 2, last.height / 2 + 60)))
    xs, ys = np.array([p[0] for p in pts]), np.array([p[1] for p in pts])
    keep = np.concatenate([[True], np.diff(ys) > 0.5])  # strictly head -> feet
    while not keep.all():
        xs, ys = xs[keep], ys[keep]
        keep = np.concatenate([[True], np.diff(ys) > 0.5])
    return Curve(xs, ys)


def canal_prims(spine: Spine, canal: Curve, basion_y: float, rng: np.random.Generator, hard: bool) -> list[Prim]:
    """Epidural fat, ligaments, dura, CSF, cord/brainstem and flow voids."""
    vs = spine.vertebrae
    s_v = [canal.s_at(float(v.frame.world(v.depth / 2, 0.0)[1])) for v in vs]
    s_b = canal.s_at(basion_y)
    s_c1 = (s_b + s_v[0]) / 2 - 4
    canal_ap = [v.canal for v in vs]
    ks = (s_b + 2, s_c1, *s_v)
    ap = (canal_ap[0] + 8, canal_ap[0] + rng.uniform(3, 6), *canal_ap)
    tr = tuple(12.5 if i < 7 else 9.0 for i in range(len(ks)))
    lf_lo = [a - 1.6 for a in ap]
    if spine.flavum is not None:
        k, mm = spine.flavum
        lf_lo[k + 2] -= mm
    sac_hi = tuple(a - spine.epidural for a in ap)
    cord_ap = [spine.cord_ap + 1.5, spine.cord_ap + 0.8] + [
        spine.cord_ap + (0.6 if 2 <= i <= 4 else -0.6 if i >= 6 else 0.0) for i in range(len(vs))
    ]
    off = rng.uniform(-1.0, 1.0)
    cord_lo = [1.0 + max(0.8, (h - 1.0 - c) / 2 + off) for h, c in zip(sac_hi, cord_ap)]
    hw = [spine.cord_hw + 1.5, spine.cord_hw + 0.6] + [
        spine.cord_hw + (0.9 if 2 <= i <= 4 else -1.0 if i >= 6 else 0.0) for i in range(len(vs))
    ]
    stem = ((s_b - 48, 4.5, 24.0, 14.0), (s_b - 28, 4.0, 22.0, 13.0), (s_b - 12, 3.0, 12.0, 8.0))
    ck = tuple(s for s, *_ in stem) + ks
    c_lo = tuple(lo for _, lo, _, _ in stem) + tuple(cord_lo)
    c_hi = tuple(lo + a for _, lo, a, _ in stem) + tuple(lo + a for lo, a in zip(cord_lo, cord_ap))
    c_hw = tuple(w for *_, w in stem) + tuple(hw)
    z0 = float(np.mean([v.z for v in vs[:6]]))
    kw = dict(frame=canal, zc=z0, ks=ks)
    out: list[Prim] = [
        Band(tissue="fat", lo=(0.0,) * len(ks), hi=ap, hws=tr, gain=0.8, tex=0.15, **kw),  # type: ignore[arg-type]
        Band(tissue="ligament", lo=tuple(lf_lo), hi=tuple(a + 1.2 for a in ap), hws=tr, **kw),  # type: ignore[arg-type]
        Band(tissue="ligament", lo=(-0.6,) * len(ks), hi=(0.9,) * len(ks), hws=tr, **kw),  # type: ignore[arg-type]
    ]
    sac = Band(
        tissue="csf",
        lo=(1.0,) * len(ks),
        hi=sac_hi,
        hws=(spine.sac_hw + 3, spine.sac_hw + 1) + (spine.sac_hw,) * len(vs),
        profile="round",
        nsub=3,
        **kw,
    )  # type: ignore[arg-type]
    out += [replace(sac, tissue="ligament", grow=0.5), sac]
    out.append(
        Band(tissue="cord", frame=canal, zc=z0, ks=ck, lo=c_lo, hi=c_hi, hws=c_hw, profile="round", nsub=3, tex=0.04)
    )
    # CSF flow voids, mostly dorsal to the cord at C2-C5
    n_voids = int(rng.integers(2, 9) if hard else rng.integers(0, 5))
    for _ in range(n_voids):
        i = int(rng.integers(0, 4))
        s0 = rng.uniform(s_v[i] - 6, s_v[i] + 10)
        length = rng.uniform(4.0, 16.0)
        j = i + 2
        dorsal = rng.random() < (0.65 if hard else 0.8)
        lo, hi = (cord_lo[j] + cord_ap[j] + 0.3, sac_hi[j] - 0.3) if dorsal else (1.2, cord_lo[j] - 0.2)
        if hi - lo < 0.6:
            continue
        m = (lo + hi) / 2
        out.append(
            Band(
                tissue="csf",
                frame=canal,
                zc=z0 + rng.uniform(-3, 3),
                ks=(s0, s0 + length / 2, s0 + length),
                lo=(m, lo, m),
                hi=(m, hi, m),
                hws=(rng.uniform(2.5, 6.0),) * 3,
                profile="round",
                nsub=3,
                layer="void",
                gain=float(rng.uniform(0.5, 0.95) if hard else rng.uniform(0.3, 0.8)),
            )
        )
    return out


def _pillar(f: Rigid, v: Vertebra, hd_up: float, hd_dn: float, cervical: bool) -> Poly:
    a0, a1 = v.depth / 2 + 3.0, v.depth / 2 + (15.0 if cervical else 11.0)
    k = 0.85 if cervical else 0.25
    top, bot = v.height / 2 + hd_up / 2 - 0.8, v.height / 2 + hd_dn / 2 - 0.8
    verts = ((a0, -top), (a1, -top + k * (a1 - a0)), (a1, bot + k * (a1 - a0)), (a0, bot))
    return Poly(tissue="cortex", frame=f, verts=verts)


def posterior_prims(spine: Spine, canal: Curve, rng: np.random.Generator) -> list[Prim]:
    """Pedicles, articular pillars, laminae, spinous processes, transverse processes, the
    vertebral arteries, nerve roots in their foramina and rib heads."""
    vs, ds = spine.vertebrae, spine.discs
    out: list[Prim] = []
    va_z = vs[2].width / 2 + 6.0
    for i, v in enumerate(vs):
        f, cervical = v.frame, i < 6
        pz = 15.5 if cervical else 12.0
        hd_up = ds[i - 1].height if i > 0 else 6.0
        hd_dn = ds[i].height if i < len(ds) else 4.0
        for side in (-1.0, 1.0):
            zc = v.z + side * pz
            if i < len(ds):  # the foramen below the pedicle: fat and a nerve root
                fr = sub(f, v.depth / 2 + 3.0, v.height / 2 + hd_dn / 2)
                out += [
                    Ellipse(tissue="fat", frame=fr, ra=4.0, rb=5.0, zc=zc, hw=3.5, gain=0.8),
                    Ellipse(tissue="nerve", frame=fr, ra=2.0, rb=2.2, zc=zc, hw=3.5, nsub=1),
                ]
            if 1 <= i <= 5:  # transverse process around the vertebral artery
                out += bone(
                    Ellipse(tissue="cortex", frame=sub(f, -1.0, 0.0), ra=4.5, rb=3.0, zc=v.z + side * va_z, hw=4.0)
                )
            out += bone(
                Box(
                    tissue="cortex",
                    frame=sub(f, v.depth / 2 + 3.5, -v.height * 0.12),
                    ha=4.0,
                    hb=3.4,
                    r=1.5,
                    zc=zc,
                    hw=2.8,
                )
            )
            out += bone(replace(_pillar(f, v, hd_up, hd_dn, cervical), zc=v.z + side * (pz + 3.5), hw=5.5))
            if i >= 6:  # rib head at the costovertebral joint
                out += bone(
                    Ellipse(
                        tissue="cortex",
                        frame=sub(f, 0.0, v.height / 2),
                        ra=5.5,
                        rb=5.0,
                        zc=v.z + side * (v.width / 2 + 5.0),
                        hw=5.0,
                    )
                )
        lam_a = v.depth / 2 + v.canal
        slope = 3.0
        lam = (
            (lam_a, -v.height / 2 + 1.0),
            (lam_a + 5.0, -v.height / 2 + 1.0),
            (lam_a + 5.0 + slope, v.height / 2 + 2.0),
            (lam_a + slope, v.height / 2 + 2.0),
        )
        out += bone(Poly(tissue="cortex", frame=f, verts=lam, zc=v.z, hw=pz - 1.5), shell=1.2)
        tau = v.spinous_tilt
        base = np.array([lam_a + 4.0, 0.25 * v.height])
        d, n = np.array([np.cos(tau), np.sin(tau)]), np.array([-np.sin(tau), np.cos(tau)])
        hb0, hb1 = (12.0, 7.0) if i == 0 else (8.0, 5.0)
        tip = base + d * v.spinous
        sp = (tuple(base - n * hb0 / 2), tuple(tip - n * hb1 / 2), tuple(tip + n * hb1 / 2), tuple(base + n * hb0 / 2))
        out += bone(Poly(tissue="cortex", frame=f, verts=sp, zc=v.z, hw=5.0 if i == 0 else 3.2), shell=1.3)
    # vertebral arteries: flow voids in the transverse foramina from C6 up to C1
    s6, s1 = (canal.s_at(float(vs[k].frame.world(0, 0)[1])) for k in (4, 0))
    va_gain = float(rng.uniform(0.0, 0.25))
    for side in (-1.0, 1.0):
        out.append(
            Band(
                tissue="vessel",
                frame=canal,
                ks=(s1 - 22, s6 + 8),
                lo=(-8.0, -8.0),
                hi=(-3.0, -3.0),
                zc=vs[2].z + side * va_z,
                hw=2.4,
                gain=va_gain,
            )
        )
    return out


def c1_prims(spine: Spine, rng: np.random.Generator) -> list[Prim]:
    """Dens, atlas (anterior and posterior arches, lateral masses), C2 lateral masses and the
    occipital condyles."""
    v = spine.vertebrae[0]
    f = v.frame
    dh, dw = spine.dens_height, spine.dens_width
    df = sub(f, rng.uniform(-1.5, 0.5), -(v.height / 2 + dh / 2) + 1.0, -np.radians(rng.uniform(-5.0, 12.0)))
    out = bone(
        Box(
            tissue="cortex",
            frame=df,
            ha=dw / 2,
            hb=dh / 2 + 1.0,
            r=dw * 0.4,
            zc=v.z,
            hw=dw / 2 + 0.5,
            profile="round",
            nsub=3,
        ),
        gain=v.marrow_gain,
    )
    arch_b = -dh / 2 + rng.uniform(5.0, 7.5)
    adi = rng.uniform(1.2, 3.0)
    out += bone(Ellipse(tissue="cortex", frame=sub(df, -dw / 2 - adi - 3.5, arch_b), ra=3.5, rb=5.5, zc=v.z, hw=10.0))
    post_a = dw / 2 + 2.5 + v.canal + rng.uniform(4.0, 7.0) + 4.5
    out += bone(Ellipse(tissue="cortex", frame=sub(df, post_a, arch_b - 1.0), ra=4.5, rb=4.8, zc=v.z, hw=14.0))
    for side in (-1.0, 1.0):
        out += bone(
            Box(tissue="cortex", frame=sub(df, 2.0, arch_b), ha=8.0, hb=7.0, r=2.0, zc=v.z + side * 17.0, hw=6.0)
        )
        out += bone(
            Box(tissue="cortex", frame=sub(df, 3.0, arch_b - 13.5), ha=9.0, hb=5.0, r=3.0, zc=v.z + side * 17.0, hw=5.0)
        )
        out += bone(
            Box(
                tissue="cortex",
                frame=sub(f, 0.0, -v.height / 2 + 4.0),
                ha=8.0,
                hb=8.0,
                r=2.5,
                zc=v.z + side * 13.5,
                hw=4.5,
            )
        )
    return out


def body_prims(spine: Spine, concave: list[float]) -> list[Prim]:
    """Vertebral bodies with Modic changes and a hemangioma."""
    out: list[Prim] = []
    for i, v in enumerate(spine.vertebrae):
        body = Box(
            tissue="cortex",
            frame=v.frame,
            ha=v.depth / 2,
            hb=v.height / 2,
            r=1.8,
            concave=concave[i],
            zc=v.z,
            hw=v.width / 2,
            profile="super",
            nsub=3,
        )
        out += bone(body, gain=v.marrow_gain)
        for j, sign in ((i - 1, -1.0), (i, 1.0)):  # Modic bands next to a degenerated disc
            if 0 <= j < len(spine.discs) and spine.discs[j].modic:
                t = "edema" if spine.discs[j].modic == 1 else "fat"
                out.append(
                    Box(
                        tissue=t,
                        frame=sub(v.frame, 0.0, sign * (v.height / 2 - 2.5)),
                        ha=v.depth / 2 - 1.5,
                        hb=1.6,
                        r=1.0,
                        zc=v.z,
                        hw=v.width / 2 - 2.0,
                        profile="super",
                        nsub=3,
                        gain=0.7,
                        tex=0.2,
                    )
                )
    if spine.hemangioma is not None:  # fatty, T2-bright, with coarse vertical trabeculae
        k, a, b, r = spine.hemangioma
        v = spine.vertebrae[k]
        f = sub(v.frame, a, b)
        out.append(
            Ellipse(tissue="fat", frame=f, ra=r, rb=r, zc=v.z + r * 0.3, hw=r, profile="round", nsub=3, tex=0.25)
        )
        out.append(
            Ellipse(
                tissue="edema", frame=f, ra=r, rb=r, zc=v.z + r * 0.3, hw=r, profile="round", nsub=3, gain=0.5, tex=0.3
            )
        )
        for da in np.arange(-r + 1.2, r - 0.8, 1.6):
            out.append(
                Box(
                    tissue="cortex",
                    frame=sub(f, float(da), 0.0),
                    ha=0.3,
                    hb=r * np.sqrt(max(1 - (da / r) ** 2, 0.0)),
                    zc=v.z + r * 0.3,
                    hw=r * 0.8,
                )
            )
    return out


def disc_prims(spine: Spine, concave: list[float], rng: np.random.Generator, herniations: bool = True) -> list[Prim]:
    """Annulus, nucleus, herniation (with its ligament rim), osteophytes, and one ground-truth
    primitive per disc (layer "truth")."""
    vs = spine.vertebrae
    out: list[Prim] = []
    truth: list[Prim] = []
    for i, d in enumerate(spine.discs):
        up, lo = vs[i], vs[i + 1]
        cc = (concave[i], concave[i + 1])
        ann = disc_solid(d, up, lo, cc, tissue="annulus", gain=1.0 - 0.3 * d.dark)
        f = ann.frame
        nuc = Ellipse(
            tissue="nucleus",
            frame=sub(f, 0.08 * up.depth, 0.0),
            ra=0.36 * up.depth * rng.uniform(0.9, 1.1),
            rb=max(0.38 * d.height, 0.8),
            zc=ann.zc,
            hw=ann.width / 2 * 0.55,
            profile="round",
            nsub=3,
            gain=float((1.0 - 0.8 * d.dark) * rng.uniform(0.85, 1.1)),
        )
        inner = replace(nuc, tissue="nucleus", ra=nuc.ra * 1.3, rb=nuc.rb * 1.25, gain=nuc.gain * 0.45, hw=nuc.hw * 1.3)
        out += [replace(ann, hernia=None), inner, nuc]
        if d.hernia is not None and herniations:
            hern = replace(ann, part="hernia", tissue="hernia", gain=d.hernia.gain * (1.0 - 0.4 * d.dark))
            out += [replace(hern, tissue="ligament", grow=0.5, gain=1.0), hern]
        truth.append(replace(ann, part="union", layer="truth", key=d.level, hernia=d.hernia if herniations else None))
        for v, sign, size in ((up, 1.0, d.spur_post), (lo, -1.0, d.spur_post * rng.uniform(0.5, 1.0))):
            if size > 0:  # posterior osteophyte at the body corner facing the disc
                tri = (
                    (v.depth / 2 - 1.0, sign * (v.height / 2 - 3.5)),
                    (v.depth / 2 - 1.0, sign * (v.height / 2 + 0.2)),
                    (v.depth / 2 + size, sign * (v.height / 2 + min(0.6, d.height * 0.2))),
                )
                out.append(
                    Poly(tissue="cortex", frame=v.frame, verts=tri, zc=v.z + rng.uniform(-3, 3), hw=d.spur_hw, nsub=1)
                )
        for v, sign, size in ((up, 1.0, d.spur_ant), (lo, -1.0, d.spur_ant * rng.uniform(0.4, 1.0))):
            if size > 0:
                tri = (
                    (-v.depth / 2 + 1.5, sign * (v.height / 2 - 4.0)),
                    (-v.depth / 2 + 1.0, sign * (v.height / 2 + 0.3)),
                    (-v.depth / 2 - size, sign * (v.height / 2 + size * 0.5)),
                )
                out += bone(Poly(tissue="cortex", frame=v.frame, verts=tri, zc=v.z, hw=v.width / 2 - 2.0), shell=0.9)
    return out + truth


def spine_prims(
    spine: Spine, canal: Curve, basion_y: float, rng: np.random.Generator, hard: bool, herniations: bool = True
) -> list[Prim]:
    """Every primitive of the spine, in painting order."""
    concave = [float(rng.uniform(0.4, 1.0)) for _ in spine.vertebrae]
    return (
        canal_prims(spine, canal, basion_y, rng, hard)
        + posterior_prims(spine, canal, rng)
        + c1_prims(spine, rng)
        + body_prims(spine, concave)
        + disc_prims(spine, concave, rng, herniations)
    )


__all__ = ["DiscSolid", "canal_curve", "disc_frame", "spine_prims", "sub"]
