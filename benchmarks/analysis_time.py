"""Whole-series analysis time: today's path against the detector-only path, same run, CPU.

    python benchmarks/analysis_time.py [--series 6] [--rounds 3] [--threads 1] [--checkpoint PATH]

Baseline: the MedDet detector on every slice + the chain naming from the top
(``Detector.predict`` + ``levels.assign_levels``), i.e. the analysis before the second stage.
New: ``Analyzer.analyze`` (the same detector, the anchor-named chain, the herniation and level
nets on physical crops). Series of 15-20 slices from our own generator at 256-384 px. Prints
the median seconds per series of each and the ratio (target: at most 1.5x).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

from detector.analysis import Analyzer  # noqa: E402
from detector.data.synthetic import make_study  # noqa: E402
from detector.levels import assign_levels  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--series", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--checkpoint", type=Path, default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    analyzer = Analyzer.from_checkpoint(args.checkpoint, device="cpu")
    studies = []
    for i in range(args.series):
        rng = np.random.default_rng([4711, i])
        studies.append(
            make_study(rng, hard=bool(i % 2), n_slices=int(rng.integers(15, 21)), size=int(rng.choice([256, 320, 384])))
        )
    old, new = [], []
    for _ in range(args.rounds):  # interleaved, so load on a shared machine hits both alike
        for st in studies:
            images, spacing = list(st.volume), (st.pixel_spacing, st.pixel_spacing)
            t0 = time.perf_counter()
            assign_levels(analyzer.detector.predict(images))
            t1 = time.perf_counter()
            analyzer.analyze(images, spacing)
            t2 = time.perf_counter()
            old.append(t1 - t0)
            new.append(t2 - t1)
    o, n = statistics.median(old), statistics.median(new)
    print(f"{args.series} series x {args.rounds} rounds, {args.threads} thread(s), model {analyzer.version}")
    print(f"detector + chain (before): {o:.3f} s/series median")
    print(f"analysis with second stage: {n:.3f} s/series median")
    print(f"ratio: {n / o:.2f}x (target <= 1.5x) {'PASS' if n / o <= 1.5 else 'FAIL'}")


if __name__ == "__main__":
    main()
