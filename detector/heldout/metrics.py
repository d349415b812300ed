"""Pure metrics for the held-out protocol (numpy only): Wilson intervals, ROC AUC with study
bootstrap intervals and paired differences, rates, reliability bins."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def wilson_interval(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (NaN, NaN when n == 0)."""
    if n <= 0:
        return (math.nan, math.nan)
    if not 0 <= k <= n:
        raise ValueError(f"wilson_interval: need 0 <= k <= n, got k={k}, n={n}")
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    centre = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    # it contains p; rounding can put an end a hair inside it (k == n == 6: hi 0.9999999999999999)
    return (min(p, max(0.0, centre - half)), max(p, min(1.0, centre + half)))


def roc_auc(scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney U / (n_pos n_neg), ties count half); NaN when
    either class is missing."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"roc_auc: {s.shape[0]} scores for {y.shape[0]} labels")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(len(s), dtype=np.float64)
    sorted_s = s[order]
    i = 0
    while i < len(s):  # average ranks over ties
        j = i
        while j + 1 < len(s) and sorted_s[j + 1] == sorted_s[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2.0 + 1.0
        i = j + 1
    u = ranks[y].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


#: bootstrap rounds of ``auc_interval`` and ``paired_auc_difference``
BOOTSTRAP_ROUNDS = 2000


def _study_draws(studies: Sequence[object] | np.ndarray, rounds: int, seed: int) -> list[np.ndarray]:
    """Case indices of ``rounds`` resamples of whole studies (with replacement): the discs of
    one study share its look and noise, so they are resampled together, not one by one."""
    keys = np.asarray(studies)
    members = [np.flatnonzero(keys == k) for k in dict.fromkeys(keys.tolist())]
    rng = np.random.default_rng(seed)
    return [np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))]) for _ in range(rounds)]


def auc_interval(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    studies: Sequence[object] | np.ndarray,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> tuple[float, float]:
    """95% percentile interval of the ROC AUC over ``rounds`` resamples of whole studies
    (``studies``: each case's study); NaN, NaN when a class is missing."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    if not y.any() or y.all():
        return (math.nan, math.nan)
    aucs = np.array([roc_auc(s[i], y[i]) for i in _study_draws(studies, rounds, seed)])
    lo, hi = np.nanpercentile(aucs, [2.5, 97.5])
    return (float(lo), float(hi))


@dataclass(frozen=True)
class AucDifference:
    """ROC AUC of two models' scores on the same cases: ``b - a``, its 95% interval over study
    resamples, and the share of resamples in which ``b`` is ahead."""

    a: float
    b: float
    ci95: tuple[float, float]
    b_ahead: float

    @property
    def delta(self) -> float:
        return self.b - self.a

    def __str__(self) -> str:
        lo, hi = self.ci95
        return f"{self.a:.3f} -> {self.b:.3f}: {self.delta:+.3f} (95% CI {lo:+.3f} to {hi:+.3f}; ahead in {self.b_ahead:.0%})"


def paired_auc_difference(
    a: Sequence[float] | np.ndarray,
    b: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    studies: Sequence[object] | np.ndarray,
    rounds: int = BOOTSTRAP_ROUNDS,
    seed: int = 0,
) -> AucDifference:
    """Two models' scores ``a``, ``b`` of the same cases compared on the same resamples of
    whole studies (paired), so that what the studies share cancels out of the difference."""
    sa, sb, y = np.asarray(a, float), np.asarray(b, float), np.asarray(labels, bool)
    if not sa.shape == sb.shape == y.shape:
        raise ValueError(f"paired_auc_difference: {sa.shape}, {sb.shape} scores for {y.shape} labels")
    if not y.any() or y.all():
        raise ValueError("paired_auc_difference: both classes are needed")
    deltas = np.array([roc_auc(sb[i], y[i]) - roc_auc(sa[i], y[i]) for i in _study_draws(studies, rounds, seed)])
    deltas = deltas[np.isfinite(deltas)]
    lo, hi = np.percentile(deltas, [2.5, 97.5])
    return AucDifference(roc_auc(sa, y), roc_auc(sb, y), (float(lo), float(hi)), float((deltas > 0).mean()))


@dataclass(frozen=True)
class Rate:
    """k successes out of n, with its Wilson 95% interval."""

    k: int
    n: int

    @property
    def value(self) -> float:
        return self.k / self.n if self.n else math.nan

    @property
    def ci(self) -> tuple[float, float]:
        return wilson_interval(self.k, self.n)

    def to_dict(self) -> dict[str, object]:
        lo, hi = self.ci
        return {"value": _num(self.value), "k": self.k, "n": self.n, "ci95": [_num(lo), _num(hi)]}

    def __str__(self) -> str:
        if not self.n:
            return "n/a (0/0)"
        lo, hi = self.ci
        return f"{self.value:.3f} ({self.k}/{self.n}, 95% CI {lo:.2f}-{hi:.2f})"


def sensitivity(called: Sequence[bool] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> Rate:
    """Called positives among true positives."""
    c, y = np.asarray(called, bool), np.asarray(labels, bool)
    return Rate(int((c & y).sum()), int(y.sum()))


def specificity(called: Sequence[bool] | np.ndarray, labels: Sequence[bool] | np.ndarray) -> Rate:
    """Not-called negatives among true negatives."""
    c, y = np.asarray(called, bool), np.asarray(labels, bool)
    return Rate(int((~c & ~y).sum()), int((~y).sum()))


def at_threshold(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, threshold: float
) -> tuple[Rate, Rate]:
    """(sensitivity, specificity) when scores >= ``threshold`` are called."""
    called = np.asarray(scores, float) >= threshold
    return sensitivity(called, labels), specificity(called, labels)


def best_sensitivity_at_specificity(
    scores: Sequence[float] | np.ndarray, labels: Sequence[bool] | np.ndarray, min_specificity: float
) -> tuple[float, float]:
    """The highest sensitivity over thresholds whose specificity >= ``min_specificity``, and
    that threshold (NaN, NaN when a class is missing)."""
    s, y = np.asarray(scores, float), np.asarray(labels, bool)
    if not y.any() or y.all():
        return (math.nan, math.nan)
    best = (0.0, math.inf)
    for t in np.unique(np.concatenate([s, [np.inf]])):
        se, sp = at_threshold(s, y, float(t))
        if sp.value >= min_specificity and se.value > best[0]:
            best = (se.value, float(t))
    return best


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of a reliability diagram: the cases with ``lo <= p < hi`` (the last bin also
    holds ``p == hi``), their mean probability and how many were positive."""

    lo: float
    hi: float
    n: int
    positives: int
    mean_predicted: float  # NaN when the bin is empty

    @property
    def observed(self) -> Rate:
        """The observed positive rate, with its Wilson interval."""
        return Rate(self.positives, self.n)

    def to_dict(self) -> dict[str, object]:
        return {
            "lo": _num(self.lo),
            "hi": _num(self.hi),
            "n": self.n,
            "positives": self.positives,
            "mean_predicted": _num(self.mean_predicted),
            "observed": _num(self.observed.value),
        }


def reliability_bins(
    probabilities: Sequence[float] | np.ndarray,
    labels: Sequence[bool] | np.ndarray,
    edges: Sequence[float] | np.ndarray,
) -> list[ReliabilityBin]:
    """Every bin between consecutive ``edges`` (increasing), empty ones included: bin i holds
    ``edges[i] <= p < edges[i + 1]``, the last bin also ``p == edges[-1]``. Probabilities
    outside ``[edges[0], edges[-1]]`` (or NaN) are an error."""
    p = np.asarray(probabilities, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    e = np.asarray(edges, dtype=np.float64).ravel()
    if p.shape != y.shape:
        raise ValueError(f"reliability_bins: {p.shape[0]} probabilities for {y.shape[0]} labels")
    if len(e) < 2 or not np.all(np.diff(e) > 0):
        raise ValueError(f"reliability_bins: edges must be >= 2 increasing values, got {e.tolist()}")
    if not np.all((p >= e[0]) & (p <= e[-1])):  # NaN fails both comparisons
        raise ValueError(f"reliability_bins: probabilities outside [{e[0]}, {e[-1]}] or NaN")
    index = np.minimum(np.searchsorted(e, p, side="right") - 1, len(e) - 2)
    out = []
    for i in range(len(e) - 1):
        sel = index == i
        n = int(sel.sum())
        mean = float(p[sel].mean()) if n else math.nan
        out.append(ReliabilityBin(float(e[i]), float(e[i + 1]), n, int(y[sel].sum()), mean))
    return out


def _num(v: float) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6)
