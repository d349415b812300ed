"""Per-slice disc detections -> one finding per cervical disc level (DESIGN.md section 3).

The rule of the contract: on each slice the disc boxes (both classes) are sorted
cranio-caudally and named C2-C3 ... C7-T1 from the top; across slices a level's finding is its
highest herniation score, on the key slice where it occurs; a level without a herniation above
the threshold is ``normal_disc`` with its best normal score.

``assign_levels`` keeps that rule but does not trust each slice alone: a slice that misses a
disc (or shows a lateral one only) would shift every name below it. So it first builds one
chain of disc positions for the series from all slices (sagittal slices share the in-plane
geometry), fills gaps where the spacing says a disc is missing, names that chain from the top,
and then gives every detection the level of the nearest chain position. Pure, no torch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from detector.types import Detection

LEVELS = ("C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1")


@dataclass(frozen=True)
class LevelFinding:
    """The finding at one disc level: label, score, the key slice and the box on it."""

    level: str
    label: str  # "herniation" | "normal_disc"
    score: float
    slice_index: int
    box: tuple[float, float, float, float]


@dataclass(frozen=True)
class Disc:
    """One disc on one slice: detections of both classes merged."""

    slice_index: int
    center: np.ndarray  # (x, y) px
    box: tuple[float, float, float, float]
    herniation: float  # best herniation score (0 if none)
    normal: float  # best normal_disc score (0 if none)

    @property
    def score(self) -> float:
        return max(self.herniation, self.normal)


def assign_levels(
    detections: Sequence[Sequence[Detection]],
    threshold: float = 0.5,
    min_score: float = 0.05,
    merge_iou: float = 0.4,
    anchor_fraction: float = 0.4,
) -> list[LevelFinding]:
    """Findings per disc level, cranial first, for one sagittal series.

    ``detections[k]``: the detections on slice k (image rows run head -> feet). ``threshold``:
    the herniation score at which a level is called herniated. The other arguments are those
    of ``name_discs``. Levels with no disc seen are left out.
    """
    by_level: dict[str, list[Disc]] = {}
    for level, disc in name_discs(detections, min_score, merge_iou, anchor_fraction):
        by_level.setdefault(level, []).append(disc)
    return [_finding(lv, by_level[lv], threshold) for lv in LEVELS if lv in by_level]


def name_discs(
    detections: Sequence[Sequence[Detection]],
    min_score: float = 0.05,
    merge_iou: float = 0.4,
    anchor_fraction: float = 0.4,
) -> list[tuple[str, Disc]]:
    """Every disc of the series with its level name, counted from the top of the chain.

    ``min_score``: detections below it are ignored. ``merge_iou``: boxes of either class
    overlapping this much on one slice are one disc. ``anchor_fraction``: only discs scoring
    at least this fraction of the series' best disc place the chain of levels; weaker ones
    are named by it, or dropped when they lie between chain positions. (The analysis in
    ``detector.analysis`` names the chain from an anatomical anchor instead.)
    """
    chain = disc_chain(detections, min_score, merge_iou, anchor_fraction)
    if chain is None:
        return []
    return [(LEVELS[j], disc) for j, members in enumerate(chain.members[: len(LEVELS)]) for disc in members]


@dataclass(frozen=True)
class Chain:
    """The disc positions of a series along the spine, cranial first, with their discs."""

    positions: np.ndarray  # [L, 2] (x, y) px; gaps filled where the spacing says a disc is missing
    spacing: float  # typical distance between neighbouring discs (px)
    members: list[list[Disc]]  # per position, the discs of every slice that sit on it


def disc_chain(
    detections: Sequence[Sequence[Detection]],
    min_score: float = 0.05,
    merge_iou: float = 0.4,
    anchor_fraction: float = 0.4,
) -> Chain | None:
    """One chain of disc positions for the series (arguments as ``name_discs``); None when
    no disc was detected. Each disc joins the nearest position within half a spacing."""
    discs = [d for k, dets in enumerate(detections) for d in _merge(k, dets, min_score, merge_iou)]
    if not discs:
        return None
    top = max(d.score for d in discs)
    positions, spacing = _chain([d for d in discs if d.score >= anchor_fraction * top])
    members: list[list[Disc]] = [[] for _ in positions]
    for disc in discs:
        dist = np.linalg.norm(positions - disc.center, axis=1)
        j = int(np.argmin(dist))
        if dist[j] < 0.5 * spacing:
            members[j].append(disc)
    return Chain(positions, spacing, members)


def _finding(level: str, discs: list[Disc], threshold: float) -> LevelFinding:
    worst = max(discs, key=lambda d: (d.herniation, d.score))
    if worst.herniation >= threshold:
        return LevelFinding(level, "herniation", worst.herniation, worst.slice_index, worst.box)
    best = max(discs, key=lambda d: (d.normal, d.score))
    score = best.normal if best.normal > 0 else 1.0 - worst.herniation
    return LevelFinding(level, "normal_disc", score, best.slice_index, best.box)


def _merge(k: int, dets: Sequence[Detection], min_score: float, merge_iou: float) -> list[Disc]:
    """Greedy cross-class merge on one slice, highest score first."""
    kept: list[list[Detection]] = []
    for det in sorted((d for d in dets if d.score >= min_score), key=lambda d: -d.score):
        for group in kept:
            if box_iou(group[0].box, det.box) >= merge_iou:
                group.append(det)
                break
        else:
            kept.append([det])
    out = []
    for group in kept:
        box = group[0].box
        out.append(
            Disc(
                slice_index=k,
                center=np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]),
                box=tuple(float(x) for x in box),  # type: ignore[arg-type]
                herniation=max((d.score for d in group if d.label == "herniation"), default=0.0),
                normal=max((d.score for d in group if d.label == "normal_disc"), default=0.0),
            )
        )
    return out


def _chain(discs: list[Disc]) -> tuple[np.ndarray, float]:
    """Disc positions of the series [L, 2] (x, y px), cranial first, gaps filled; and the spacing.

    Cluster the disc centres of all slices along the spine (score-weighted means), drop
    clusters with little support, then insert a position wherever two neighbours lie about
    n >= 2 typical spacings apart.
    """
    spacing = _typical_spacing(discs)
    clusters: list[list[Disc]] = []
    for disc in sorted(discs, key=lambda d: d.center[1]):
        near = [c for c in clusters if np.linalg.norm(_mean(c) - disc.center) < 0.5 * spacing]
        if near:
            near[0].append(disc)
        else:
            clusters.append([disc])
    # a cluster seen on one slice only, weakly, while others are seen on many, is noise
    support = [sum(d.score for d in c) for c in clusters]
    kept = [(s, _mean(c)) for s, c in zip(support, clusters) if s >= 0.2 * max(support)]
    kept.sort(key=lambda sc: sc[1][1])
    kept = _drop_off_line(_merge_close(_drop_behind(kept, spacing), 0.6 * spacing), 0.4 * spacing)
    # more positions than levels: an end that is clearly weaker than the rest is not a disc
    # (e.g. the dens base above C2-C3 on some slices)
    while len(kept) > len(LEVELS):
        median = float(np.median([s for s, _ in kept]))
        end = 0 if kept[0][0] <= kept[-1][0] else -1
        if kept[end][0] >= 0.6 * median:
            break
        kept.pop(end)
    centers = [c for _, c in kept]
    chain = [centers[0]]
    for p in centers[1:]:
        a = chain[-1]
        missing = int(round(float(np.linalg.norm(p - a)) / spacing)) - 1
        chain += [a + (p - a) * m / (missing + 1) for m in range(1, missing + 1)]
        chain.append(p)
    return np.stack(chain), spacing


def _drop_behind(kept: list[tuple[float, np.ndarray]], spacing: float) -> list[tuple[float, np.ndarray]]:
    """Of two positions side by side across the spine at one height, keep the front one.

    The articular pillars lie behind the discs at about their height; lateral slices box them,
    and their boxes cluster into a second line parallel to the discs. The canonical view has
    the front on the left (smaller x), so of a pair less than a third of a spacing apart along
    the spine and a third to 1.5 spacings apart across it, the one on the right goes."""
    if len(kept) < 3:
        return kept
    centres = np.stack([c for _, c in kept])
    _, _, vt = np.linalg.svd(centres - centres.mean(axis=0), full_matrices=False)
    along = vt[0] if vt[0][1] >= 0 else -vt[0]  # head -> feet
    across = np.array([along[1], -along[0]])  # front -> back (x grows)
    behind: set[int] = set()
    for i in range(len(kept)):
        for j in range(i + 1, len(kept)):
            v = centres[j] - centres[i]
            if abs(v @ along) < spacing / 3 and spacing / 3 < abs(v @ across) < 1.5 * spacing:
                behind.add(j if v @ across > 0 else i)
    return [k for n, k in enumerate(kept) if n not in behind]


def _merge_close(kept: list[tuple[float, np.ndarray]], distance: float) -> list[tuple[float, np.ndarray]]:
    """Neighbouring clusters closer than ``distance`` are one disc seen twice (e.g. its lateral
    slices drift): one position, support-weighted."""
    out = [kept[0]]
    for s, c in kept[1:]:
        s0, c0 = out[-1]
        if float(np.linalg.norm(c - c0)) < distance:
            out[-1] = (s0 + s, (c0 * s0 + c * s) / (s0 + s))
        else:
            out.append((s, c))
    return out


def _drop_off_line(kept: list[tuple[float, np.ndarray]], tolerance: float) -> list[tuple[float, np.ndarray]]:
    """Drop, worst first, inner positions lying more than ``tolerance`` off the line through
    their two neighbours: the discs follow the spine; a box beside that curve (an articular
    pillar on a lateral slice) is not the next disc."""
    kept = list(kept)
    while len(kept) >= 3:
        devs = [_off_line(kept[i][1], kept[i - 1][1], kept[i + 1][1]) for i in range(1, len(kept) - 1)]
        worst = int(np.argmax(devs))
        if devs[worst] <= tolerance:
            break
        kept.pop(worst + 1)
    return kept


def _off_line(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    """Distance of point p from the line through a and b."""
    d = b - a
    n = float(np.linalg.norm(d))
    if n == 0:
        return float(np.linalg.norm(p - a))
    return abs(float(d[0] * (p[1] - a[1]) - d[1] * (p[0] - a[0]))) / n


def _typical_spacing(discs: list[Disc]) -> float:
    """Median distance between neighbouring disc centres on the same slice (px)."""
    steps = []
    for k in {d.slice_index for d in discs}:
        pts = sorted((d.center for d in discs if d.slice_index == k), key=lambda p: p[1])
        steps += [float(np.linalg.norm(b - a)) for a, b in zip(pts, pts[1:])]
    if steps:
        return float(np.median(steps))
    heights = [d.box[3] - d.box[1] for d in discs]
    return 3.0 * float(np.median(heights))  # one disc per slice: a disc + body is ~3 disc heights


def _mean(cluster: list[Disc]) -> np.ndarray:
    w = np.array([d.score for d in cluster]) + 1e-6
    return (np.stack([d.center for d in cluster]) * w[:, None]).sum(0) / w.sum()


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes."""
    iw = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    ih = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = iw * ih
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def level_under(
    slices: Sequence[Sequence[tuple[str, Sequence[float]]]], k: int, box: Sequence[float], min_iou: float = 0.3
) -> str | None:
    """The level of the true disc under ``box`` on slice k, or on the nearest slice (up to two
    away) that boxes one; ``slices``: per slice, the (level, box) of every true disc on it. A
    key slice may be too lateral for a phantom to box its disc."""
    for dk in (0, -1, 1, -2, 2):
        if 0 <= k + dk < len(slices):
            on = slices[k + dk]
            ious = [box_iou(box, b) for _, b in on]
            if ious and max(ious) >= min_iou:
                return on[int(np.argmax(ious))][0]
    return None
