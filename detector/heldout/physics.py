"""MR acquisition of the rendered object: receive coil, k-space sampling and its artefacts.

1. The object (transverse magnetisation) is weighted by the posterior surface coil's
   sensitivity (falling with distance from the coil behind the neck, with element ripple) and
   a smooth bias field.
2. Its 2D Fourier transform is cut to the acquired matrix (smaller than the render grid):
   partial volume and Gibbs ringing at sharp edges, optionally softened by a k-space filter.
3. Along the phase-encode direction, each k-space line sees the patient where it was at that
   moment: a periodic/jerky displacement multiplies the line by a linear phase (motion ghosts);
   CSF pulsation modulates the CSF's lines (CSF ghosts).
4. Complex Gaussian noise is added to the acquired k-space, which is zero-filled to the display
   matrix and transformed back; the magnitude is Rician-distributed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import ndimage


@dataclass(frozen=True)
class Acquisition:
    acquired: tuple[int, int]  # acquired k-space lines (rows, cols) <= render grid
    phase_axis: int  # 1: phase encoding along rows (head-feet), 2: along columns (AP)
    motion_mm: float  # amplitude of bulk motion along the phase direction
    motion_period: float  # in phase-encode lines
    jerk_mm: float  # one swallowing-like jump over a block of lines
    pulsation: float  # CSF signal modulation depth
    filter_alpha: float  # Tukey taper of k-space (0 = none: full Gibbs ringing)
    noise_sigma: float  # image-domain noise std per real/imaginary channel


def coil_map(
    rows_mm: np.ndarray, cols_mm: np.ndarray, coil_col_mm: np.ndarray, falloff_mm: float, ripple: float, phase: float
) -> np.ndarray:
    """Sensitivity [H, W] of a posterior coil array shaped to the back of the head and neck
    (``coil_col_mm``: its column position on each row, mm)."""
    d = np.maximum(np.asarray(coil_col_mm, float)[:, None] - cols_mm[None, :], 0.0)
    sens = 1.0 / (1.0 + (d / falloff_mm) ** 2)
    elem = 1.0 + ripple * np.cos(2 * np.pi * rows_mm[:, None] / 70.0 + phase)
    return (sens * elem).astype(np.float32)


def posterior_edge(image: np.ndarray, cols_mm: np.ndarray) -> np.ndarray:
    """Per row, the column (mm) of the body's posterior surface in ``image`` [H, W], smoothed
    (rows outside the body take their neighbours' value)."""
    inside = image > 0.02 * float(image.max())
    has = inside.any(axis=1)
    if not has.any():
        return np.full(image.shape[0], float(cols_mm[-1]))
    last = inside.shape[1] - 1 - np.argmax(inside[:, ::-1], axis=1)
    edge = np.interp(np.arange(image.shape[0]), np.flatnonzero(has), cols_mm[last[has]])
    return ndimage.uniform_filter1d(edge, max(3, image.shape[0] // 12), mode="nearest")


def bias_field(rng: np.random.Generator, shape: tuple[int, int], strength: float) -> np.ndarray:
    """A smooth multiplicative field exp(sum of a few low-frequency cosines), [H, W]."""
    h, w = shape
    y, x = np.linspace(0, 1, h)[:, None], np.linspace(0, 1, w)[None, :]
    f = np.zeros((h, w))
    for _ in range(4):
        ky, kx = rng.uniform(0.2, 1.5, 2)
        f += rng.normal(0, 1) * np.cos(np.pi * (ky * y + kx * x) + rng.uniform(0, 2 * np.pi))
    f *= strength / max(float(np.abs(f).max()), 1e-6)
    return np.exp(f).astype(np.float32)


def _tukey(n: int, alpha: float) -> np.ndarray:
    if alpha <= 0:
        return np.ones(n)
    x = np.abs(np.linspace(-1, 1, n))
    edge = 1.0 - alpha
    w = np.ones(n)
    m = x > edge
    w[m] = 0.5 * (1 + np.cos(np.pi * (x[m] - edge) / alpha))
    return w


def _crop(k: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    h, w = k.shape[-2:]
    r0, c0 = (h - shape[0]) // 2, (w - shape[1]) // 2
    return k[..., r0 : r0 + shape[0], c0 : c0 + shape[1]]


def _pad(k: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    out = np.zeros((*k.shape[:-2], *shape), dtype=k.dtype)
    h, w = k.shape[-2:]
    r0, c0 = (shape[0] - h) // 2, (shape[1] - w) // 2
    out[..., r0 : r0 + h, c0 : c0 + w] = k
    return out


def acquire(
    static: np.ndarray,
    csf: np.ndarray,
    acq: Acquisition,
    display: tuple[int, int],
    fov_mm: tuple[float, float],
    rng: np.random.Generator,
) -> np.ndarray:
    """Object (static part and CSF part, [S, Hr, Wr], coil-weighted) -> magnitude images
    [S, Hd, Wd] (float32)."""
    s, hr, wr = static.shape
    k = sfft.fftshift(sfft.fft2(static + csf, norm="ortho", workers=1), axes=(-2, -1))
    k = _crop(k, acq.acquired)
    pa = acq.phase_axis
    n_pe = acq.acquired[pa - 1]
    lines = np.arange(n_pe)
    kidx = lines - n_pe // 2  # cycles per field of view
    if acq.pulsation > 0:
        kc = _crop(sfft.fftshift(sfft.fft2(csf, norm="ortho", workers=1), axes=(-2, -1)), acq.acquired)
        mod = acq.pulsation * np.sin(2 * np.pi * lines / rng.uniform(5.0, 14.0) + rng.uniform(0, 2 * np.pi))
        mod = mod + rng.normal(0, acq.pulsation * 0.3, n_pe)
        k += kc * _along(mod.astype(np.float32), pa)
    if acq.motion_mm > 0 or acq.jerk_mm > 0:
        order = rng.permutation(n_pe) if rng.random() < 0.3 else lines  # interleaved orderings scatter ghosts
        disp = acq.motion_mm * np.sin(2 * np.pi * order / acq.motion_period + rng.uniform(0, 2 * np.pi))
        if acq.jerk_mm > 0:
            a = int(rng.integers(0, n_pe))
            disp[(order >= a) & (order < a + int(rng.integers(3, max(4, n_pe // 6))))] += acq.jerk_mm
        phase = np.exp(-2j * np.pi * kidx * disp / fov_mm[pa - 1]).astype(np.complex64)
        k *= _along(phase, pa)
    if acq.filter_alpha > 0:
        win = np.outer(_tukey(acq.acquired[0], acq.filter_alpha), _tukey(acq.acquired[1], acq.filter_alpha))
        k *= win.astype(np.float32)[None]
    sigma_k = acq.noise_sigma * np.sqrt(hr * wr / (acq.acquired[0] * acq.acquired[1]))
    noise = rng.standard_normal((2, *k.shape), dtype=np.float32) * np.float32(sigma_k)
    k += noise[0] + 1j * noise[1]
    k = _pad(k, display)
    img = sfft.ifft2(sfft.ifftshift(k, axes=(-2, -1)), norm="ortho", workers=1)
    img *= np.float32(np.sqrt(display[0] * display[1] / (hr * wr)))
    return np.abs(img).astype(np.float32)


def _along(v: np.ndarray, axis: int) -> np.ndarray:
    return v[None, :, None] if axis == 1 else v[None, None, :]
