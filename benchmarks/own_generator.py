"""Per-level findings on our own generator: today's path against the analysis, same studies.

    python benchmarks/own_generator.py [--studies 25] [--checkpoint PATH] [--json OUT]

The studies of ``benchmarks/levels.py`` (``detector.data``, seeds [5000 + i, hard], 11 slices;
never used for training, calibration or choosing a model), normal and hard. Before: detector +
``levels.assign_levels`` at its 0.5 score. After: ``Analyzer.analyze`` at the stored operating
point. Truth: the generator's ``herniated_levels`` (a protrusion of >= 1 mm on some slice; the
second stage is taught the 1.5 mm definition, so the hard set's 1.2-1.5 mm herniations count
against it). Prints naming, sensitivity, specificity (95% Wilson) and AUC per set.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from detector.analysis import Analyzer  # noqa: E402
from detector.data.synthetic import make_study  # noqa: E402
from detector.heldout.metrics import roc_auc, wilson_interval  # noqa: E402
from detector.levels import LEVELS, assign_levels  # noqa: E402


def rate(k: int, n: int) -> str:
    lo, hi = wilson_interval(k, n)
    return f"{k / max(n, 1):.2f} ({lo:.2f}-{hi:.2f}, {k}/{n})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=25)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    analyzer = Analyzer.from_checkpoint(args.checkpoint, device="cpu")
    out: dict = {"model": analyzer.version, "threshold": analyzer.calibration.threshold}
    for hard in (False, True):
        rows = {"before": [], "after": []}  # (probability, called, truth) per level
        named = {"before": [0, 0], "after": [0, 0]}
        for i in range(args.studies):
            st = make_study(np.random.default_rng([5000 + i, hard]), hard=hard, n_slices=11)
            dets = analyzer.detector.predict(list(st.volume))
            old = assign_levels(dets, threshold=0.5)
            new = analyzer.analyze(list(st.volume), (st.pixel_spacing, st.pixel_spacing), dets).findings
            for name, findings in (("before", old), ("after", new)):
                by_level = {}
                for f in findings:
                    if f.level in LEVELS:
                        named[name][0] += st.level_under(f.slice_index, f.box) == f.level
                        named[name][1] += 1
                        p = f.score if name == "after" or f.label == "herniation" else 1 - f.score
                        by_level[f.level] = (p, f.label == "herniation")
                for lv in LEVELS:
                    p, called = by_level.get(lv, (0.0, False))
                    rows[name].append((p, called, lv in st.herniated_levels))
        kind = "hard" if hard else "normal"
        out[kind] = {}
        print(f"\n{kind} studies ({args.studies}), model {analyzer.version}")
        for name, r in rows.items():
            p = np.array([x[0] for x in r])
            called = np.array([x[1] for x in r])
            truth = np.array([x[2] for x in r])
            tp, pos = int((called & truth).sum()), int(truth.sum())
            tn, neg = int((~called & ~truth).sum()), int((~truth).sum())
            auc = roc_auc(p, truth)
            print(
                f"  {name:6s} naming {rate(*named[name])}  sensitivity {rate(tp, pos)}  "
                f"specificity {rate(tn, neg)}  AUC {auc:.3f}"
            )
            out[kind][name] = {"naming": named[name], "sensitivity": [tp, pos], "specificity": [tn, neg], "auc": auc}
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
