"""Domain randomisation of raw crops: what another scanner (or generator) could do to them.

Applied to a batch of raw crops [N, C, S, S] before normalisation, each crop with its own
draw: an intensity curve (gamma and a random monotone map), contrast between tissues,
blur, a lower acquired resolution, Gibbs ringing (truncated k-space), a coil bias ramp,
motion ghosts, dark flow-void blobs, and Rician noise. The training crops come from one
generator; these make its particular look something the classifier cannot lean on.

With ``acquired_noise`` the noise is drawn as a scanner makes it: white at the acquired pixel,
so band-limited (zero-filled k-space) at the crop's 0.3 mm when the acquisition was coarser,
and each group of ``GROUP`` crops gets its own acquired resolution instead of one per call.

With ``texture`` a share of the crops first pass through a random shallow convolutional net
(global intensity non-linear augmentation, GIN: Ouyang et al., "Causality-inspired
single-source domain generalization for medical image segmentation", IEEE TMI 2023), mixed
with the crop: local texture and edge contrast change as between two renderers or scanners,
while the shapes stay. Its sign follows the crop's, so that fluid stays bright on T2.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

#: crops that share one acquisition draw (resolution, noise grain) with ``acquired_noise``
GROUP = 32


def randomize(
    crops: Tensor,
    gen: torch.Generator,
    strength: float = 1.0,
    coarsest: float = 2.5,
    acquired_noise: bool = False,
    texture: float = 0.0,
) -> Tensor:
    """A randomised copy of ``crops`` [N, C, S, S] (raw, >= 0); ``strength`` scales every effect.
    ``coarsest``: the coarsest acquired resolution simulated (on half the crops), in crop pixels
    (for a 0.3 mm/px crop 2.5 is 0.75 mm, 4 is 1.2 mm: a 256 matrix over 300 mm).
    ``acquired_noise``: noise band-limited to the acquired resolution, drawn per group of crops.
    ``texture``: the share of crops given a random texture first (``random_texture``); 0 draws
    nothing, so the other effects are drawn exactly as without it."""
    n, c, s, _ = crops.shape
    if n == 0:
        return crops
    if acquired_noise and n > GROUP:
        return torch.cat([randomize(g, gen, strength, coarsest, True, texture) for g in crops.split(GROUP)])
    u = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    x = crops / crops.flatten(1).quantile(0.99, dim=1).clamp_min(1e-6).view(n, 1, 1, 1)
    x = x.clamp(0, 1.5)
    if texture > 0:
        pick = u(n) < texture
        if pick.any():
            x[pick] = random_texture(x[pick], gen)

    # intensity curve: gamma, then a random monotone piecewise-linear map
    gamma = torch.exp((u(n) * 2 - 1) * 0.5 * strength).view(n, 1, 1, 1)
    x = x.clamp_min(0) ** gamma
    knots = torch.sort(u(n, 3), dim=1).values
    knots = knots * strength + torch.tensor([0.25, 0.5, 0.75]) * (1 - strength)
    x = _piecewise(x, knots)

    # lower acquired resolution, then blur
    coarse = u(n) < 0.5 * strength
    f = 1.0
    if coarse.any():
        f = 1 + u(1).item() * (coarsest - 1) * strength
        small = max(8, int(s / f))
        low = F.interpolate(x[coarse], size=(small, small), mode="area")
        x[coarse] = F.interpolate(low, size=(s, s), mode="bilinear", align_corners=False)
    sigma = u(1).item() * 1.2 * strength
    if sigma > 0.2:
        x = _blur(x, sigma)

    # Gibbs ringing along one axis: keep a central fraction of k-space
    pick = u(n) < 0.3 * strength
    if pick.any():
        x[pick] = _truncate_kspace(x[pick], keep=0.35 + 0.5 * u(1).item(), axis=int(u(1).item() < 0.5) + 2)

    # coil bias ramp and ghosts
    ramp = torch.linspace(-1, 1, s)
    gx = ((u(n) * 2 - 1) * 0.5 * strength).view(n, 1, 1, 1) * ramp.view(1, 1, 1, s)
    gy = ((u(n) * 2 - 1) * 0.3 * strength).view(n, 1, 1, 1) * ramp.view(1, 1, s, 1)
    x = x * (1 + gx + gy).clamp_min(0.2)
    pick = u(n) < 0.3 * strength
    if pick.any():
        shift = int(s * (0.1 + 0.4 * u(1).item()))
        x[pick] = x[pick] + 0.25 * u(1).item() * torch.roll(x[pick], shift, dims=2 + int(u(1).item() < 0.5))

    # flow voids: a few dark blobs
    pick = torch.nonzero(u(n) < 0.25 * strength).flatten()
    if len(pick):
        yy, xx = torch.meshgrid(
            torch.arange(s, dtype=torch.float32), torch.arange(s, dtype=torch.float32), indexing="ij"
        )
        for i in pick.tolist():
            cy, cx, r = u(1).item() * s, u(1).item() * s, 1.5 + u(1).item() * s / 12
            blob = ((yy - cy) ** 2 + (xx - cx) ** 2) < r * r
            x[i, :, blob] *= 0.2 + 0.4 * u(1).item()

    # Rician noise
    sd = (u(n) ** 2 * 0.12 * strength).view(n, 1, 1, 1)
    if acquired_noise:
        grain = torch.where(coarse, f, 1.0).view(n, 1, 1, 1)
        re = x + sd * band_limited_noise(x.shape, grain, gen)
        im = sd * band_limited_noise(x.shape, grain, gen)
    else:
        re = x + sd * torch.randn(x.shape, generator=gen)
        im = sd * torch.randn(x.shape, generator=gen)
    return torch.sqrt(re * re + im * im)


def random_texture(x: Tensor, gen: torch.Generator, layers: int = 4, width: int = 2) -> Tensor:
    """``x`` [N, C, S, S] (>= 0, ~[0, 1]) through a random shallow net, one per group of ``GROUP``
    crops (GIN): ``layers`` convolutions of kernel 1 or 3 with N(0, 1) weights, ``width``
    channels, leaky ReLUs between, applied to each slice channel alike (they are neighbouring
    slices of one scan). The output has each crop's own mean and spread, is mixed with the crop
    by a random weight, and keeps the crop's sign (bright stays bright where the two
    correlate); >= 0."""
    n, c, s, _ = x.shape
    if n > GROUP:
        return torch.cat([random_texture(g, gen, layers, width) for g in x.split(GROUP)])
    u = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    y = x.reshape(n * c, 1, s, s)
    channels = [1] + [width] * (layers - 1) + [1]
    for i in range(layers):
        k = 1 if u(1).item() < 0.5 else 3
        w = torch.randn(channels[i + 1], channels[i], k, k, generator=gen)
        y = F.conv2d(y, w, padding=k // 2)
        if i < layers - 1:
            y = F.leaky_relu(y, 0.2)
    y = y.view(n, c, s, s)
    flat_x, flat_y = x.flatten(1), y.flatten(1)
    zx = flat_x - flat_x.mean(1, keepdim=True)
    zy = flat_y - flat_y.mean(1, keepdim=True)
    sign = torch.where((zx * zy).sum(1) < 0, -1.0, 1.0)
    zy = zy * sign[:, None] / zy.std(1, keepdim=True).clamp_min(1e-6) * zx.std(1, keepdim=True)
    out = (zy + flat_x.mean(1, keepdim=True)).view_as(x)
    alpha = u(n).view(n, 1, 1, 1)
    return (alpha * out + (1 - alpha) * x).clamp_min(0)


def band_limited_noise(shape: torch.Size, grain: Tensor, gen: torch.Generator) -> Tensor:
    """Unit-variance noise [N, C, S, S], white at ``grain`` [N, 1, 1, 1] crop pixels: the central
    1/grain of k-space along both axes kept, as zero-filling a coarser acquisition leaves it."""
    z = torch.randn(shape, generator=gen)
    s = shape[-1]
    freq = torch.fft.fftfreq(s).abs()  # cycles per crop pixel, 0 .. 0.5
    keep = (freq.view(1, 1, s, 1) <= 0.5 / grain) & (freq.view(1, 1, 1, s) <= 0.5 / grain)
    z = torch.fft.ifft2(torch.fft.fft2(z) * keep).real
    return z / z.flatten(1).std(dim=1).clamp_min(1e-6).view(-1, 1, 1, 1)


def _piecewise(x: Tensor, knots: Tensor) -> Tensor:
    """Map [0, 1] through the monotone curve (0,0) (.25,k0) (.5,k1) (.75,k2) (1,1), per crop."""
    n = x.shape[0]
    xs = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0])
    ys = torch.cat([torch.zeros(n, 1), knots, torch.ones(n, 1)], dim=1)  # [N, 5]
    xc = x.clamp(0, 1)
    seg = torch.clamp((xc * 4).long(), max=3)
    y0 = torch.gather(ys, 1, seg.flatten(1)).view_as(x)
    y1 = torch.gather(ys, 1, (seg + 1).flatten(1)).view_as(x)
    t = (xc - xs[seg]) * 4
    return y0 + (y1 - y0) * t + (x - xc)


def _blur(x: Tensor, sigma: float) -> Tensor:
    r = max(1, int(math.ceil(2 * sigma)))
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float32) / sigma) ** 2)
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def _truncate_kspace(x: Tensor, keep: float, axis: int) -> Tensor:
    k = torch.fft.fftshift(torch.fft.fft2(x), dim=(-2, -1))
    s = x.shape[axis]
    half = max(2, int(s * keep / 2))
    mask = torch.zeros(s, dtype=torch.bool)
    mask[s // 2 - half : s // 2 + half] = True
    shape = [1, 1, 1, 1]
    shape[axis] = s
    k = k * mask.view(shape)
    return torch.fft.ifft2(torch.fft.ifftshift(k, dim=(-2, -1))).abs()
