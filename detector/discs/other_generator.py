"""Second-stage crops from a second training generator, written independently of ours (``detector.altgen``).

Our generator draws one neck: one skull base, one dens, one set of proportions, however widened.
The level net learnt that drawing, and it names the chain on few necks drawn otherwise. A
share of the training patients (``Variety.other_generator``) therefore comes from
``detector.altgen``, another anatomy model and renderer: three neighbouring sagittal slices
around a lateral position, and level crops as ``samples`` takes them from ours: on every disc
the middle slice cuts (anchored on its box, jittered), "not a disc" on two of its vertebral
bodies, the dens, C1's anterior arch, where a chain extended above C2-C3 looks, and anywhere.
And herniation crops on its discs' jittered boxes, labelled with the protrusion the middle
slice shows. ``detector.heldout`` never feeds training; this is not it.
"""

from __future__ import annotations

import numpy as np
import torch

from detector.altgen import DISCS_SHOW_MM, TRAINING_SEEDS, AltStudy, make_study
from detector.discs.crop_batch import CropBatch, jitter_box, shift_anchor
from detector.discs.crops import CropRequest, CropSpec, anchor_of_box, random_level_request, take_crops
from detector.naming import LEVEL_CLASSES, NOT_DISC

#: The step between the three slices (mm); the middle one is within ``DISCS_SHOW_MM`` of the midline.
STEP_MM = (2.5, 4.5)


def draw_other(
    rng: np.random.Generator,
    herniation_spec: CropSpec,
    level_spec: CropSpec,
    augment: bool = True,
    warp_mm: float = 0.0,
    anchor_shift_mm: float = 0.0,
    annulus_anchor: bool = False,
) -> CropBatch:
    """The crops of one ``detector.altgen`` patient: a herniation crop on every disc the middle
    slice cuts (its box jittered and its anchor shifted as in ``samples``), labelled with the
    protrusion that slice shows, and the level crops of ``level_points``. ``annulus_anchor``:
    the anchor moved forward by half the slice's protrusion, which its box covers (the place of
    the crop then does not tell the label, as ``samples.annulus_boxes``)."""
    hard = bool(rng.random() < 0.5)
    d = float(rng.uniform(-DISCS_SHOW_MM, DISCS_SHOW_MM))
    step = float(rng.uniform(*STEP_MM))
    study = make_study(int(rng.integers(TRAINING_SEEDS)), hard, positions=(d - step, d, d + step))
    volume = torch.from_numpy(np.ascontiguousarray(study.volume, dtype=np.float32))
    shown = [disc for disc in study.discs if 1 in disc.boxes]
    h_req = []
    for disc in shown:
        box = np.asarray(disc.boxes[1], dtype=np.float64)
        row, col = anchor_of_box(jitter_box(rng, box, min(study.pixel_spacing)) if augment else box)
        if annulus_anchor:
            col -= disc.protrusion_by_slice[1] / 2 / study.pixel_spacing[1]
        if augment and anchor_shift_mm > 0:
            row, col = shift_anchor(rng, (row, col), anchor_shift_mm, study.pixel_spacing)
        angle, zoom = (float(rng.uniform(-0.2, 0.2)), float(rng.uniform(0.965, 1.035))) if augment else (0.0, 1.0)
        h_req.append(CropRequest(1, row, col, angle, zoom))
    points = level_points(study, 1, rng)
    requests = [random_level_request(rng, p, warp_mm) if augment else CropRequest(1, *p) for p, _ in points]
    return CropBatch(
        herniation=take_crops(volume, study.pixel_spacing, herniation_spec, h_req),
        protrusion_mm=torch.tensor([disc.protrusion_by_slice[1] for disc in shown], dtype=torch.float32),
        level=take_crops(volume, study.pixel_spacing, level_spec, requests),
        level_class=torch.tensor([c for _, c in points], dtype=torch.int64),
    )


def level_points(study: AltStudy, k: int, rng: np.random.Generator) -> list[tuple[tuple[float, float], int]]:
    """(row, col) points on slice ``k`` with their ``LEVEL_CLASSES`` index: every disc the slice
    cuts (its box's anchor, jittered ~1.5 mm as in ``samples``) and places that are not a disc."""
    sr, sc = study.pixel_spacing
    h, w = study.volume.shape[1:]
    out: list[tuple[tuple[float, float], int]] = []
    anchors: dict[str, tuple[float, float]] = {}
    for disc in study.discs:
        if k not in disc.boxes or disc.level not in LEVEL_CLASSES:
            continue
        row, col = anchors[disc.level] = anchor_of_box(disc.boxes[k])
        out.append(((row + rng.normal(0, 1.5 / sr), col + rng.normal(0, 1.5 / sc)), LEVEL_CLASSES.index(disc.level)))
    marks = study.landmarks.get(k, {})
    bodies = [p for name, p in marks.items() if name.startswith("body:")]
    others = [p for name, p in marks.items() if name in ("dens", "c1_arch")]
    picks = [bodies[i] for i in rng.choice(len(bodies), size=min(2, len(bodies)), replace=False)] + others
    for row, col in picks:
        out.append(((row + rng.normal(0, 2.0 / sr), col + rng.normal(0, 2.0 / sc)), NOT_DISC))
    if "C2-C3" in anchors and "C3-C4" in anchors:  # where a chain extended above C2-C3 looks
        (r2, c2), (r3, c3) = anchors["C2-C3"], anchors["C3-C4"]
        f = rng.uniform(0.8, 1.3)
        row, col = r2 + (r2 - r3) * f, c2 + (c2 - c3) * f
        if 0 <= row < h and 0 <= col < w:
            out.append(((row, col), NOT_DISC))
    if rng.random() < 0.5:  # anywhere: neck, skull, background
        out.append(((rng.uniform(0, h), rng.uniform(0, w)), NOT_DISC))
    return out
