"""Two models on the same studies: is the difference in herniation AUC more than the studies' noise?

    python benchmarks/compare_reports.py A.json B.json [--report new] [--rounds 2000]

A and B are ``benchmarks/generalization.py --json`` files of the same generator, seed and study
counts (e.g. the shipped model and a candidate on altgen's development studies). For routine,
hard and all studies, by position and by name, it prints each model's ROC AUC, B - A with its
95% interval when whole studies are resampled together for both models (paired, so the
studies' own difficulty cancels), and the share of resamples in which B is ahead. An interval
that holds 0 means the studies cannot tell the two apart: 25 hard studies hold ~75 herniated
discs, and a difference of a few hundredths is within it.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's detector, not benchmarks/detector.py

from detector.heldout.metrics import BOOTSTRAP_ROUNDS, paired_auc_difference  # noqa: E402

VIEWS = {"by position": "p_pos", "by name": "p_name"}


def load_cases(path: Path, report: str) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """The run's header (seed, counts, model) and its report's cases; a clear error for a file
    written before cases were recorded."""
    data = json.loads(path.read_text())
    reports = data.get("reports", {})
    if report not in reports:
        raise SystemExit(f"{path}: no report {report!r} (has {sorted(reports)})")
    cases = reports[report].get("cases")
    if cases is None:
        raise SystemExit(f"{path}: no per-case scores; run benchmarks/generalization.py again to record them")
    header = {k: data.get(k) for k in ("seed", "routine", "hard")} | {"model": reports[report].get("model_version")}
    return header, cases


def paired(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The two runs' cases matched by (study, level); the same truth is required."""
    index = {(c["study"], c["level"]): c for c in b}
    if len(index) != len(a) or any((c["study"], c["level"]) not in index for c in a):
        raise SystemExit("the two runs hold different studies: compare runs of the same generator, seed and counts")
    pairs = [(c, index[(c["study"], c["level"])]) for c in a]
    if any(x["herniated"] != y["herniated"] for x, y in pairs):
        raise SystemExit("the two runs disagree on the truth of a disc: not the same studies")
    return pairs


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("a", type=Path, help="generalization.py --json of model A (e.g. the shipped one)")
    ap.add_argument("b", type=Path, help="the same for model B (e.g. a candidate)")
    ap.add_argument("--report", default="new", help="which report of each file (default: new)")
    ap.add_argument("--rounds", type=int, default=BOOTSTRAP_ROUNDS, help="bootstrap resamples of the studies")
    args = ap.parse_args(argv)
    head_a, cases_a = load_cases(args.a, args.report)
    head_b, cases_b = load_cases(args.b, args.report)
    pairs = paired(cases_a, cases_b)
    print(f"A {head_a['model']} ({args.a})\nB {head_b['model']} ({args.b})")
    print(f"seed {head_a['seed']}: {head_a['routine']} routine + {head_a['hard']} hard studies, {len(pairs)} levels")
    for group in ("routine", "hard", "all"):
        sel = [(x, y) for x, y in pairs if group == "all" or x["hard"] == (group == "hard")]
        if not sel:
            continue
        y = np.array([x["herniated"] for x, _ in sel], bool)
        if not y.any() or y.all():
            print(f"{group:<8} one class only: no AUC")
            continue
        studies = [x["study"] for x, _ in sel]
        for view, key in VIEWS.items():
            d = paired_auc_difference(
                [x[key] for x, _ in sel], [z[key] for _, z in sel], y, studies, rounds=args.rounds
            )
            print(f"{group:<8} {view:<12} AUC {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
