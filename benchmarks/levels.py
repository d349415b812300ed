"""Disc level assignment with a trained detector on synthetic studies: the chain of
``detector.levels`` against the naive per-slice rule (sort each slice's boxes, name from the top).

    python benchmarks/levels.py [--studies 25] [--checkpoint PATH] [--json]

Prints, for normal and hard studies, the share of detections named with their true level
(a detection counts when it overlaps a true box by IoU > 0.5) and the level calls (herniation
or not) against the truth at a few thresholds. One run, both methods on the same detections.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

# benchmarks/detector.py would shadow the detector package when run as a script
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

from detector.data.synthetic import make_study  # noqa: E402
from detector.levels import LEVELS, assign_levels, box_iou, name_discs  # noqa: E402
from detector.types import Detection  # noqa: E402

THRESHOLDS = (0.3, 0.4, 0.5)


def naive_names(dets: list[Detection], min_score: float) -> list[tuple[Detection, str]]:
    """The contract's literal rule on one slice: boxes sorted top-down, named from C2-C3."""
    kept: list[Detection] = []
    for d in sorted((d for d in dets if d.score >= min_score), key=lambda d: -d.score):
        if all(box_iou(d.box, k.box) < 0.4 for k in kept):  # one box per disc (both classes)
            kept.append(d)
    kept.sort(key=lambda d: d.box[1] + d.box[3])
    return list(zip(kept, LEVELS))


def chain_names(dets_per_slice: list[list[Detection]]) -> dict[int, list[tuple[Sequence[float], str]]]:
    """Per slice, the (box, level) pairs ``detector.levels.name_discs`` gives."""
    out: dict[int, list[tuple[Sequence[float], str]]] = {}
    for level, disc in name_discs(dets_per_slice):
        out.setdefault(disc.slice_index, []).append((disc.box, level))
    return out


def named_right(named: list[tuple[Sequence[float], str]], boxes: np.ndarray, levels: list[str]) -> tuple[int, int]:
    right = total = 0
    for box, level in named:
        ious = [box_iou(box, b) for b in boxes]
        if ious and max(ious) > 0.5:
            total += 1
            right += levels[int(np.argmax(ious))] == level
    return right, total


def run(n: int, checkpoint: str | None) -> dict[str, dict[str, float]]:
    import torch

    from detector.inference import Detector

    torch.set_num_threads(1)
    det = Detector.from_checkpoint(checkpoint, device="cpu")
    report: dict[str, dict[str, float]] = {}
    for hard in (False, True):
        counts = {"naive": [0, 0], "chain": [0, 0]}
        calls = {t: [0, 0, 0, 0] for t in THRESHOLDS}  # right, total, true positives, positives
        for i in range(n):
            study = make_study(np.random.default_rng([5000 + i, hard]), hard=hard, n_slices=11)
            dets = det.predict(list(study.volume))
            chain = chain_names(dets)
            for k, (boxes, levels) in enumerate(zip(study.boxes, study.levels)):
                for name, named in (
                    ("naive", [(d.box, lv) for d, lv in naive_names(dets[k], 0.3)]),
                    ("chain", chain.get(k, [])),
                ):
                    r, t = named_right(named, boxes, levels)
                    counts[name][0] += r
                    counts[name][1] += t
            for t in THRESHOLDS:
                got = {f.level: f.label for f in assign_levels(dets, threshold=t)}
                for lv in LEVELS:
                    truth, call = lv in study.herniated_levels, got.get(lv) == "herniation"
                    c = calls[t]
                    c[0] += truth == call
                    c[1] += 1
                    c[2] += truth and call
                    c[3] += truth
        row = {f"named_{m}": r / max(1, t) for m, (r, t) in counts.items()}
        row["named_chain_vs_naive"] = row["named_chain"] / max(row["named_naive"], 1e-9)
        for t, (r, tot, tp, pos) in calls.items():
            row[f"calls_right@{t}"] = r / tot
            row[f"sensitivity@{t}"] = tp / max(1, pos)
        report["hard" if hard else "normal"] = row
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--studies", type=int, default=25)
    parser.add_argument("--checkpoint", default=None, help="default: the shipped checkpoint")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    report = run(args.studies, args.checkpoint)
    if args.json:
        print(json.dumps(report, indent=1))
        return
    keys = list(next(iter(report.values())))
    print(f"{'':24s}" + "".join(f"{k:>10s}" for k in report))
    for k in keys:
        print(f"{k:24s}" + "".join(f"{report[s][k]:10.3f}" for s in report))


if __name__ == "__main__":
    main()
