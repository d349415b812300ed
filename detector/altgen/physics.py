"""T2 contrast per study and the acquisition: partial volume weights, k-space truncation (Gibbs),
motion ghosts along the phase axis, coil falloff and bias field, Rician noise."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .grid import smooth_noise


def sample_contrast(rng: np.random.Generator, hard: bool, fat_sat: bool) -> dict[str, float]:
    """Relative T2-weighted signal of each tissue (CSF = 1)."""
    u = rng.uniform
    fat = u(0.05, 0.14) if fat_sat else u(0.68, 0.92)
    marrow = u(0.12, 0.24) if fat_sat else u(0.40, 0.60)
    annulus = u(0.08, 0.18)
    nucleus = u(0.55, 0.9)
    return {
        "air": 0.0,
        "csf": 1.0,
        "fat": fat,
        "marrow": marrow,
        "muscle": u(0.14, 0.24),
        "cord": u(0.36, 0.5),
        "brain": u(0.38, 0.52),
        "cortex": u(0.02, 0.06),
        "ligament": u(0.03, 0.08),
        "annulus": annulus,
        "nucleus": nucleus,
        "herniation": annulus + (nucleus - annulus) * u(0.15, 0.6),
        "mucosa": u(0.45, 0.7),
        "tongue": u(0.24, 0.34),
        "skin": u(0.3, 0.45),
        "gland": u(0.3, 0.5),
        "modic1": u(0.6, 0.8),
        "modic2": fat * u(0.9, 1.05) if not fat_sat else u(0.06, 0.12),
        "hemangioma": u(0.7, 0.9),
    }


@dataclass(frozen=True)
class Acquisition:
    """How the slices are acquired and reconstructed."""

    keep: tuple[float, float]  # fraction of k-space sampled along rows, columns
    phase_axis: int  # 0: phase encoding head-feet, 1: anterior-posterior
    ghost: float  # phase-error amplitude (rad) of moved phase-encode lines, 0 = no motion
    ghost_every: int
    sigma: float  # noise sd relative to CSF
    coil_len: float  # mm, posterior coil sensitivity decay length
    bias_amp: float
    gain: float
    sub_planes: int


def sample_acquisition(rng: np.random.Generator, hard: bool, spacing: float) -> Acquisition:
    acq_mm = rng.uniform(0.9, 1.4) if hard else rng.uniform(0.55, 1.0)
    keep = min(1.0, spacing / acq_mm)
    keep_pe = keep * rng.uniform(0.8, 1.0)
    axis = int(rng.integers(0, 2))
    ks = (keep_pe, keep) if axis == 0 else (keep, keep_pe)
    moved = rng.random() < (0.45 if hard else 0.15)
    return Acquisition(
        keep=(float(ks[0]), float(ks[1])),
        phase_axis=axis,
        ghost=float(rng.uniform(0.3, 1.2)) if moved else 0.0,
        ghost_every=int(rng.integers(3, 9)),
        sigma=float(rng.uniform(0.03, 0.06) if hard else rng.uniform(0.01, 0.025)),
        coil_len=float(rng.uniform(70, 110) if hard else rng.uniform(90, 160)),
        bias_amp=float(rng.uniform(0.1, 0.3) if hard else rng.uniform(0.03, 0.15)),
        gain=float(rng.uniform(300, 3000)),
        sub_planes=3,
    )


def bias_field(
    rng: np.random.Generator, shape: tuple[int, int], xs: np.ndarray, skin: np.ndarray, acq: Acquisition, spacing: float
) -> np.ndarray:
    """Receive sensitivity: posterior coil falloff times a smooth multiplicative field."""
    depth = np.clip(skin[:, None] - xs[None, :], 0, None)
    coil = 0.45 + 0.55 * np.exp(-depth / acq.coil_len)
    smooth = smooth_noise(rng, shape, 60.0 / spacing)
    return (coil * np.exp(acq.bias_amp * smooth)).astype(np.float32)


def acquire(obj: np.ndarray, bias: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """k-space sampling of one slice with motion ghosts and complex Gaussian noise (Rician magnitude)."""
    h, w = obj.shape
    k = np.fft.fft2((obj * bias).astype(np.float32))
    fy = np.abs(np.fft.fftfreq(h))[:, None]
    fx = np.abs(np.fft.fftfreq(w))[None, :]
    mask = (fy <= acq.keep[0] / 2) & (fx <= acq.keep[1] / 2)
    k *= mask
    mask = np.broadcast_to(mask, k.shape)
    if acq.ghost > 0:
        n = (h, w)[acq.phase_axis]
        lines = np.zeros(n, dtype=bool)
        lines[int(rng.integers(0, acq.ghost_every)) :: acq.ghost_every] = True
        phase = np.exp(1j * acq.ghost * rng.uniform(0.5, 1.0) * lines).astype(np.complex64)
        k *= phase[:, None] if acq.phase_axis == 0 else phase[None, :]
    m = int(mask.sum())
    sk = acq.sigma * h * w / np.sqrt(m)  # image-domain sd per channel = sigma, band-limited
    noise = rng.standard_normal((2, m), dtype=np.float32) * np.float32(sk)
    k[mask] += noise[0] + 1j * noise[1]
    img = np.fft.ifft2(k)
    return (np.abs(img) * acq.gain).astype(np.float32)
