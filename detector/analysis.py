"""One sagittal series -> one finding per disc level (DESIGN.md section 3): the analysis path.

1. The MedDet detector finds and boxes the discs on every slice (``Detector.predict``).
2. The discs of all slices form one chain along the spine (``levels.disc_chain``).
3. The level net reads a wide crop around each chain position (and, where the checkpoint
   holds one, the level locator reads the whole neck once: ``discs.locator``; the two views
   are combined by ``fuse``); the chain is named by aligning it with the levels from the C2
   anchor (``naming.name_chain``), or every level is ``unknown`` with the reason.
4. The herniation net reads a close crop (0.3 mm/px, disc and canal, with the neighbouring
   slices) of every detection of a disc; the disc's logit is the highest over its slices, the
   calibrated probability of that is its score, and the stored operating point its call. The
   key slice of a herniation is where the logit is highest; of a normal disc, where the disc
   was detected most clearly (a far lateral slice's low logit may be the highest). The
   finding shows the key slice's box, or where its crop looked when that box lies on another
   structure (``shown_box``).

``Analyzer.from_checkpoint()`` loads both stages and the calibration from one checkpoint;
``analyze(images, pixel_spacing)`` is pure computation on arrays (no DICOM, no I/O).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detector import SHIPPED_CHECKPOINT, analysis_version
from detector import checkpoint as ckpt
from detector.discs.calibration import Calibration
from detector.discs.crops import CropRequest, anchor_of_box, normalize_crops, take_crops
from detector.discs.locator import LOCATOR_WINDOW, chain_log_probs, log_distribution, to_window
from detector.discs.model import CROP_ANCHORS, KEY_FRACTION, DiscModels
from detector.inference import Detector, pick_device
from detector.levels import Chain, Disc, disc_chain
from detector.naming import Naming, fuse
from detector.types import Detection

UNKNOWN = "unknown"


@dataclass(frozen=True)
class LevelView:
    """One view the level net reads of a chain position: a slice step from the chosen slice
    and a zoom of the crop window."""

    slice_step: int = 0
    zoom: float = 1.0


#: The level net's views, averaged: the chosen slice and its neighbours, and the window a
#: little tighter and wider (a neck and a field of view of other proportions).
LEVEL_VIEWS = tuple(LevelView(k, z) for k in (-1, 0, 1) for z in (0.9, 1.0, 1.12))


#: A key slice's box whose centre lies further than this share of the disc spacing from where
#: its crop looked is on another structure (``shown_box``): the pillar line lies 1/3-1.5 of a
#: spacing behind the discs (``levels._drop_behind``).
SHOWN_BOX_REACH = 1 / 3


@dataclass(frozen=True)
class DiscFinding:
    """The finding at one disc: its level (or ``unknown``), call, probability and key slice."""

    level: str
    label: str  # "herniation" | "normal_disc"
    probability: float  # calibrated herniation probability
    protrusion_mm: float  # estimated posterior protrusion on the key slice
    slice_index: int
    box: tuple[float, float, float, float]
    reason: str | None = None  # why the level is unknown
    logit: float = 0.0  # the herniation net's raw logit (what calibration maps)
    cause: str | None = None  # why the level is unknown, one of ``naming.UNNAMED_CAUSES``

    @property
    def score(self) -> float:
        return self.probability

    @property
    def called(self) -> bool:
        return self.label == "herniation"


@dataclass(frozen=True)
class SeriesAnalysis:
    findings: list[DiscFinding]
    naming: Naming
    calibration: Calibration
    detections: list[list[Detection]]


class Analyzer:
    """The detector and the second stage, ready for a series; build with ``from_checkpoint``."""

    def __init__(
        self,
        detector: Detector,
        discs: DiscModels,
        version: str,
        level_views: Sequence[LevelView] = LEVEL_VIEWS,
    ) -> None:
        self.detector = detector
        self.discs = discs.to(detector.device).eval()
        self.version = version
        self.level_views = tuple(level_views)

    @classmethod
    def from_checkpoint(
        cls, path: Path | str | None = None, device: str | torch.device | None = None, discs: DiscModels | None = None
    ) -> Analyzer:
        """Load ``path`` (None = shipped). ``discs`` replaces its second stage; a detector
        checkpoint without one uses the shipped one's (``meddet calibrate --discs`` adds one)."""
        path = Path(path) if path is not None else SHIPPED_CHECKPOINT
        detector = Detector.from_checkpoint(path, device=pick_device(device))
        if discs is None:
            stored = ckpt.load(path).get("discs") or ckpt.load(SHIPPED_CHECKPOINT).get("discs")
            if stored is None:
                raise ValueError(f"checkpoint: neither {path} nor the shipped checkpoint holds a second stage")
            discs = DiscModels.from_payload(stored)
        return cls(detector, discs, analysis_version(detector.version))

    @property
    def calibration(self) -> Calibration:
        return self.discs.calibration

    def analyze(
        self,
        images: Sequence[np.ndarray],
        pixel_spacing: tuple[float, float],
        detections: list[list[Detection]] | None = None,
    ) -> SeriesAnalysis:
        """Slices [H, W] (raw values, canonical view, one in-plane spacing (row, col) mm) ->
        findings, cranial first."""
        if len(images) == 0:
            raise ValueError("images: the series has no slices")
        if detections is None:
            detections = self.detector.predict(images)
        found = disc_chain(detections)
        if found is None:
            return SeriesAnalysis([], Naming.unnamed(0, "no disc found", "no_disc"), self.calibration, detections)
        volume = torch.from_numpy(np.stack([np.asarray(im, np.float32) for im in images])).to(self.detector.device)
        spacing = (float(pixel_spacing[0]), float(pixel_spacing[1]))
        chain = extend_chain(found, volume.shape[1:])
        naming = self.discs.naming(self.level_log_probs(volume, spacing, chain))
        share = self.discs.key_fraction
        judged = [key_members(m, share) for m in chain.members]
        if naming.status == "found":  # a disc the detector missed, where the count puts one
            judged = [m or (inferred(chain, i, share) if naming.names[i] else []) for i, m in enumerate(judged)]
        chain = Chain(chain.positions, chain.spacing, judged)
        reach = SHOWN_BOX_REACH * chain.spacing
        logits = self.herniation_outputs(volume, spacing, chain)
        findings = []
        for i, members in enumerate(chain.members):
            if not members:
                continue  # an end or gap position with nothing named or seen there
            if naming.status == "found":
                level = naming.names[i]
                if level is None:
                    continue  # not a disc, above C2-C3 or below C7-T1: not a reported level
            else:
                level = UNKNOWN
            findings.append(self._finding(level, members, logits[i], naming, volume.shape[1:], reach))
        return SeriesAnalysis(findings, naming, self.calibration, detections)

    def level_log_probs(self, volume: torch.Tensor, spacing: tuple[float, float], chain: Chain) -> np.ndarray:
        """[L, 8] log-probabilities of each chain position's level: the level net's, or with
        a locator in the second stage, both combined (``fuse``)."""
        how = self.discs.level_fusion if self.discs.locator is not None else "level"
        if how == "locator":  # the level net's view would be discarded: not computed
            return self.locator_log_probs(volume, spacing, chain)
        net = self.level_net_log_probs(volume, spacing, chain)
        return net if how == "level" else fuse(net, self.locator_log_probs(volume, spacing, chain), how)

    @torch.inference_mode()
    def locator_log_probs(self, volume: torch.Tensor, spacing: tuple[float, float], chain: Chain) -> np.ndarray:
        """[L, 8] the locator's level log-probabilities of the chain positions, from one
        window on the central slice anchored on the chain's top seen disc."""
        assert self.discs.locator is not None
        central = _central_slice(chain, volume.shape[0])
        top = next(i for i, m in enumerate(chain.members) if m)
        x, y = chain.positions[top]
        request = CropRequest(central, float(y), float(x))
        window = normalize_crops(take_crops(volume, spacing, LOCATOR_WINDOW, [request]))
        dist = log_distribution(*self.discs.locator(window))[0].cpu().numpy()
        points = to_window(chain.positions[:, ::-1], request, spacing)
        return chain_log_probs(dist, points)

    @torch.inference_mode()
    def level_net_log_probs(self, volume: torch.Tensor, spacing: tuple[float, float], chain: Chain) -> np.ndarray:
        """[L, 8] log-probabilities of each chain position's level: the mean probability of
        the level net's wide crops of ``level_views`` around the central slice."""
        central = _central_slice(chain, volume.shape[0])
        last = volume.shape[0] - 1
        requests = []
        for (x, y), members in zip(chain.positions, chain.members):
            on_central = [d for d in members if d.slice_index == central]
            k = central if on_central or not members else max(members, key=lambda d: d.score).slice_index
            requests += [
                CropRequest(min(max(k + v.slice_step, 0), last), float(y), float(x), zoom=v.zoom)
                for v in self.level_views
            ]
        crops = normalize_crops(take_crops(volume, spacing, self.discs.level_crop, requests))
        probs = torch.softmax(self.discs.level(crops), dim=1).reshape(len(chain.positions), len(self.level_views), -1)
        return torch.log(probs.mean(dim=1).clamp_min(1e-9)).cpu().numpy()

    @torch.inference_mode()
    def herniation_outputs(self, volume: torch.Tensor, spacing: tuple[float, float], chain: Chain) -> list[np.ndarray]:
        """Per chain position, [M, 2] (logit, protrusion mm) for each of its discs (``members``
        already reduced by ``key_members``), on crops centred as the checkpoint stores
        (``crop_anchors``)."""
        requests, owner = [], []
        for i, members in enumerate(chain.members):
            for disc, (row, col) in zip(members, crop_anchors(members, self.discs.crop_anchor)):
                requests.append(CropRequest(disc.slice_index, row, col))
                owner.append(i)
        if not requests:
            return [np.zeros((0, 2)) for _ in chain.members]
        crops = normalize_crops(take_crops(volume, spacing, self.discs.herniation_crop, requests))
        out = self.discs.herniation(crops).cpu().numpy()
        owners = np.array(owner)
        return [out[owners == i] for i in range(len(chain.members))]

    def _finding(
        self,
        level: str,
        members: list[Disc],
        outputs: np.ndarray,
        naming: Naming,
        shape: tuple[int, ...],
        reach: float,
    ) -> DiscFinding:
        """The finding of one disc; its box as ``shown_box`` places it (``reach`` px); an
        ``unknown`` level carries the naming's reason and cause."""
        top = int(np.argmax(outputs[:, 0]))
        probability = float(self.calibration.probability(outputs[top, 0]))
        called = probability >= self.calibration.threshold
        k = top if called else clearest(members)
        disc = members[k]
        row, col = crop_anchors(members, self.discs.crop_anchor)[k]
        return DiscFinding(
            level=level,
            label="herniation" if called else "normal_disc",
            probability=probability,
            protrusion_mm=max(0.0, float(outputs[k, 1])),
            slice_index=disc.slice_index,
            box=shown_box(disc.box, row, col, reach, shape),
            reason=naming.reason if level == UNKNOWN else None,
            logit=float(outputs[top, 0]),
            cause=naming.cause if level == UNKNOWN else None,
        )


def extend_chain(chain: Chain, shape: tuple[int, ...]) -> Chain:
    """The chain with one more position beyond each end (one step along the spine, where it
    is inside the image [H, W]), so that a top or bottom disc the detector missed, e.g. C2-C3
    under the skull base, can still be recognised by the level net and anchor the count."""
    pos, members = list(chain.positions), list(chain.members)
    if len(pos) >= 2:
        h, w = shape[-2], shape[-1]
        inside = lambda p: 0 <= p[0] < w and 0 <= p[1] < h  # noqa: E731
        top, bottom = pos[0] - (pos[1] - pos[0]), pos[-1] + (pos[-1] - pos[-2])
        if inside(top):
            pos, members = [top, *pos], [[], *members]
        if inside(bottom):
            pos, members = [*pos, bottom], [*members, []]
    return Chain(np.stack(pos), chain.spacing, members)


def shown_box(
    box: tuple[float, float, float, float], row: float, col: float, reach: float, shape: tuple[int, ...]
) -> tuple[float, float, float, float]:
    """The box a finding shows for its key slice's ``box`` (x0, y0, x1, y1), whose crop was
    centred on (``row``, ``col``): the box itself when its centre lies within ``reach`` px of
    that point, else the box moved to be centred there. With the "disc" crop anchor a lateral
    slice's own box can lie on an articular pillar, on no disc, while its crop looked at the
    disc; the box then shows where the call looked. Clipped to the image [H, W] (the results'
    writers refuse a box outside it; discs inferred near an edge are kept inside the same way)."""
    h, w = shape[-2], shape[-1]
    x0, y0, x1, y1 = box
    centre_row, centre_col = anchor_of_box(box)
    dx, dy = col - centre_col, row - centre_row
    if dx * dx + dy * dy <= reach * reach:
        dx = dy = 0.0
    clip = lambda v, hi: min(max(v, 0.0), float(hi))  # noqa: E731
    return (clip(x0 + dx, w), clip(y0 + dy, h), clip(x1 + dx, w), clip(y1 + dy, h))


def inferred(chain: Chain, i: int, min_fraction: float = KEY_FRACTION) -> list[Disc]:
    """Discs at chain position ``i``, where nothing was detected: the nearest seen position's
    boxes (its ``key_members``) moved there (same slices), so the herniation net can judge that
    disc too."""
    seen = [j for j, m in enumerate(chain.members) if m]
    if not seen:
        return []
    j = min(seen, key=lambda k: abs(k - i))
    dx, dy = (chain.positions[i] - chain.positions[j]).tolist()
    return [
        Disc(
            d.slice_index,
            d.center + np.array([dx, dy]),
            (d.box[0] + dx, d.box[1] + dy, d.box[2] + dx, d.box[3] + dy),
            0.0,
            0.0,
        )
        for d in key_members(chain.members[j], min_fraction)
    ]


def clearest(members: list[Disc]) -> int:
    """Index of the disc's clearest detection: the highest score, ties (discs inferred where
    nothing was detected) to the middle one."""
    middle = (len(members) - 1) / 2
    return max(range(len(members)), key=lambda i: (members[i].score, -abs(i - middle)))


def key_members(members: list[Disc], min_fraction: float = KEY_FRACTION) -> list[Disc]:
    """The detections of one disc that the call looks at: on each slice the best one, and
    only slices where it scores at least ``min_fraction`` of the disc's best (a faint box on a
    far lateral slice is more often a facet or a foramen than the disc; the checkpoint stores
    the share it was calibrated under)."""
    if not members:
        return []
    floor = min_fraction * max(d.score for d in members)
    best: dict[int, Disc] = {}
    for d in members:
        if d.score >= floor and (d.slice_index not in best or d.score > best[d.slice_index].score):
            best[d.slice_index] = d
    return [best[k] for k in sorted(best)]


def crop_anchors(members: list[Disc], how: str) -> list[tuple[float, float]]:
    """The (row, col) each detection of one disc centres its herniation crop on: "slice", its
    own box's centre; "disc", the same point for all, their centres' mean weighted by score
    (discs inferred where nothing was detected score 0: an unweighted mean)."""
    own = [anchor_of_box(d.box) for d in members]
    if how == "slice" or not members:
        return own
    if how != "disc":
        raise ValueError(f"crop_anchor: expected one of {CROP_ANCHORS}, got {how!r}")
    w = np.array([d.score for d in members]) + 1e-6
    row, col = (np.array(own) * w[:, None]).sum(axis=0) / w.sum()
    return [(float(row), float(col))] * len(members)


def _central_slice(chain: Chain, n_slices: int) -> int:
    """The slice on which most chain positions were seen (ties: nearest the series' middle)."""
    counts = np.zeros(n_slices)
    for members in chain.members:
        for k in {d.slice_index for d in members}:
            counts[k] += 1
    best = np.flatnonzero(counts == counts.max())
    return int(best[np.argmin(np.abs(best - (n_slices - 1) / 2))])


def level_logits(
    analyzer: Analyzer,
    studies: Iterable[tuple[np.ndarray, tuple[float, float], dict[str, bool]]],
) -> tuple[np.ndarray, np.ndarray, int]:
    """Raw herniation logits and truths of every named level of labelled ``studies``
    (volume, spacing, {level: herniated}); also the number of studies whose levels could
    not be named (left out: calibration is of the call, naming is judged on its own)."""
    logits, labels, unnamed = [], [], 0
    for volume, spacing, truth in studies:
        result = analyzer.analyze(list(volume), spacing)
        if result.naming.status != "found":
            unnamed += 1
            continue
        for f in result.findings:
            if f.level in truth:
                logits.append(f.logit)
                labels.append(int(truth[f.level]))
    return np.array(logits), np.array(labels), unnamed
