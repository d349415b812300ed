"""Training the level locator on windows drawn fresh every epoch.

One draw is one synthetic patient: its central sagittal slice (within a few mm of the
midline), a ``LOCATOR_WINDOW`` anchored where the detector's chain would start (mostly on
C2-C3, sometimes a disc or two lower when the top ones are missed, or a non-disc above),
with the geometry randomised (rotation, zoom, cranio-caudal stretch) and the window's look
randomised (``randomize``), and soft targets at the true disc centres. The anatomy is
``samples.widen`` or ``samples.with_craniovertebral_bones`` (half each), the tissue look
our generator's or ``t2_random_contrast`` (half each of what ``random_look`` leaves: that
share is drawn in ``random_contrast``, after which ``benchmarks/naming_dev.py --look
random`` is no longer an unseen look for it). A share of the patients (``other_generator``)
comes from the second training generator instead (``detector.altgen``: another anatomy model
and renderer, as ``train-discs --other-generator``), in training and validation alike. The
held-out generator (``detector.heldout``) never feeds training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detector.altgen import TRAINING_SEEDS, make_study
from detector.data.anatomy import Spine, to_pixels
from detector.data.render import random_contrast, sample_contrast, t2_random_contrast
from detector.data.synthetic import SIZES, study_renderer
from detector.discs.crops import CropRequest, anchor_of_box, normalize_crops, take_crops
from detector.discs.locator import (
    LOCATOR_WINDOW,
    N_DISC_LEVELS,
    STRIDE,
    LevelLocator,
    log_distribution,
    targets,
    to_window,
)
from detector.discs.randomize import randomize
from detector.discs.samples import widen, with_craniovertebral_bones
from detector.naming import LEVEL_CLASSES

#: Which chain position the window is anchored on: a non-disc above C2-C3, C2-C3, C3-C4, C4-C5.
ANCHOR_LEVELS, ANCHOR_WEIGHTS = (-1, 0, 1, 2), (0.05, 0.6, 0.25, 0.1)
#: A ``detector.altgen`` patient's window is its slice this close to the midline (mm) at most.
OTHER_MIDLINE_MM = 3.0


def disc_points(spine: Spine) -> np.ndarray:
    """[7, 2] (row, col px) of the discs' midline centres, C2-C3 .. T1-T2 (v = 0: halfway
    between each disc's front and ``disc_back``)."""
    cols, rows = to_pixels(spine, spine.disc_center, np.zeros_like(spine.disc_center))
    return np.stack([rows, cols], axis=1)


def draw_window(
    rng: np.random.Generator, augment: bool = True, random_look: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """One patient's raw window [1, S, S] and its targets [7, cells + 1]; ``random_look``:
    the share of patients with every tissue's intensity at random (``random_contrast``)."""
    size = int(rng.choice(SIZES))
    adjust = with_craniovertebral_bones if rng.random() < 0.5 else widen
    look = rng.random()
    contrast = (
        random_contrast
        if look < random_look
        else t2_random_contrast
        if look < (1 + random_look) / 2
        else sample_contrast
    )
    spine, render = study_renderer(rng, bool(rng.random() < 0.5), size, adjust=adjust, contrast_of=contrast)
    image = torch.from_numpy(render(float(np.clip(rng.normal(0.0, 2.5), -7.0, 7.0)))).unsqueeze(0)
    ps = spine.pixel_spacing
    return _window(rng, image, (ps, ps), list(disc_points(spine)), augment)


def draw_other_window(rng: np.random.Generator, augment: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """As ``draw_window``, from a ``detector.altgen`` patient (its own anatomy and look): one
    slice within ``OTHER_MIDLINE_MM`` of the midline, targets at its labelled discs' box centres
    (the point the detector's chain would give); a disc the slice does not show is absent."""
    d = float(rng.uniform(-OTHER_MIDLINE_MM, OTHER_MIDLINE_MM))
    study = make_study(int(rng.integers(TRAINING_SEEDS)), bool(rng.random() < 0.5), positions=(d,))
    image = torch.from_numpy(np.ascontiguousarray(study.volume, dtype=np.float32))
    shown = {disc.level: anchor_of_box(disc.boxes[0]) for disc in study.discs if 0 in disc.boxes}
    points = [np.asarray(shown[level]) if level in shown else None for level in LEVEL_CLASSES[:N_DISC_LEVELS]]
    return _window(rng, image, study.pixel_spacing, points, augment)


def _window(
    rng: np.random.Generator,
    image: torch.Tensor,
    spacing: tuple[float, float],
    points: list[np.ndarray | None],
    augment: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``LOCATOR_WINDOW`` of ``image`` [1, H, W] anchored where the detector's chain would
    start (``ANCHOR_LEVELS``; the first shown disc when that one is not shown), its geometry
    randomised when ``augment``, and the targets of the disc ``points`` (row, col px; None:
    not in the image)."""
    seen = [i for i, p in enumerate(points) if p is not None]
    k = int(rng.choice(ANCHOR_LEVELS, p=ANCHOR_WEIGHTS))
    first, second = points[0], points[1]
    if k < 0 and first is not None and second is not None:
        anchor: np.ndarray = 2 * first - second
    else:
        anchor = np.asarray(points[k if k in seen else seen[0]])
    if augment:
        anchor = anchor + rng.normal(0.0, 2.0 / np.asarray(spacing))
        request = CropRequest(
            0,
            float(anchor[0]),
            float(anchor[1]),
            float(rng.uniform(-0.3, 0.3)),
            float(np.exp(rng.uniform(-0.2, 0.2))),
            float(np.exp(rng.uniform(-0.12, 0.12))),
        )
    else:
        request = CropRequest(0, float(anchor[0]), float(anchor[1]))
    window = take_crops(image, spacing, LOCATOR_WINDOW, [request])[0]
    h, w = image.shape[-2:]
    inside = [p if p is not None and 0 <= p[0] < h and 0 <= p[1] < w else None for p in points]
    in_window = to_window(np.stack([p if p is not None else np.zeros(2) for p in points]), request, spacing)
    return window, targets([q if p is not None else None for p, q in zip(inside, in_window)])


def draw_windows(
    seed: tuple[int, ...], n: int, augment: bool = True, random_look: float = 0.0, other_generator: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` patients' windows [n, 1, S, S] (raw) and targets; patient i from (seed, i), a
    share ``other_generator`` of them drawn by ``detector.altgen`` (``draw_other_window``)."""
    pairs = [_draw(np.random.default_rng([*seed, i]), augment, random_look, other_generator) for i in range(n)]
    return torch.stack([w for w, _ in pairs]), torch.stack([t for _, t in pairs])


def _draw(
    rng: np.random.Generator, augment: bool, random_look: float, other_generator: float
) -> tuple[torch.Tensor, torch.Tensor]:
    if other_generator > 0 and rng.random() < other_generator:  # no draw at 0: patients as before
        return draw_other_window(rng, augment)
    return draw_window(rng, augment, random_look)


@dataclass(frozen=True)
class LocatorTrainConfig:
    epochs: int = 16
    patients_per_epoch: int = 1024
    passes: int = 2  # passes over each epoch's patients, each with a fresh ``randomize``
    val_patients: int = 256
    batch: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    width: int = 32
    seed: int = 0
    random_look: float = 0.0  # share of patients in ``random_contrast`` (the rest: half T2 random, half ours)
    other_generator: float = 0.0  # share of patients from ``detector.altgen`` (before ``random_look``)


def loss_of(net: LevelLocator, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the soft targets, summed over levels, mean over windows."""
    return -(target * log_distribution(*net(x))).sum(dim=2).sum(dim=1).mean()


def c2c3_error_mm(net: LevelLocator, x: torch.Tensor, target: torch.Tensor) -> float:
    """Median distance (mm) between the predicted and true C2-C3 cell (windows where it is in view)."""
    with torch.no_grad():
        maps, _ = net(x)
    pred = maps[:, 0].flatten(1).argmax(dim=1)
    true = target[:, 0, :-1].argmax(dim=1)
    ok = target[:, 0, -1] < 0.5
    cells = maps.shape[-1]
    d = torch.stack([(pred // cells - true // cells), (pred % cells - true % cells)], 1).float().norm(dim=1)
    return float(d[ok].median()) * STRIDE * LOCATOR_WINDOW.mm_per_px


def train_locator(cfg: LocatorTrainConfig, out: Path, log: Callable[[str], None] = print) -> Path:
    """Train, keep the checkpoint of the best validation loss at ``out``/locator.pt; one
    ``log`` line per epoch."""
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(cfg.seed)
    net = LevelLocator(cfg.width)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps = cfg.epochs * cfg.passes * math.ceil(cfg.patients_per_epoch / cfg.batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=steps, pct_start=0.1)
    vx, vt = draw_windows((cfg.seed, 999_999), cfg.val_patients, augment=False, other_generator=cfg.other_generator)
    vx = normalize_crops(vx)
    best = math.inf
    for epoch in range(cfg.epochs):
        t0 = time.monotonic()
        raw, t = draw_windows(
            (cfg.seed, epoch), cfg.patients_per_epoch, random_look=cfg.random_look, other_generator=cfg.other_generator
        )
        net.train()
        total = 0.0
        for _ in range(cfg.passes):
            x = normalize_crops(randomize(raw, gen))
            order = torch.randperm(len(x), generator=gen)
            for i in range(0, len(x), cfg.batch):
                idx = order[i : i + cfg.batch]
                loss = loss_of(net, x[idx], t[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                total += float(loss.detach()) * len(idx) / cfg.passes
        net.eval()
        with torch.no_grad():
            val = float(loss_of(net, vx, vt))
        err = c2c3_error_mm(net, vx, vt)
        log(
            f"locator epoch {epoch + 1}/{cfg.epochs}: train {total / len(raw):.3f} val {val:.3f} "
            f"C2-C3 median error {err:.1f} mm ({time.monotonic() - t0:.0f} s)"
        )
        if val < best:
            best = val
            state = {"state": net.state_dict(), "width": cfg.width, "epoch": epoch + 1, "val": val}
            torch.save(state, out / "locator.pt")
    return out / "locator.pt"
