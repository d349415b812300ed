"""Level naming under stress, on our own generator: the development set for the level anchor.

    python benchmarks/naming_dev.py [--studies 30] [--seed 9400] [--discs BEST_PT]
        [--views one|all] [--look generator|random] [--anatomy widen|bones]
        [--locator LOCATOR_PT [--fusion product|mean|locator|level]] [--generator ours|altgen] [--json OUT]

The held-out generator (``detector.heldout``) must never choose a model, a view set or a
threshold, so changes to the level anchor are judged here: studies of ``detector.data`` with
the training sampler's geometry (``samples.widen``: a field of view up to ~1.7x, other C2,
dens and skull-base proportions, straighter or kyphotic necks, the skull base cut off),
15 slices, half of them hard, at seeds (SEED, i) that no training or calibration draw uses.
``--look random`` draws every tissue's intensity at random (``random_contrast``), a
stress look; it flatters a net trained on that look, so ``generator`` is the fair
comparison. ``--anatomy bones`` also draws C1's posterior arch and the clivus, and other C1
and dens sizes (``samples.with_craniovertebral_bones``, as ``train-discs --bones``).
``--views one`` reads one crop per chain position (as before ``LEVEL_VIEWS``). ``--locator``
adds a level locator (``meddet train-locator``), combined with the level net by ``--fusion``.
``--generator altgen`` runs the second training generator's studies instead (``detector.altgen``,
seeds far from its training draws): unseen by a level net trained without it, in-distribution
for one trained with ``train-discs --other-generator``.
Prints: studies named / unknown (and why), reported levels named right, studies with a wrong
or shifted chain (two or more levels off by the same step).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402

import detector.altgen as altgen  # noqa: E402
from detector.analysis import Analyzer, LevelView  # noqa: E402
from detector.data.render import random_contrast, sample_contrast  # noqa: E402
from detector.data.synthetic import make_study  # noqa: E402
from detector.discs.locator import load_locator  # noqa: E402
from detector.discs.model import DiscModels  # noqa: E402
from detector.discs.samples import widen, with_craniovertebral_bones  # noqa: E402
from detector.levels import LEVELS, level_under  # noqa: E402
from detector.naming import FUSIONS  # noqa: E402

#: Disc levels cranial first, past the reported ones (a finding named C7-T1 may sit on T1-T2).
ORDER = (*LEVELS, "T1-T2", "T2-T3", "T3-T4")


class AltgenTruth:
    """A ``detector.altgen`` study with the truth lookup of ours (``level_under``)."""

    def __init__(self, study: altgen.AltStudy) -> None:
        self.volume, self.spacing = study.volume, study.pixel_spacing
        self.slices = [[(d.level, d.boxes[k]) for d in study.discs if k in d.boxes] for k in range(len(study.volume))]

    def level_under(self, k: int, box, min_iou: float = 0.3) -> str | None:
        return level_under(self.slices, k, box, min_iou)


def dev_study(generator: str, look: str, anatomy: str, seed: int, i: int) -> tuple[Any, tuple[float, float]]:
    """Development study i (half of them hard) and its pixel spacing: ``detector.data`` with
    ``look`` ("generator" | "random") and ``anatomy`` ("widen" | "bones"), or ``detector.altgen``."""
    if generator == "altgen":
        study = AltgenTruth(altgen.make_study(altgen.development_seed(seed, i), hard=bool(i % 2), n_slices=15))
        return study, study.spacing
    ours = make_study(
        np.random.default_rng([seed, i]),
        hard=bool(i % 2),
        n_slices=15,
        adjust=with_craniovertebral_bones if anatomy == "bones" else widen,
        contrast_of=random_contrast if look == "random" else sample_contrast,
    )
    return ours, (ours.pixel_spacing, ours.pixel_spacing)


def tally(counts: Counter[str], reported: Iterable[tuple[str, str | None]]) -> None:
    """Add one study's (reported level, true level under its box or None) pairs to ``counts``:
    reported, right, wrong, on no disc, studies with a wrong name, shifted chains (two or more
    levels off by the same step). Levels that are not named (``unknown``) are not counted."""
    steps = []
    for level, truth in reported:
        if level not in LEVELS:
            continue
        counts["reported"] += 1
        if truth == level:
            counts["right"] += 1
        elif truth is not None:
            steps.append(ORDER.index(level) - ORDER.index(truth))
        else:
            counts["on no disc"] += 1
    counts["wrong"] += len(steps)
    counts["studies with a wrong name"] += bool(steps)
    counts["shifted chains"] += any(n >= 2 for n in Counter(steps).values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=30)
    ap.add_argument("--seed", type=int, default=9400)
    ap.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    ap.add_argument("--discs", default=None, help="a second stage (best.pt of `meddet train-discs`) to use instead")
    ap.add_argument("--views", choices=("one", "all"), default="all")
    ap.add_argument("--look", choices=("generator", "random"), default="generator")
    ap.add_argument(
        "--anatomy",
        choices=("widen", "bones"),
        default="widen",
        help="bones: also C1's posterior arch, the clivus, other C1 and dens sizes (as in training)",
    )
    ap.add_argument(
        "--generator",
        choices=("ours", "altgen"),
        default="ours",
        help="altgen: the second training generator's studies (its own look and anatomy; --look, --anatomy unused)",
    )
    ap.add_argument("--locator", default=None, help="a level locator (locator.pt of training) to add")
    ap.add_argument("--fusion", choices=FUSIONS, default="mean")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    discs = DiscModels.load(args.discs) if args.discs else None
    analyzer = Analyzer.from_checkpoint(args.checkpoint, device="cpu", discs=discs)
    if args.locator:
        analyzer.discs.locator = load_locator(args.locator)
        analyzer.discs.level_fusion = args.fusion
    if args.views == "one":
        analyzer.level_views = (LevelView(),)
    counts: Counter[str] = Counter()
    for i in range(args.studies):
        study, spacing = dev_study(args.generator, args.look, args.anatomy, args.seed, i)
        result = analyzer.analyze(list(study.volume), spacing)
        counts["studies"] += 1
        counts["named" if result.naming.status == "found" else "unknown"] += 1
        if result.naming.reason:
            counts["unknown: " + result.naming.reason.split(":")[0]] += 1
        tally(counts, [(f.level, study.level_under(f.slice_index, f.box)) for f in result.findings])
    report = {
        "model": analyzer.version,
        "discs": args.discs,
        "views": args.views,
        "generator": args.generator,
        "look": args.look,
        "anatomy": args.anatomy,
        "locator": args.locator,
        "fusion": analyzer.discs.level_fusion,
        "seed": args.seed,
        **counts,
        "named right": round(counts["right"] / max(counts["reported"], 1), 3),
    }
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
