"""The held-out report as text tables (``benchmarks/generalization.py``, ``meddet evaluate``):
naming, both views' calls with their intervals, the size and confounder splits, calibration and
targets, for routine, hard and all studies."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from detector.heldout.anatomy import REPORTED_LEVELS
from detector.heldout.metrics import Rate
from detector.heldout.protocol import CALIBRATION_EDGES, UNNAMED_BECAUSE, Report, check_targets


def format_report(report: Report, title: str = "") -> str:
    """Tables of the report: naming, per-level classification, by position; routine/hard/all."""
    g = report.groups()
    names = tuple(n for n in ("routine", "hard") if g[n]["studies"]) + ("all",)
    w = 26
    lines = [title] if title else []

    def row(label: str, vals: list[str]) -> None:
        lines.append(f"  {label:<{w}}" + "".join(f"{v:>34}" for v in vals))

    def auc(v: float) -> str:
        return "n/a" if v is None or math.isnan(v) else f"{v:.3f}"

    def auc_ci(c: dict[str, Any]) -> str:
        lo, hi = c["auc_ci95"]
        return auc(c["auc"]) + ("" if math.isnan(lo) else f" [{lo:.2f}-{hi:.2f}]")

    def rate(r: Rate) -> str:
        if not r.n:
            return "n/a"
        lo, hi = r.ci
        return f"{r.value:.3f} {r.k}/{r.n} [{lo:.2f}-{hi:.2f}]"

    row("", list(names))
    row("studies", [str(g[n]["studies"]) for n in names])
    row("analysis s/study", [f"{g[n]['seconds_per_study']:.2f}" for n in names])
    lines.append("  naming")
    row("  correct / reported", [rate(g[n]["naming"]["accuracy"]) for n in names])
    for key in ("unknown", "shifted_studies", "off_disc"):
        row(f"  {key}", [str(g[n]["naming"][key]) for n in names])
    why = [g[n]["naming"]["unnamed_studies"] for n in names]
    row("  unnamed studies, why", [", ".join(f"{k} {c[k]}" for k in UNNAMED_BECAUSE if c[k]) or "0" for c in why])
    for view in ("by_name", "by_position"):
        lines.append(f"  herniation per level, {view.replace('_', ' ')}")
        row("  sensitivity", [rate(g[n][view]["sensitivity"]) for n in names])
        row("  specificity", [rate(g[n][view]["specificity"]) for n in names])
        row("  ROC AUC [study bootstrap]", [auc_ci(g[n][view]) for n in names])
        row("  best sens. at spec>=0.85", [auc(g[n][view]["best_sensitivity_at_spec85"]) for n in names])
    lines.append("  by name, per level (sensitivity / specificity / AUC)")
    for level in REPORTED_LEVELS:
        cells = []
        for n in names:
            c = g[n]["by_name"]["per_level"][level]
            se, sp = c["sensitivity"], c["specificity"]
            cells.append(f"{auc(se.value)} {se.k}/{se.n} | {auc(sp.value)} | {auc(c['auc'])}")
        row(f"  {level}", cells)
    lines.append("  by name, sensitivity by protrusion size")
    for key in g["all"]["by_name"]["sensitivity_by_size"]:
        row(f"  {key}", [rate(g[n]["by_name"]["sensitivity_by_size"][key]) for n in names])
    row("  specificity on bulges", [rate(g[n]["by_name"]["specificity_bulge"]) for n in names])
    row("  specificity on normals", [rate(g[n]["by_name"]["specificity_normal"]) for n in names])
    lines.append("  by position, sensitivity by protrusion size")
    for key in g["all"]["by_position"]["sensitivity_by_size"]:
        row(f"  {key}", [rate(g[n]["by_position"]["sensitivity_by_size"][key]) for n in names])
    lines.append("  by position, specificity on normal discs with a confounder")
    for key in g["all"]["by_position"]["specificity_by_confounder"]:
        by = [g[n]["by_position"]["specificity_by_confounder"].get(key) for n in names]
        row(f"  {key}", [rate(b) if b is not None else "-" for b in by])
    return "\n".join(lines)


def format_calibration(report: Report, edges: Sequence[float] = CALIBRATION_EDGES) -> str:
    """The reliability table by position: per bin, per group the count, the mean predicted
    probability and the observed herniation rate."""
    names = [n for n in ("routine", "hard") if report.studies(n)] + ["all"]
    bins = {n: report.calibration(n, edges) for n in names}

    def num(v: float) -> str:
        return "-" if math.isnan(v) else f"{v:.3f}"

    lines = ["  calibration by position (herniation probability; n / mean predicted / observed rate)"]
    lines.append(f"  {'  bin':<26}" + "".join(f"{n:>34}" for n in names))
    for i, b in enumerate(bins["all"]):
        bracket = "]" if i == len(bins["all"]) - 1 else ")"
        cells = [f"{x.n:>5} {num(x.mean_predicted):>7} {num(x.observed.value):>7}" for x in (bins[n][i] for n in names)]
        lines.append(f"  {f'  [{b.lo:.2f}, {b.hi:.2f}{bracket}':<26}" + "".join(f"{c:>34}" for c in cells))
    return "\n".join(lines)


def format_targets(report: Report) -> str:
    lines = ["targets"]
    for name, group, value, goal, passed in check_targets(report):
        v = (
            "n/a"
            if value is None or (isinstance(value, float) and math.isnan(value))
            else (f"{value:.3f}" if isinstance(value, float) else str(value))
        )
        op = "==" if name == "shifted_chains" else ">="
        lines.append(f"  {'PASS' if passed else 'FAIL'}  {name:<15} {group:<8} {v:>7}  (target {op} {goal})")
    return "\n".join(lines)
