"""Level names anchored on anatomy: count the chain of discs down from C2-C3 (pure numpy).

The level net says, for every position of the series' disc chain (cranial first), how likely
it is each disc level or not a disc at all (``LEVEL_CLASSES``). Discs are consecutive, so the
whole chain has one unknown: which position is C2-C3, the disc just under C2 with its dens
and C1 above it. ``name_chain`` scores every placement of that anchor by the summed
log-probabilities of what the placement says each position is: "not a disc" above the
anchor (e.g. the base of the dens), C2-C3 at it, and below it a disc of the level the count
gives it; then it counts down. The anchor's identity names the chain. Which lower level a
disc looks like counts at half weight (``level_weight``): its score is an even mixture of
"some disc below C2-C3" and "this very level", because that appearance differs between
scanners and anatomies more than "the first disc under C2" does; on our second generator it
still tells the count from a count shifted by one when the anchor alone is unsure. A counted
disc that the net is sure is another level vetoes the count (a disc missed, or a non-disc
counted, between it and the anchor).

Failure is explicit: no anchor, a placement barely likelier than another, or a counted disc
that is surely another level gives ``status`` "unknown" with a reason and its ``cause``, and
every disc's level is reported as unknown.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

from detector.levels import LEVELS

#: What the level net says a chain position is: a disc level C2-C3 .. T1-T2, or not a disc.
LEVEL_CLASSES = (*LEVELS, "T1-T2", "not_disc")
N_LEVEL_CLASSES = len(LEVEL_CLASSES)
NOT_DISC = N_LEVEL_CLASSES - 1
ANCHOR = 0  # C2-C3
#: How two views of each position's level (the level net's, the locator's) combine: ``fuse``.
FUSIONS = ("level", "locator", "mean", "product")
#: Why a chain is not named (``Naming.cause``): no disc found; no C2 anchor; the best placement
#: barely likelier than the next (the margin gate); a counted disc surely another level (its veto).
UNNAMED_CAUSES = ("no_disc", "no_anchor", "margin", "veto")


@dataclass(frozen=True)
class Naming:
    """Per chain position its level name (None above C2-C3 or below C7-T1), and why not: the
    ``reason`` in words and its ``cause``, one of ``UNNAMED_CAUSES``."""

    names: list[str | None]
    status: str  # "found" | "unknown"
    reason: str | None
    offset: int  # level index of the chain's first position
    margin: float  # log-likelihood ratio of the best alignment over the runner-up
    cause: str | None = None

    def __post_init__(self) -> None:
        if (self.status == "found") != (self.cause is None) or self.cause not in (None, *UNNAMED_CAUSES):
            raise ValueError(f"naming: status {self.status!r} with cause {self.cause!r}")

    @classmethod
    def unnamed(cls, n: int, reason: str, cause: str, offset: int = 0, margin: float = 0.0) -> Naming:
        """A chain of ``n`` positions none of which is named, because of ``cause``."""
        return cls([None] * n, "unknown", reason, offset, margin, cause)


@dataclass(frozen=True)
class NamingRule:
    """The parameters of ``name_chain`` (documented there), stored with the second stage that
    was calibrated under them, so that the model version covers the rule naming its chains."""

    min_anchor_prob: float = 0.3
    min_margin: float = 1.5
    not_disc: float = 0.6
    contradiction: float = 0.9
    level_weight: float = 0.5

    def __call__(self, log_probs: np.ndarray) -> Naming:
        return name_chain(log_probs, **asdict(self))

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NamingRule:
        known = {f.name for f in fields(cls)}
        if set(data) - known:
            raise ValueError(f"checkpoint: unknown naming parameters {sorted(set(data) - known)}")
        return cls(**{k: float(v) for k, v in data.items()})


#: How a checkpoint that stores no rule (calibrated before rules were stored, e.g. 6ba6) is
#: named: the rule of 2026-11-30 evening, written out so that new defaults never rename its chains.
UNSTORED_RULE = NamingRule(min_anchor_prob=0.3, min_margin=1.5, not_disc=0.6, contradiction=0.9, level_weight=0.5)


def name_chain(
    log_probs: np.ndarray,
    min_anchor_prob: float = NamingRule.min_anchor_prob,
    min_margin: float = NamingRule.min_margin,
    not_disc: float = NamingRule.not_disc,
    contradiction: float = NamingRule.contradiction,
    level_weight: float = NamingRule.level_weight,
) -> Naming:
    """Align a chain [L, 8] of level log-probabilities with the disc levels.

    ``min_anchor_prob``: the level net's probability that the anchor position is C2-C3.
    ``min_margin``: the best alignment must be at least e**min_margin times likelier than
    any other. ``not_disc``: a position the net calls "not a disc" with at least this
    probability (a facet or a vertebral body the detector boxed) is left out of the count.
    ``contradiction``: a counted disc that the net takes for another level with at least
    this probability (a disc the detector missed, or a non-disc counted, above it) makes the
    whole chain unknown: the count and that disc disagree, and neither is trusted.
    ``level_weight``: how much a counted disc's own-level probability weighs against "some
    disc below the anchor" (0: the count alone; 1: the level net's reading alone).
    """
    lp = np.asarray(log_probs, dtype=np.float64)
    if lp.ndim != 2 or lp.shape[1] != N_LEVEL_CLASSES:
        raise ValueError(f"log_probs: expected [L, {N_LEVEL_CLASSES}], got {lp.shape}")
    keep = np.flatnonzero(np.exp(lp[:, NOT_DISC]) < not_disc)
    inner = _name_discs(lp[keep], min_anchor_prob, min_margin, level_weight)
    names: list[str | None] = [None] * len(lp)
    for i, name in zip(keep, inner.names):
        names[int(i)] = name
    clash = _contradiction(lp, names, contradiction) if inner.status == "found" else None
    if clash is not None:
        return Naming.unnamed(len(lp), clash, "veto", inner.offset, inner.margin)
    return Naming(names, inner.status, inner.reason, inner.offset, inner.margin, inner.cause)


def _contradiction(lp: np.ndarray, names: list[str | None], min_prob: float) -> str | None:
    """Why the count is contradicted: the first named disc that looks like another level
    with at least ``min_prob``; None when none does."""
    for i, name in enumerate(names):
        if name is None:
            continue
        disc = np.exp(lp[i, :NOT_DISC])
        looks = int(np.argmax(disc))
        if looks != LEVELS.index(name) and disc[looks] >= min_prob:
            seen = LEVEL_CLASSES[looks]
            return (
                f"inconsistent chain: the disc counted as {name} from C2 looks like {seen} "
                f"(probability {disc[looks]:.2f}); a disc may be missed or a non-disc counted"
            )
    return None


def _name_discs(lp: np.ndarray, min_anchor_prob: float, min_margin: float, level_weight: float) -> Naming:
    """``name_chain`` on positions that are all discs."""
    n = len(lp)
    if n == 0:
        return Naming.unnamed(0, "no disc found", "no_disc")
    offsets = list(range(-(n - 1), 2))  # the anchor at each position, or (1) above the chain
    scores = np.array([_score(lp, o, level_weight) for o in offsets])
    order = np.argsort(scores)[::-1]
    best = offsets[int(order[0])]
    margin = float(scores[order[0]] - scores[order[1]]) if len(order) > 1 else float("inf")
    names = [LEVELS[j] if 0 <= (j := best + i) < len(LEVELS) else None for i in range(n)]
    anchor_at = -best
    if not 0 <= anchor_at < n:
        reason = "no C2 anchor: no disc of the series' chain looks like C2-C3, the disc below C2"
        return Naming.unnamed(n, reason, "no_anchor", best, margin)
    p_anchor = float(np.exp(lp[anchor_at, ANCHOR]))
    if p_anchor < min_anchor_prob:
        reason = f"no C2 anchor: the disc under C2 is not recognised (probability {p_anchor:.2f})"
        return Naming.unnamed(n, reason, "no_anchor", best, margin)
    if margin < min_margin:
        reason = (
            "inconsistent chain: counting from C2 and the appearance of the "
            f"discs disagree (best alignment only {np.exp(margin):.1f}x likelier than the next)"
        )
        return Naming.unnamed(n, reason, "margin", best, margin)
    return Naming(names, "found", None, best, margin)


def _score(lp: np.ndarray, offset: int, level_weight: float) -> float:
    """Log-likelihood of the placement that gives the chain's first position level ``offset``:
    "not a disc" above the anchor, C2-C3 at it, and below it the mixture of "some disc other
    than C2-C3" and the counted level (T1-T2 standing for every thoracic disc)."""
    p = np.exp(lp)
    other_disc = np.clip(1.0 - p[:, ANCHOR] - p[:, NOT_DISC], 0.0, None)
    total = 0.0
    for i in range(len(lp)):
        j = offset + i
        if j < 0:
            total += lp[i, NOT_DISC]
        elif j == 0:
            total += lp[i, ANCHOR]
        else:
            counted = p[i, min(j, NOT_DISC - 1)]
            total += np.log(max((1.0 - level_weight) * other_disc[i] + level_weight * counted, 1e-6))
    return float(total)


def fuse(a: np.ndarray, b: np.ndarray, how: str) -> np.ndarray:
    """Two [L, 8] level log-probabilities combined: "mean" (of the probabilities),
    "product" (renormalised), or one of them ("level" = ``a``, "locator" = ``b``)."""
    if how == "level":
        return a
    if how == "locator":
        return b
    if how == "mean":
        return np.log((np.exp(a) + np.exp(b)) / 2)
    if how == "product":
        s = a + b
        return s - np.logaddexp.reduce(s, axis=1, keepdims=True)
    raise ValueError(f"fusion: expected one of {', '.join(FUSIONS)}, got {how!r}")
