"""MRI-suited augmentation in torch: intensity, bias field, small affine, Rician-like noise.

No flips: on a sagittal slice a left/right flip swaps anterior and posterior and an up/down
flip swaps head and feet; neither happens in a real scan. The affine is small (a few degrees,
a few percent) because patients lie in a head-neck coil in a standard position.

``Augment()(image, boxes) -> (image, boxes)``: image float [C, H, W] (normalised, about
0..1), boxes [N, 4] x0 y0 x1 y1 in pixels. The number and order of boxes never change (the
labels stay aligned); boxes are clipped to the image and kept at least ``min_size`` pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass(frozen=True)
class Augment:
    """Random MRI augmentation; each part applied with probability ``p``.

    Uses ``generator`` when given, else torch's global RNG (seeded by training).
    """

    p: float = 0.5
    scale: tuple[float, float] = (0.85, 1.15)  # intensity scale
    gamma: tuple[float, float] = (0.7, 1.5)
    bias: float = 0.25  # amplitude of a smooth multiplicative field
    degrees: float = 7.0
    zoom: tuple[float, float] = (0.9, 1.1)
    shift: float = 0.05  # fraction of the image size
    noise: tuple[float, float] = (0.0, 0.06)  # Rician sigma, relative to the 0..1 range
    min_size: float = 2.0
    look: float = 0.0  # probability of the second stage's look randomisation (``randomize``)
    generator: torch.Generator | None = None

    def __call__(self, image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        if self._happens():
            image, boxes = self.affine(image, boxes)
        if self._happens():
            image = image * self._uniform(*self.scale)
        if self._happens():
            image = image.clamp(min=0) ** self._uniform(*self.gamma)
        if self._happens():
            image = image * self._bias_field(image.shape[-2:]).to(image)
        if self._happens():
            image = self.rician(image, self._uniform(*self.noise))
        if self.look and float(torch.rand((), generator=self.generator)) < self.look:
            image = self.randomize_look(image)
        return image, boxes

    def randomize_look(self, image: Tensor) -> Tensor:
        """Another scanner's look (intensity curve, resolution, ringing, bias, ghosts, flow
        voids, noise; ``detector.discs.randomize``), windowed back to about 0..1."""
        from detector.discs.randomize import randomize

        out = randomize(image[None].float().clamp_min(0), self.generator or torch.default_generator, 0.8)[0]
        return (out / out.flatten().quantile(0.995).clamp_min(1e-6)).clamp(0, 1).to(image.dtype)

    def affine(self, image: Tensor, boxes: Tensor) -> tuple[Tensor, Tensor]:
        """Rotate/zoom/shift the image [C, H, W] about its centre; boxes follow (inscribed
        ellipse of each box mapped, then its extent: tight for round objects like discs)."""
        _, h, w = image.shape
        angle = math.radians(self._uniform(-self.degrees, self.degrees))
        zoom = self._uniform(*self.zoom)
        tx, ty = self._uniform(-self.shift, self.shift) * w, self._uniform(-self.shift, self.shift) * h
        cos, sin = math.cos(angle) * zoom, math.sin(angle) * zoom
        fwd = torch.tensor([[cos, -sin], [sin, cos]], dtype=torch.float32)  # input -> output
        inv = torch.linalg.inv(fwd)
        # grid_sample wants, per output pixel, the input location in normalised coordinates
        norm = torch.tensor([w / 2, h / 2], dtype=torch.float32)
        t = torch.tensor([tx, ty], dtype=torch.float32)
        theta = torch.zeros(1, 2, 3)
        theta[0, :, :2] = torch.diag(1 / norm) @ inv @ torch.diag(norm)
        theta[0, :, 2] = -(torch.diag(1 / norm) @ inv @ t)
        grid = F.affine_grid(theta, [1, image.shape[0], h, w], align_corners=False)
        out = F.grid_sample(
            image[None].float(), grid.to(image.device), mode="bilinear", padding_mode="zeros", align_corners=False
        )[0].to(image.dtype)
        return out, self._map_boxes(boxes, fwd, t, (h, w))

    def _map_boxes(self, boxes: Tensor, fwd: Tensor, t: Tensor, hw: tuple[int, int]) -> Tensor:
        if boxes.numel() == 0:
            return boxes
        h, w = hw
        a = torch.linspace(0, 2 * math.pi, 33)[:-1]
        b = boxes.float().cpu()
        c = (b[:, :2] + b[:, 2:]) / 2
        r = (b[:, 2:] - b[:, :2]) / 2
        pts = c[:, None, :] + r[:, None, :] * torch.stack([a.cos(), a.sin()], 1)[None]  # [N, 32, 2]
        center = torch.tensor([w / 2, h / 2])
        out = (pts - center) @ fwd.T + center + t
        new = torch.cat([out.amin(1), out.amax(1)], 1)
        return _clip(new, h, w, self.min_size).to(boxes)

    def rician(self, image: Tensor, sigma: float) -> Tensor:
        """Magnitude of the image plus complex Gaussian noise of std ``sigma``."""
        if sigma <= 0:
            return image
        re = image + sigma * torch.randn(image.shape, generator=self.generator).to(image)
        im = sigma * torch.randn(image.shape, generator=self.generator).to(image)
        return torch.sqrt(re * re + im * im)

    def _bias_field(self, hw: torch.Size) -> Tensor:
        coarse = 1 + self.bias * (2 * torch.rand(1, 1, 3, 3, generator=self.generator) - 1)
        return F.interpolate(coarse, size=tuple(hw), mode="bicubic", align_corners=True)[0].clamp(min=0.3)

    def _uniform(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * float(torch.rand((), generator=self.generator))

    def _happens(self) -> bool:
        return float(torch.rand((), generator=self.generator)) < self.p


def _clip(boxes: Tensor, h: int, w: int, min_size: float) -> Tensor:
    """Clip to the image, then grow any box thinner than ``min_size`` back to it (inside)."""
    x0, y0 = boxes[:, 0].clamp(0, w), boxes[:, 1].clamp(0, h)
    x1, y1 = boxes[:, 2].clamp(0, w), boxes[:, 3].clamp(0, h)
    cx = ((x0 + x1) / 2).clamp(min_size / 2, w - min_size / 2)
    cy = ((y0 + y1) / 2).clamp(min_size / 2, h - min_size / 2)
    hw_ = torch.maximum(x1 - x0, torch.tensor(min_size)) / 2
    hh = torch.maximum(y1 - y0, torch.tensor(min_size)) / 2
    return torch.stack(
        [(cx - hw_).clamp(0, w), (cy - hh).clamp(0, h), (cx + hw_).clamp(0, w), (cy + hh).clamp(0, h)], 1
    )
