"""Running an analyzer over held-out studies and scoring it (docs/heldout.md).

An analyzer is any callable ``analyze(volume [S, H, W], pixel_spacing) -> findings`` (a list,
or an object with ``.findings``); a finding is a mapping or an object with ``level`` (a name
in C2-C3..C7-T1, or "unknown"), ``probability``, ``called``, ``slice_index`` and ``box``.

Three views, each for routine, hard and all studies:
- naming: is each named finding on the disc of that name? (plus unknowns, shifted chains and
  findings on no disc);
- per level by name: each of the six reported levels of each study is a case, predicted by the
  finding reported under that name (none: probability 0, not called);
- per disc by position: each true disc gets the findings whose boxes sit on it, names ignored,
  which separates naming errors from classification errors.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np

from detector.heldout.anatomy import DISC_LEVELS, REPORTED_LEVELS
from detector.heldout.metrics import (
    Rate,
    ReliabilityBin,
    auc_interval,
    best_sensitivity_at_specificity,
    reliability_bins,
    roc_auc,
    sensitivity,
    specificity,
)
from detector.heldout.study import DiscTruth, HeldoutStudy

Box = tuple[float, float, float, float]
SIZE_BINS = ((1.5, 2.5), (2.5, 4.0), (4.0, math.inf))
CALIBRATION_EDGES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: degenerative confounders a generator may record on a disc (``DiscTruth.confounders``)
CONFOUNDERS = ("osteophyte", "anterior_spur", "dark", "modic", "listhesis")
TARGETS = {"naming": 0.98, "sensitivity": 0.85, "specificity": 0.85, "auc": 0.92}


#: Why a study's levels are ``unknown``: its findings' ``cause`` (findings.json; the analysis
#: names them in ``detector.naming.UNNAMED_CAUSES``), or "other" for findings that carry none.
UNNAMED_BECAUSE = ("no_disc", "no_anchor", "margin", "veto", "other")


@dataclass(frozen=True)
class Finding:
    level: str
    probability: float
    called: bool
    slice_index: int
    box: Box
    reason: str | None = None  # why the level is unknown, when it is
    cause: str | None = None  # the same as one of ``UNNAMED_BECAUSE``


def as_finding(obj: Any) -> Finding:
    """A finding from a mapping or an object with the same names (``reason``, ``cause`` optional)."""
    get = (lambda k: obj[k]) if isinstance(obj, Mapping) else (lambda k: getattr(obj, k))
    optional = obj.get if isinstance(obj, Mapping) else (lambda k: getattr(obj, k, None))
    box = tuple(float(v) for v in get("box"))
    reason, cause = optional("reason"), optional("cause")
    if cause is not None and cause not in UNNAMED_BECAUSE:
        raise ValueError(f"finding: unknown cause {cause!r}, expected one of {', '.join(UNNAMED_BECAUSE)}")
    return Finding(
        str(get("level")),
        float(get("probability")),
        bool(get("called")),
        int(get("slice_index")),
        (box[0], box[1], box[2], box[3]),
        None if reason is None else str(reason),
        cause,
    )


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def match_disc(
    f: Finding, discs: Sequence[DiscTruth], min_iou: float = 0.3, any_slice: bool = False
) -> DiscTruth | None:
    """The true disc a finding sits on: on its slice (then the neighbouring ones, then, with
    ``any_slice``, any slice) the disc whose box has the highest IoU >= ``min_iou``, else the disc
    whose box contains the finding's centre."""
    cx, cy = (f.box[0] + f.box[2]) / 2, (f.box[1] + f.box[3]) / 2
    n = max((max(d.boxes) for d in discs if d.boxes), default=0) + 1
    order = [f.slice_index, f.slice_index - 1, f.slice_index + 1]
    if any_slice:
        order += sorted(range(n), key=lambda k: abs(k - f.slice_index))
    for k in dict.fromkeys(order):
        on = [(d, d.boxes[k]) for d in discs if k in d.boxes]
        if not on:
            continue
        best = max(on, key=lambda db: iou(f.box, db[1]))
        if iou(f.box, best[1]) >= min_iou:
            return best[0]
        inside = [d for d, b in on if b[0] <= cx <= b[2] and b[1] <= cy <= b[3]]
        if inside:
            return inside[0]
    return None


@dataclass
class StudyResult:
    """One study scored: per reported finding its matched disc; per reported level the truth
    and the prediction by name and by position."""

    seed: int
    hard: bool
    seconds: float
    findings: list[Finding]
    named: list[tuple[Finding, DiscTruth | None]]
    unknown: int
    shifted: bool
    cases: list[dict[str, Any]] = field(default_factory=list)
    unnamed: str | None = None  # of ``UNNAMED_BECAUSE``: why its findings are unknown, if they are


def score_study(study: HeldoutStudy, findings: Iterable[Any], seconds: float = 0.0) -> StudyResult:
    fs = [as_finding(f) for f in findings]
    reported = [f for f in fs if f.level != "unknown"]
    named = [(f, match_disc(f, study.discs)) for f in reported]
    offsets = [
        DISC_LEVELS.index(f.level) - DISC_LEVELS.index(d.level)
        for f, d in named
        if d is not None and f.level in DISC_LEVELS
    ]
    top = Counter(offsets).most_common(1)
    shifted = len(reported) >= 2 and bool(top) and top[0][0] != 0 and top[0][1] > len(offsets) / 2
    by_pos: dict[str, list[Finding]] = {}
    for f in fs:
        d = match_disc(f, study.discs, any_slice=True)
        if d is not None:
            by_pos.setdefault(d.level, []).append(f)
    cases = []
    for level in REPORTED_LEVELS:
        d = study.disc(level)
        if d is None:
            continue
        mine = [f for f in reported if f.level == level]
        pos = by_pos.get(level, [])
        cases.append(
            dict(
                study=f"{'hard' if study.hard else 'routine'} {study.seed}",  # a seed may draw both
                level=level,
                herniated=d.herniated,
                protrusion=d.protrusion_mm,
                kind=d.kind,
                confounders=d.confounders,
                p_name=max((f.probability for f in mine), default=0.0),
                c_name=any(f.called for f in mine),
                p_pos=max((f.probability for f in pos), default=0.0),
                c_pos=any(f.called for f in pos),
            )
        )
    unknown = [f for f in fs if f.level == "unknown"]
    unnamed = (unknown[0].cause or "other") if unknown else None
    return StudyResult(study.seed, study.hard, seconds, fs, named, len(unknown), shifted, cases, unnamed)


def _classification(cases: list[dict[str, Any]], key: str, interval: bool = False) -> dict[str, Any]:
    """Sensitivity, specificity, AUC and the best sensitivity at specificity >= 0.85 of the
    ``key`` view ("name" or "pos"); ``interval``: the AUC's 95% study bootstrap interval too."""
    y = np.array([c["herniated"] for c in cases], bool)
    p = np.array([c[f"p_{key}"] for c in cases], float)
    called = np.array([c[f"c_{key}"] for c in cases], bool)
    best, thr = best_sensitivity_at_specificity(p, y, TARGETS["specificity"]) if len(y) else (math.nan, math.nan)
    out = {
        "sensitivity": sensitivity(called, y),
        "specificity": specificity(called, y),
        "auc": roc_auc(p, y) if len(y) else math.nan,
        "best_sensitivity_at_spec85": best,
        "threshold_at_spec85": thr,
    }
    if interval:
        out["auc_ci95"] = list(auc_interval(p, y, [c["study"] for c in cases])) if len(y) else [math.nan] * 2
    return out


def _sensitivity_by_size(cases: list[dict[str, Any]], called: str) -> dict[str, Rate]:
    """Sensitivity of the ``called`` view ("c_name" or "c_pos") per protrusion size bin."""
    pos = [c for c in cases if c["herniated"]]
    return {
        f"{lo:g}-{hi:g}mm" if math.isfinite(hi) else f">={lo:g}mm": sensitivity(
            [c[called] for c in pos if lo <= c["protrusion"] < hi],
            [True] * sum(lo <= c["protrusion"] < hi for c in pos),
        )
        for lo, hi in SIZE_BINS
    }


@dataclass
class Report:
    """The scored studies; its tables (``groups``) are computed once, since their AUC intervals
    cost a bootstrap each and the report is printed, checked and serialised from them."""

    results: list[StudyResult]
    _tables: dict[str, dict[str, Any]] | None = field(default=None, init=False, repr=False, compare=False)

    def studies(self, name: str) -> list[StudyResult]:
        """The results of group ``name``: "routine", "hard" or "all"."""
        return [r for r in self.results if name == "all" or r.hard == (name == "hard")]

    def by_position(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(herniation probability, herniated) of every reported disc of group ``name``, the
        probability that of the findings on the disc, names ignored (0 where none is)."""
        cases = [c for r in self.studies(name) for c in r.cases]
        return np.array([c["p_pos"] for c in cases], float), np.array([c["herniated"] for c in cases], bool)

    def calibration(self, name: str, edges: Sequence[float] = CALIBRATION_EDGES) -> list[ReliabilityBin]:
        """Reliability bins of the by-position probabilities of group ``name``."""
        return reliability_bins(*self.by_position(name), edges)

    def group(self, name: str) -> dict[str, Any]:
        rs = self.studies(name)
        named = [(f, d) for r in rs for f, d in r.named]
        cases = [c for r in rs for c in r.cases]
        out: dict[str, Any] = {
            "studies": len(rs),
            "seconds_per_study": float(np.mean([r.seconds for r in rs])) if rs else math.nan,
            "naming": {
                "accuracy": Rate(sum(d is not None and d.level == f.level for f, d in named), len(named)),
                "unknown": sum(r.unknown for r in rs),
                "shifted_studies": sum(r.shifted for r in rs),
                "off_disc": sum(d is None for _, d in named),
                "unnamed_studies": {k: sum(r.unnamed == k for r in rs) for k in UNNAMED_BECAUSE},
            },
            "by_name": _classification(cases, "name", interval=True),
            "by_position": _classification(cases, "pos", interval=True),
        }
        per_level = {}
        for level in REPORTED_LEVELS:
            cl = [c for c in cases if c["level"] == level]
            per_level[level] = _classification(cl, "name") | {
                "herniated": sum(c["herniated"] for c in cl),
                "cases": len(cl),
            }
        out["by_name"]["per_level"] = per_level
        for view, key in (("by_name", "c_name"), ("by_position", "c_pos")):
            out[view]["sensitivity_by_size"] = _sensitivity_by_size(cases, key)
        for kind in ("bulge", "normal"):
            neg = [c for c in cases if c["kind"] == kind]
            out["by_name"][f"specificity_{kind}"] = specificity([c["c_name"] for c in neg], [False] * len(neg))
        normals = [c for c in cases if not c["herniated"]]
        with_one = {name: [c for c in normals if name in c["confounders"]] for name in CONFOUNDERS}
        with_one["none"] = [c for c in normals if not c["confounders"]]
        out["by_position"]["specificity_by_confounder"] = {
            name: specificity([c["c_pos"] for c in neg], [False] * len(neg)) for name, neg in with_one.items() if neg
        }
        return out

    def groups(self) -> dict[str, dict[str, Any]]:
        if self._tables is None:
            self._tables = {g: self.group(g) for g in ("routine", "hard", "all")}
        return self._tables

    def cases(self) -> list[dict[str, Any]]:
        """Every reported level of every study with its truth and both views' probabilities,
        for comparing two models on the same studies (``metrics.paired_auc_difference``)."""
        keep = ("study", "level", "herniated", "protrusion", "kind", "p_name", "p_pos")
        return [{k: c[k] for k in keep} | {"hard": r.hard} for r in self.results for c in r.cases]

    def to_dict(self) -> dict[str, Any]:
        return _plain(
            {"groups": self.groups(), "targets": [t._asdict() for t in check_targets(self)], "cases": self.cases()}
        )


class Target(NamedTuple):
    name: str
    group: str
    value: float
    goal: float
    passed: bool


def check_targets(report: Report) -> list[Target]:
    """The protocol's targets: naming >= 0.98 with no shifted chain (all studies); sensitivity
    >= 0.85 at specificity >= 0.85 (operating point) and AUC >= 0.92, routine and hard each."""
    g = report.groups()
    out = [
        Target(
            "naming",
            "all",
            g["all"]["naming"]["accuracy"].value,
            TARGETS["naming"],
            g["all"]["naming"]["accuracy"].value >= TARGETS["naming"],
        ),
        Target(
            "shifted_chains",
            "all",
            g["all"]["naming"]["shifted_studies"],
            0,
            g["all"]["naming"]["shifted_studies"] == 0,
        ),
    ]
    for name in ("routine", "hard"):
        if not g[name]["studies"]:
            continue
        c = g[name]["by_name"]
        se, sp, auc = c["sensitivity"].value, c["specificity"].value, c["auc"]
        out.append(Target("sensitivity", name, se, TARGETS["sensitivity"], se >= TARGETS["sensitivity"]))
        out.append(Target("specificity", name, sp, TARGETS["specificity"], sp >= TARGETS["specificity"]))
        out.append(Target("auc", name, auc, TARGETS["auc"], auc >= TARGETS["auc"]))
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, Rate):
        return v.to_dict()
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(float(v)) else round(float(v), 6)
    if isinstance(v, (np.integer, np.bool_)):
        return v.item()
    return v


def score_studies(
    analyze: Callable[[np.ndarray, tuple[float, float]], Any],
    studies: Iterable[HeldoutStudy],
    progress: Callable[[str], None] | None = None,
) -> Report:
    """Run ``analyze`` on every study (timed) and score it."""
    results = []
    for i, st in enumerate(studies):
        t0 = time.perf_counter()
        out = analyze(st.volume, st.pixel_spacing)
        dt = time.perf_counter() - t0
        findings = out.findings if hasattr(out, "findings") else out
        results.append(score_study(st, findings, dt))
        if progress:
            progress(f"study {i + 1} ({'hard' if st.hard else 'routine'}, seed {st.seed}): {dt:.2f} s")
    return Report(results)
