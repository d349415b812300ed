"""Calibration of the herniation score and the stored operating point (pure numpy).

The herniation net's level logit (the highest over the disc's slices) becomes a probability
by Platt scaling, ``p = sigmoid(a * logit + b)``, fitted by maximum likelihood on labelled
levels that are not the test set. The operating point is the highest threshold on ``p`` at
which the fitting data reach ``target_sensitivity``; a level is called herniated when its
probability reaches it. Both travel in the checkpoint (``Calibration.to_dict``) with a note
of the data they came from, so a site can refit on its own studies (``meddet calibrate``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class Calibration:
    """Platt parameters, the operating point and where they came from."""

    a: float = 1.0
    b: float = 0.0
    threshold: float = 0.5
    target_sensitivity: float | None = None
    method: str = "identity"
    data: str = "none"
    n_positive: int = 0
    n_negative: int = 0
    sensitivity: float | None = None  # reached on the fitting data at ``threshold``
    specificity: float | None = None

    @classmethod
    def identity(cls) -> Calibration:
        """No calibration: p = sigmoid(logit), threshold 0.5."""
        return cls()

    def probability(self, logits: np.ndarray | float) -> np.ndarray:
        z = self.a * np.asarray(logits, dtype=np.float64) + self.b
        return 1.0 / (1.0 + np.exp(-np.clip(z, -50, 50)))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Calibration:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        return cls(**known)

    def summary(self) -> dict:
        """The operating point as findings.json and the SR state it."""
        return {
            "threshold": round(self.threshold, 4),
            "target_sensitivity": self.target_sensitivity,
            "method": self.method,
            "data": self.data,
        }


def fit_platt(logits: np.ndarray, labels: np.ndarray, iterations: int = 100) -> tuple[float, float]:
    """(a, b) maximising the likelihood of ``labels`` (0/1) under sigmoid(a * logit + b).

    Platt's smoothed targets (so separable data give finite parameters), damped Newton steps
    on standardised logits (each step halves until the loss falls).
    """
    x = np.asarray(logits, dtype=np.float64)
    y = np.asarray(labels, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"logits and labels: expected two 1-D arrays of one length, got {x.shape}, {y.shape}")
    n_pos, n_neg = float(y.sum()), float(len(y) - y.sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"calibration needs both classes: {int(n_pos)} positive, {int(n_neg)} negative levels")
    t = np.where(y > 0, (n_pos + 1) / (n_pos + 2), 1 / (n_neg + 2))
    mu, sd = float(x.mean()), float(x.std()) or 1.0
    z = (x - mu) / sd

    def loss(w: np.ndarray) -> float:
        s = w[0] * z + w[1]
        return float(np.sum(np.logaddexp(0, s) - t * s))

    w = np.array([1.0, 0.0])
    current = loss(w)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-np.clip(w[0] * z + w[1], -50, 50)))
        g = np.array([np.sum((p - t) * z), np.sum(p - t)])
        h = p * (1 - p) + 1e-12
        hess = np.array([[np.sum(h * z * z), np.sum(h * z)], [np.sum(h * z), np.sum(h)]]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(hess, g)
        scale = 1.0
        while scale > 1e-6 and loss(w - scale * step) > current:
            scale /= 2
        w = w - scale * step
        new = loss(w)
        if current - new < 1e-10:
            break
        current = new
    a = w[0] / sd
    return float(a), float(w[1] - a * mu)


def operating_point(probabilities: np.ndarray, labels: np.ndarray, target_sensitivity: float) -> float:
    """The highest threshold t with sensitivity(p >= t) >= target on these levels."""
    if not 0 < target_sensitivity <= 1:
        raise ValueError(f"target_sensitivity: must be in (0, 1], got {target_sensitivity}")
    p = np.asarray(probabilities, dtype=np.float64)
    pos = np.sort(p[np.asarray(labels) > 0])[::-1]
    if len(pos) == 0:
        raise ValueError("operating point: no positive levels in the data")
    k = int(np.ceil(target_sensitivity * len(pos)))  # positives that must be called
    return float(pos[k - 1])


def calibrate(logits: np.ndarray, labels: np.ndarray, target_sensitivity: float, data: str) -> Calibration:
    """Fit Platt scaling and choose the operating point on the same labelled levels."""
    a, b = fit_platt(logits, labels)
    labels = np.asarray(labels)
    fitted = Calibration(a=a, b=b, method="platt")
    p = fitted.probability(logits)
    threshold = operating_point(p, labels, target_sensitivity)
    called = p >= threshold
    pos, neg = labels > 0, labels == 0
    return Calibration(
        a=a,
        b=b,
        threshold=threshold,
        target_sensitivity=target_sensitivity,
        method="platt",
        data=data,
        n_positive=int(pos.sum()),
        n_negative=int(neg.sum()),
        sensitivity=float(called[pos].mean()),
        specificity=float((~called[neg]).mean()),
    )


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = 10) -> list[dict]:
    """Per probability bin: mean predicted, observed frequency, count (for calibration plots)."""
    p, y = np.asarray(probabilities, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    edges = np.linspace(0, 1, bins + 1)
    out = []
    for lo, hi in zip(edges[:-1], edges[1:]):
        sel = (p >= lo) & ((p < hi) | (hi == 1.0))
        if sel.any():
            out.append(
                {
                    "lo": float(lo),
                    "hi": float(hi),
                    "predicted": float(p[sel].mean()),
                    "observed": float(y[sel].mean()),
                    "count": int(sel.sum()),
                }
            )
    return out
