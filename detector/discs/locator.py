"""The level locator: where each disc level is, seen on a whole mid-sagittal window.

The level net judges one disc from a 108 mm crop around it; on images unlike our generator's
it is often unsure which disc is C2-C3. The locator looks at the whole neck at once (a 192 mm
window from above the skull base to below the cervicothoracic junction, on the chain's
central slice) and outputs, for each level C2-C3 .. T1-T2, a map of where that disc is (a
softmax over the window's cells, plus one "not in the window" outcome). Reading the maps at
the positions of the detected disc chain gives the same [L, 8] level log-probabilities as
the level net (``chain_log_probs``), so ``name_chain`` takes either, or both combined.

Window convention as in ``detector.discs.crops``; the window is anchored on the chain's top
seen disc, which sits ``LOCATOR_WINDOW.offset_mm`` above the window's centre.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from detector.discs.crops import CropRequest, CropSpec
from detector.naming import N_LEVEL_CLASSES, NOT_DISC

#: 192 mm at 1.5 mm/px; the anchor (the chain's top seen disc) 72 mm below the window's top.
LOCATOR_WINDOW = CropSpec(mm_per_px=1.5, size=128, offset_mm=(24.0, 0.0), neighbours=(0,))
#: Output cells are STRIDE x STRIDE window pixels (6 mm).
STRIDE = 4
N_DISC_LEVELS = N_LEVEL_CLASSES - 1  # C2-C3 .. T1-T2


def _block(c_in: int, c_out: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class LevelLocator(nn.Module):
    """Window [N, 1, S, S] (normalised) -> (maps [N, 7, S/4, S/4], absent [N, 7]) logits.

    Three stride-2 stages, dilated convolutions at 1/8 for context across the whole neck (the
    count from the skull base down), then back to 1/4 with the 1/4 features added."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = width
        self.down4 = nn.Sequential(_block(1, w // 2, 2), _block(w // 2, w // 2), _block(w // 2, w, 2), _block(w, w))
        self.down8 = nn.Sequential(_block(w, 2 * w, 2), *(_block(2 * w, 2 * w, dilation=d) for d in (2, 4, 8, 1)))
        self.up = nn.Sequential(nn.Conv2d(2 * w, w, 1, bias=False), nn.BatchNorm2d(w))
        self.fuse = _block(w, w)
        self.maps = nn.Conv2d(w, N_DISC_LEVELS, 1)
        self.absent = nn.Linear(2 * w, N_DISC_LEVELS)
        self.width = width

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f4 = self.down4(x)
        f8 = self.down8(f4)
        up = nn.functional.interpolate(self.up(f8), size=f4.shape[-2:], mode="bilinear", align_corners=False)
        return self.maps(self.fuse(torch.relu(f4 + up))), self.absent(f8.mean(dim=(2, 3)))


def load_locator(path: Path | str) -> LevelLocator:
    """The locator saved by ``meddet train-locator`` (OUT/locator.pt), in eval mode."""
    saved = torch.load(path, weights_only=True)
    if not isinstance(saved, dict) or "state" not in saved or "width" not in saved:
        raise ValueError(f"{path}: not a level locator (expected locator.pt of `meddet train-locator`)")
    net = LevelLocator(int(saved["width"]))
    net.load_state_dict(saved["state"])
    return net.eval()


def log_distribution(maps: Tensor, absent: Tensor) -> Tensor:
    """Per level, log-probabilities over the cells and "not in the window": [N, 7, cells + 1]."""
    return torch.log_softmax(torch.cat([maps.flatten(2), absent.unsqueeze(-1)], dim=2), dim=2)


def to_window(
    points: np.ndarray, request: CropRequest, spacing: tuple[float, float], spec: CropSpec = LOCATOR_WINDOW
) -> np.ndarray:
    """Image points [K, 2] (row, col px) -> window pixel coordinates [K, 2] (row, col): the
    inverse of ``crops._grid`` for one request."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    my = (p[:, 0] - request.row) * spacing[0] / request.zoom - spec.offset_mm[0]
    mx = (p[:, 1] - request.col) * spacing[1] / request.zoom - spec.offset_mm[1]
    ca, sa = np.cos(request.angle), np.sin(request.angle)
    dy = (ca * my + sa * mx) / request.stretch
    dx = -sa * my + ca * mx
    half = (spec.size - 1) / 2
    return np.stack([dy / spec.mm_per_px + half, dx / spec.mm_per_px + half], axis=1)


def targets(window_points: Sequence[np.ndarray | None], size: int = LOCATOR_WINDOW.size, sigma: float = 1.0) -> Tensor:
    """Soft targets [7, cells + 1] for one window: per level a Gaussian (``sigma`` cells) at
    its disc's window point, or all mass on "not in the window" (None, or outside)."""
    cells = size // STRIDE
    yy, xx = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
    out = np.zeros((N_DISC_LEVELS, cells * cells + 1), dtype=np.float32)
    for j, point in enumerate(window_points):
        if point is None or not (0 <= point[0] < size and 0 <= point[1] < size):
            out[j, -1] = 1.0
            continue
        cy, cx = (point[0] + 0.5) / STRIDE - 0.5, (point[1] + 0.5) / STRIDE - 0.5
        g = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma**2)).flatten()
        out[j, :-1] = g / g.sum()
    return torch.from_numpy(out)


def chain_log_probs(log_dist: np.ndarray, window_points: np.ndarray, reach: float = 0.6) -> np.ndarray:
    """[L, 8] level log-probabilities of the chain positions at ``window_points`` [L, 2]
    (window px), from one window's ``log_distribution`` [7, cells + 1].

    Each cell belongs to its nearest chain position if it is within ``reach`` x the chain's
    step of it; a position's mass for a level is that level's probability in its cells.
    The rest of a position's probability (1 - the sum over levels, at least 1e-3) is "not a
    disc"; each row is then normalised."""
    pts = np.asarray(window_points, dtype=np.float64).reshape(-1, 2)
    n = len(pts)
    cells = int(round(np.sqrt(log_dist.shape[1] - 1)))
    cy, cx = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
    centres = np.stack([(cy.flatten() + 0.5) * STRIDE - 0.5, (cx.flatten() + 0.5) * STRIDE - 0.5], axis=1)
    dist = np.linalg.norm(centres[:, None, :] - pts[None, :, :], axis=2)  # [cells, L]
    step = float(np.median(np.linalg.norm(np.diff(pts, axis=0), axis=1))) if n >= 2 else 12.0
    owner = np.where(dist.min(axis=1) <= reach * step, dist.argmin(axis=1), -1)
    p = np.exp(log_dist[:, :-1])  # [7, cells]
    mass = np.stack([p[:, owner == i].sum(axis=1) for i in range(n)]) if n else np.zeros((0, N_DISC_LEVELS))
    rest = np.clip(1.0 - mass.sum(axis=1, keepdims=True), 1e-3, None)
    probs = np.concatenate([mass, rest], axis=1) + 1e-6
    probs /= probs.sum(axis=1, keepdims=True)
    assert probs.shape[1] == NOT_DISC + 1
    return np.log(probs)
