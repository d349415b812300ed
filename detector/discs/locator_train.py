"""Training the level locator on windows drawn fresh from our own generator.

One draw is one synthetic patient: its central sagittal slice (within a few mm of the
midline), a ``LOCATOR_WINDOW`` anchored where the detector's chain would start (mostly on
C2-C3, sometimes a disc or two lower when the top ones are missed, or a non-disc above),
with the geometry randomised (rotation, zoom, cranio-caudal stretch) and the window's look
randomised (``randomize``), and soft targets at the true disc centres. The anatomy is
``samples.widen`` or ``samples.with_craniovertebral_bones`` (half each), the tissue look
our generator's or ``t2_random_contrast`` (half each of what ``random_look`` leaves: that
share is drawn in ``random_contrast``, after which ``benchmarks/naming_dev.py --look
random`` is no longer an unseen look for it). Only ``detector.data`` is used: the held-out
generator never feeds training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from detector.data.anatomy import Spine, to_pixels
from detector.data.render import random_contrast, sample_contrast, t2_random_contrast
from detector.data.synthetic import SIZES, study_renderer
from detector.discs.crops import CropRequest, normalize_crops, take_crops
from detector.discs.locator import LOCATOR_WINDOW, STRIDE, LevelLocator, log_distribution, targets, to_window
from detector.discs.randomize import randomize
from detector.discs.samples import widen, with_craniovertebral_bones

#: Which chain position the window is anchored on: a non-disc above C2-C3, C2-C3, C3-C4, C4-C5.
ANCHOR_LEVELS, ANCHOR_WEIGHTS = (-1, 0, 1, 2), (0.05, 0.6, 0.25, 0.1)


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
    points = disc_points(spine)
    k = int(rng.choice(ANCHOR_LEVELS, p=ANCHOR_WEIGHTS))
    anchor = points[k] if k >= 0 else 2 * points[0] - points[1]
    ps = spine.pixel_spacing
    if augment:
        anchor = anchor + rng.normal(0.0, 2.0 / ps, 2)
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
    window = take_crops(image, (ps, ps), LOCATOR_WINDOW, [request])[0]
    inside = [(0 <= r < size and 0 <= c < size) for r, c in points]
    in_window = to_window(points, request, (ps, ps))
    return window, targets([p if ok else None for p, ok in zip(in_window, inside)])


def draw_windows(
    seed: tuple[int, ...], n: int, augment: bool = True, random_look: float = 0.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` patients' windows [n, 1, S, S] (raw) and targets; patient i from (seed, i)."""
    pairs = [draw_window(np.random.default_rng([*seed, i]), augment, random_look) for i in range(n)]
    return torch.stack([w for w, _ in pairs]), torch.stack([t for _, t in pairs])


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
    vx, vt = draw_windows((cfg.seed, 999_999), cfg.val_patients, augment=False)
    vx = normalize_crops(vx)
    best = math.inf
    for epoch in range(cfg.epochs):
        t0 = time.monotonic()
        raw, t = draw_windows((cfg.seed, epoch), cfg.patients_per_epoch, random_look=cfg.random_look)
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
