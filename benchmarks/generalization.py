"""Generalisation benchmark: the analysis on the independent held-out generator.

    python benchmarks/generalization.py [--routine 25] [--hard 25] [--seed 7100]
        [--checkpoint PATH] [--json OUT] [--threads 1] [--baseline] [--calibration-plot PNG]
        [--generator heldout|altgen] [--model-card JSON]

Studies come from ``detector.heldout`` (written separately from the training generator, never
used for training or model selection; docs/heldout.md). The analysis under test is
``detector.analysis.Analyzer``; ``--baseline`` also runs the old path on the same studies
(``Detector.predict`` + ``detector.levels.assign_levels``: today's shipped behaviour), so one
run prints old vs new. Prints the report tables (routine / hard / all), the targets with
PASS/FAIL, the calibration table (per disc by position) and the analysis time per study.
``--calibration-plot`` draws that calibration as a reliability diagram (the new analysis, or
the baseline where the new one is not available; docs/figures/heldout_calibration.png).
``--generator altgen`` scores the second training generator's studies (``detector.altgen``, at
seeds far from its training draws) the same way: a development set for models trained with
it, not a held-out result. ``--model-card`` writes the summary (naming, unknown, shifted chains,
by-name and by-position calls per group, and the command) into that model's metadata JSON as
``metrics.heldout`` (e.g. ``detector/checkpoints/meddet-student.json``), refusing a file of
another model version, so the checkpoint's metadata states its own held-out run.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from detector.heldout.metrics import ReliabilityBin

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

Analyze = Callable[[Any, tuple[float, float]], list[Any]]
BASELINE_THRESHOLD = 0.5  # assign_levels' default: the old path's operating point


@dataclass(frozen=True)
class Model:
    """An analysis path under test: the callable, the model version and its operating point."""

    analyze: Analyze
    version: str
    threshold: float


def baseline_analyzer(checkpoint: str | None) -> Model:
    """The old analysis path: per-slice detections, then levels named by ``assign_levels``."""
    from detector.inference import Detector
    from detector.levels import assign_levels

    det = Detector.from_checkpoint(checkpoint, device="cpu")

    def analyze(volume: Any, pixel_spacing: tuple[float, float]) -> list[dict[str, Any]]:
        out = []
        for lf in assign_levels(det.predict(list(volume)), threshold=BASELINE_THRESHOLD):
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

    return Model(analyze, det.version, BASELINE_THRESHOLD)


def new_analyzer(checkpoint: str | None) -> Model:
    from detector.analysis import Analyzer  # type: ignore[import-not-found]

    analyzer = Analyzer.from_checkpoint(checkpoint)
    return Model(
        lambda volume, spacing: list(analyzer.analyze(volume, spacing).findings),
        analyzer.version,
        analyzer.calibration.threshold,
    )


def plot_calibration(
    bins: dict[str, Sequence[ReliabilityBin]], threshold: float, title: str, path: str, note: str = ""
) -> None:
    """Write a reliability diagram: observed herniation rate against mean predicted probability
    per bin (``ReliabilityBin``s) for each series, with Wilson 95% intervals, the diagonal, the
    operating point as a vertical line, and the count per bin as bars below."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, axn) = plt.subplots(
        2, 1, figsize=(5.2, 5.8), sharex=True, gridspec_kw={"height_ratios": [4, 1.2], "hspace": 0.08}
    )
    ax.plot([0, 1], [0, 1], ":", color="0.4", lw=1, label="perfect calibration")
    width = min(b.hi - b.lo for bs in bins.values() for b in bs) / (len(bins) + 1)
    for k, (name, bs) in enumerate(bins.items()):
        full = [b for b in bs if b.n]
        x = [b.mean_predicted for b in full]
        y = [b.observed.value for b in full]
        err = [[v - b.observed.ci[0] for v, b in zip(y, full)], [b.observed.ci[1] - v for v, b in zip(y, full)]]
        n = sum(b.n for b in bs)
        line = ax.errorbar(x, y, yerr=err, marker="o", ms=5, capsize=2, lw=1.5, label=f"{name} (n = {n})")
        offset = (k - (len(bins) - 1) / 2) * width
        bars = axn.bar([(b.lo + b.hi) / 2 + offset for b in bs], [b.n for b in bs], width, color=line[0].get_color())
        axn.bar_label(bars, fontsize=7, padding=1)
    for a in (ax, axn):
        a.axvline(threshold, color="tab:red", ls="--", lw=1)
    ax.plot([], [], color="tab:red", ls="--", lw=1, label=f"operating point p >= {threshold:.3g}")
    ax.set(xlim=(-0.02, 1.02), ylim=(-0.02, 1.05), ylabel="observed herniation rate", title=title)
    ax.legend(loc="upper left", fontsize=7.5, framealpha=0.7)
    axn.set(xlabel="predicted herniation probability (points: bin mean; bars: discs per bin)", ylabel="discs")
    axn.set_ylim(0, max((b.n for bs in bins.values() for b in bs), default=1) * 1.35 + 1)
    if note:
        fig.text(0.99, 0.005, note, ha="right", va="bottom", fontsize=6, color="0.4")
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)


def altgen_studies(n_routine: int, n_hard: int, seed: int) -> Any:
    """The second training generator's studies (``development_seed``: never a training draw's)."""
    from detector.altgen import development_seed, make_study

    for hard, n in ((False, n_routine), (True, n_hard)):
        for i in range(n):
            yield make_study(development_seed(seed, i), hard)


def heldout_summary(report: dict[str, Any], command: str) -> dict[str, Any]:
    """The model metadata's ``metrics.heldout`` block from one analysis's ``Report.to_dict()``."""

    def calls(group: dict[str, Any], how: str) -> dict[str, Any]:
        part = group[how]
        return {
            "sensitivity": part["sensitivity"]["value"],
            "specificity": part["specificity"]["value"],
            "auc": part["auc"],
            "auc_ci95": part["auc_ci95"],
        }

    out: dict[str, Any] = {"command": command}
    for name in ("routine", "hard"):
        group = report["groups"][name]
        naming = group["naming"]
        out[name] = {
            "naming": naming["accuracy"]["value"],
            "named_right": naming["accuracy"]["k"],
            "reported": naming["accuracy"]["n"],
            "unknown_findings": naming["unknown"],
            "shifted_studies": naming["shifted_studies"],
            "off_disc": naming["off_disc"],
            "by_name": calls(group, "by_name"),
            "by_position": calls(group, "by_position"),
        }
    return out


def command_without_model_card(argv: Sequence[str]) -> str:
    """The command line that made a run, without ``--model-card JSON`` (where it was written)."""
    kept: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--model-card":
            skip = True
        elif not arg.startswith("--model-card="):
            kept.append(arg)
    return " ".join(["python benchmarks/generalization.py", *kept])


def write_model_card(path: Path, version: str, summary: dict[str, Any]) -> None:
    """Put ``summary`` in ``path``'s ``metrics.heldout``, stamped with ``version`` (the analysis:
    weights and rules), whose weights the file must describe (a copied sidecar then shows whose
    run it holds)."""
    from detector import analysis_version

    meta = json.loads(path.read_text())
    if analysis_version(str(meta.get("version"))) != version:
        raise ValueError(f"{path} describes {meta.get('version')}, this run scored {version}")
    meta.setdefault("metrics", {})["heldout"] = {"model_version": version, **summary}
    path.write_text(json.dumps(meta, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--routine", type=int, default=25, help="routine studies")
    ap.add_argument("--hard", type=int, default=25, help="hard studies")
    ap.add_argument("--seed", type=int, default=7100, help="study seed")
    ap.add_argument("--checkpoint", default=None, help="checkpoint (default: the shipped one)")
    ap.add_argument("--json", dest="json_out", default=None, help="write the reports as JSON here")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    ap.add_argument("--baseline", action="store_true", help="also run the old analysis path (Detector + assign_levels)")
    ap.add_argument(
        "--calibration-plot", metavar="PNG", default=None, help="draw the calibration by position (reliability) here"
    )
    ap.add_argument(
        "--generator",
        choices=("heldout", "altgen"),
        default="heldout",
        help="altgen: the second TRAINING generator's studies instead (a development set, not held out)",
    )
    ap.add_argument(
        "--model-card",
        metavar="JSON",
        type=Path,
        default=None,
        help="write the held-out summary into this model metadata file's metrics.heldout (same model version)",
    )
    args = ap.parse_args(argv)
    if args.model_card is not None and (args.generator != "heldout" or not args.model_card.is_file()):
        ap.error("--model-card: needs --generator heldout and an existing model metadata JSON")

    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    import torch

    torch.set_num_threads(max(1, args.threads))
    from detector.heldout import studies
    from detector.heldout.protocol import CALIBRATION_EDGES, Report, score_study
    from detector.heldout.report_text import format_calibration, format_report, format_targets

    analyzers: dict[str, Model] = {}
    try:
        analyzers["new"] = new_analyzer(args.checkpoint)
    except (ImportError, ValueError, FileNotFoundError) as exc:
        print(f"note: the new analysis is not available ({type(exc).__name__}: {exc}); running the baseline only")
        args.baseline = True
    if args.baseline:
        analyzers["baseline"] = baseline_analyzer(args.checkpoint)
    if args.model_card is not None:  # refuse another model's file before scoring anything
        from detector import analysis_version

        card_version = analysis_version(json.loads(args.model_card.read_text()).get("version"))
        if "new" not in analyzers or analyzers["new"].version != card_version:
            ap.error(f"--model-card: {args.model_card} describes {card_version}, not the model under test")

    results: dict[str, list[Any]] = {k: [] for k in analyzers}
    gen_s = 0.0
    t_all = time.perf_counter()
    source = studies if args.generator == "heldout" else altgen_studies
    for i, st in enumerate(source(args.routine, args.hard, args.seed)):
        gen_s += time.perf_counter() - t_all
        line = [f"study {i + 1:>3} {'hard   ' if st.hard else 'routine'} seed {st.seed:>10} {tuple(st.volume.shape)}"]
        for name, model in analyzers.items():
            t0 = time.perf_counter()
            findings = model.analyze(st.volume, st.pixel_spacing)
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
    reports = {name: Report(rs) for name, rs in results.items()}
    for name, report in reports.items():
        model = analyzers[name]
        print()
        path = "detector.analysis.Analyzer" if name == "new" else "Detector + assign_levels"
        print(format_report(report, f"== {name} analysis ({path}), model {model.version} =="))
        print(format_calibration(report))
        print(f"  operating point: p >= {model.threshold:.4g}")
        print(format_targets(report))
        secs = sum(r.seconds for r in report.results) / max(len(report.results), 1)
        print(f"  total analysis time per study: {secs:.2f} s")
        calibration = {
            "edges": list(CALIBRATION_EDGES),
            "groups": {g: [b.to_dict() for b in report.calibration(g)] for g in ("routine", "hard", "all")},
        }
        out["reports"][name] = report.to_dict() | {
            "analysis_s_per_study": secs,
            "model_version": model.version,
            "operating_point": model.threshold,
            "calibration_by_position": calibration,
        }
    print(f"\ngeneration: {gen_s / max(n, 1):.2f} s per study")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(out, indent=2))
        print(f"wrote {args.json_out}")
    if args.model_card is not None and "new" in out["reports"]:
        report = out["reports"]["new"]
        command = command_without_model_card(argv if argv is not None else sys.argv[1:])
        write_model_card(args.model_card, report["model_version"], heldout_summary(report, command))
        print(f"wrote metrics.heldout of {args.model_card}")
    if args.calibration_plot:
        name = "new" if "new" in reports else "baseline"
        report, model = reports[name], analyzers[name]
        series = {g: report.calibration(g) for g in ("routine", "hard") if report.studies(g)}
        plot_calibration(
            series,
            model.threshold,
            f"Calibration on the held-out generator (by position)\nmodel {model.version}, {name} analysis",
            args.calibration_plot,
            note=f"benchmarks/generalization.py --routine {args.routine} --hard {args.hard} --seed {args.seed}",
        )
        print(f"wrote {args.calibration_plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
