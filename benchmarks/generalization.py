"""Generalisation benchmark: the analysis on the independent held-out generator.

    python benchmarks/generalization.py [--routine 25] [--hard 25] [--seed 7100]
        [--checkpoint PATH] [--json OUT] [--threads 1] [--baseline]

Studies come from ``detector.heldout`` (written separately from the training generator, never
used for training or model selection; docs/heldout.md). The analysis under test is
``detector.analysis.Analyzer``; ``--baseline`` also runs the old path on the same studies
(``Detector.predict`` + ``detector.levels.assign_levels``: today's shipped behaviour), so one
run prints old vs new. Prints the report tables (routine / hard / all), the targets with
PASS/FAIL, and the analysis time per study.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Analyze = Callable[[Any, tuple[float, float]], list[Any]]


def baseline_analyzer(checkpoint: str | None) -> Analyze:
    """The old analysis path: per-slice detections, then levels named by ``assign_levels``."""
    from detector.inference import Detector
    from detector.levels import assign_levels

    det = Detector.from_checkpoint(checkpoint, device="cpu")

    def analyze(volume: Any, pixel_spacing: tuple[float, float]) -> list[dict[str, Any]]:
        out = []
        for lf in assign_levels(det.predict(list(volume))):
            herniated = lf.label == "herniation"
            out.append(
                {
                    "level": lf.level,
                    "probability": lf.score if herniated else 1.0 - lf.score,
                    "called": herniated,
                    "slice_index": lf.slice_index,
                    "box": lf.box,
                }
            )
        return out

    return analyze


def new_analyzer(checkpoint: str | None) -> Analyze:
    from detector.analysis import Analyzer  # type: ignore[import-not-found]

    analyzer = Analyzer.from_checkpoint(checkpoint)
    return lambda volume, spacing: list(analyzer.analyze(volume, spacing).findings)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routine", type=int, default=25, help="routine studies")
    ap.add_argument("--hard", type=int, default=25, help="hard studies")
    ap.add_argument("--seed", type=int, default=7100, help="study seed")
    ap.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    ap.add_argument("--json", dest="json_out", default=None, help="write the reports as JSON here")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--baseline", action="store_true", help="also run the old analysis path (Detector + assign_levels)")
    args = ap.parse_args(argv)

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(max(1, args.threads))
    from detector.heldout import studies
    from detector.heldout.protocol import Report, format_report, format_targets, score_study

    analyzers: dict[str, Analyze] = {}
    try:
        analyzers["new"] = new_analyzer(args.checkpoint)
    except (ImportError, ValueError, FileNotFoundError) as exc:
        print(f"note: the new analysis is not available ({type(exc).__name__}: {exc}); running the baseline only")
        args.baseline = True
    if args.baseline:
        analyzers["baseline"] = baseline_analyzer(args.checkpoint)

    results: dict[str, list[Any]] = {k: [] for k in analyzers}
    gen_s = 0.0
    t_all = time.perf_counter()
    for i, st in enumerate(studies(args.routine, args.hard, args.seed)):
        gen_s += time.perf_counter() - t_all
        line = [f"study {i + 1:>3} {'hard   ' if st.hard else 'routine'} seed {st.seed:>10} {tuple(st.volume.shape)}"]
        for name, analyze in analyzers.items():
            t0 = time.perf_counter()
            findings = analyze(st.volume, st.pixel_spacing)
            dt = time.perf_counter() - t0
            results[name].append(score_study(st, findings, dt))
            line.append(f"{name} {dt:.2f} s")
        print("  ".join(line), flush=True)
        t_all = time.perf_counter()
    n = args.routine + args.hard
    out: dict[str, Any] = {
        "seed": args.seed,
        "routine": args.routine,
        "hard": args.hard,
        "generation_s_per_study": gen_s / max(n, 1),
        "reports": {},
    }
    for name, rs in results.items():
        report = Report(rs)
        print()
        path = "detector.analysis.Analyzer" if name == "new" else "Detector + assign_levels"
        print(format_report(report, f"== {name} analysis ({path}) =="))
        print(format_targets(report))
        secs = sum(r.seconds for r in rs) / max(len(rs), 1)
        print(f"  total analysis time per study: {secs:.2f} s")
        out["reports"][name] = report.to_dict() | {"analysis_s_per_study": secs}
    print(f"\ngeneration: {gen_s / max(n, 1):.2f} s per study")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json_out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
