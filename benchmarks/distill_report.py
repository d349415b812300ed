"""Tables and plots for docs/results.md from the JSON files of distill_experiments.py.

python -m benchmarks.distill_report runs/distill [SPEED_DIR]   # its block in docs/results.md
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

PAPER = {"teacher R152": 86.1, "teacher R101": 85.8, "teacher R50": 85.6, "MedDet": 85.5, "undistilled": 80.8}
ABLATION = [
    ("abl_base", "distillation base (sum fusion)", 84.2),
    ("abl_ode", "+ nmODE² (head)", 85.0),
    ("abl_ode_lwff", "+ LWFF", 85.3),
    ("meddet", "+ AATM (= MedDet)", 85.5),
]
PLACEMENT = [("meddet", "head", 85.0), ("place_fpn", "FPN", 84.3), ("place_backbone", "backbone", 83.6)]
FUSION = [("meddet", "LWFF", 85.5), ("fuse_sum", "sum", 85.1), ("fuse_concat", "concatenation", 85.0)]


def _load(out: Path, name: str) -> dict[str, Any] | None:
    path = out / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{100 * x:.1f}"


def _runs(out: Path, name: str) -> list[dict[str, Any]]:
    """The run ``name`` and its repeats with other student seeds (``name_sN``)."""
    first = _load(out, name)
    return ([first] if first else []) + [json.loads(p.read_text()) for p in sorted(out.glob(f"{name}_s*.json"))]


def _mean(runs: list[dict[str, Any]], key: str, scale: float = 100.0, digits: int = 1) -> str:
    vals = [scale * r[key] for r in runs]
    m = statistics.fmean(vals)
    if len(vals) == 1:
        return f"{m:.{digits}f}"
    return f"{m:.{digits}f} ± {statistics.stdev(vals):.{digits}f}"


def _acc_row(label: str, runs: list[dict[str, Any]], paper: float | None) -> str:
    if not runs:
        return f"| {label} | not run | | | | | | |"
    r = runs[0]
    return (
        f"| {label} | {_mean(runs, 'map50')} | {_mean(runs, 'map')} | {_mean(runs, 'recall50', 1.0, 3)} | "
        f"{len(runs)} | {r['params_m']:.2f} | {r['gmacs']:.3f} | {'—' if paper is None else paper} |"
    )


def accuracy_table(out: Path) -> list[str]:
    lines = [
        "| model | mAP50 | mAP50:95 | recall50 | runs | params (M) | GMACs (train size) | paper mAP50 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, paper in (("T-R10s", None), ("T-R18s", None), ("T-R50s", None)):
        lines.append(_acc_row(f"teacher {name}", _runs(out, f"teacher_{name}"), paper))
    lines.append(_acc_row("student, undistilled", _runs(out, "student_undistilled"), 80.8))
    lines.append(
        _acc_row("**MedDet student** (3 teachers, LWFF, AATM, nmODE² head)", _runs(out, "student_meddet"), 85.5)
    )
    lines.append(_acc_row("single-teacher feature-MSE KD (T-R50s)", _runs(out, "student_kd_single_r50"), None))
    return lines


def ablation_table(out: Path, rows: list[tuple[str, str, float]], title: str) -> list[str]:
    lines = [f"| {title} | mAP50 | mAP50:95 | recall50 | runs | paper mAP50 |", "|---|---|---|---|---|---|"]
    for name, label, paper in rows:
        runs = _runs(out, f"student_{name}")
        lines.append(
            f"| {label} | not run | | | | {paper} |"
            if not runs
            else f"| {label} | {_mean(runs, 'map50')} | {_mean(runs, 'map')} | {_mean(runs, 'recall50', 1.0, 3)} | "
            f"{len(runs)} | {paper} |"
        )
    return lines


def speed_table(speed: dict[str, Any]) -> list[str]:
    rows = speed["rows"]
    ref = next(v for k, v in rows.items() if k.startswith("GFL R50"))
    lines = [
        "| model (512x512, random weights) | params (M) | GMACs | CPU latency (ms) | params / R50 | speed-up vs R50 |",
        "|---|---|---|---|---|---|",
    ]
    for k, v in rows.items():
        lines.append(
            f"| {k} | {v['params_m']:.2f} | {v['gmacs']:.2f} | {1000 * v['latency_s']:.0f} | "
            f"{v['params_m'] / ref['params_m']:.3f} | {ref['latency_s'] / v['latency_s']:.2f}x |"
        )
    return lines


def nmode_table(speed: dict[str, Any]) -> list[str]:
    lines = [
        "| nmODE² solver | latency 256 (ms) | ratio to no nmODE² | latency 512 (ms) | ratio |",
        "|---|---|---|---|---|",
    ]
    for k in speed["nmode_256"]:
        a, b = speed["nmode_256"][k], speed["nmode_512"][k]
        lines.append(
            f"| {k} | {1000 * a:.1f} | {a / speed['nmode_256']['none']:.2f}x | {1000 * b:.1f} | "
            f"{b / speed['nmode_512']['none']:.2f}x |"
        )
    return lines


def plots(out: Path, docs: Path, speed: dict[str, Any] | None) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figs = docs / "figures"
    figs.mkdir(parents=True, exist_ok=True)
    made = []
    tag = out.name
    noise = _load(out, "noise")
    if noise:
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for key, label in (("undistilled", "student, undistilled"), ("meddet", "MedDet student")):
            ax.plot(noise["sigma"], [100 * v for v in noise[key]], marker="o", label=label)
        ax.set_xlabel("added Rician noise (sigma / 99th percentile)")
        ax.set_ylabel("mAP50 (%)")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(figs / f"{tag}_noise.png", dpi=120)
        plt.close(fig)
        made.append(f"{tag}_noise.png")
    points = [
        (n, _runs(out, f))
        for n, f in (
            ("T-R10s", "teacher_T-R10s"),
            ("T-R18s", "teacher_T-R18s"),
            ("T-R50s", "teacher_T-R50s"),
            ("undistilled", "student_undistilled"),
            ("MedDet", "student_meddet"),
        )
    ]
    if speed and all(points_r for _, points_r in points):
        rows = speed["rows"]
        lat = {
            "T-R10s": rows["T-R10s (ours)"]["latency_s"],
            "T-R18s": rows["T-R18s (ours)"]["latency_s"],
            "T-R50s": rows["T-R50s (ours)"]["latency_s"],
            "undistilled": rows["our student, no nmODE²"]["latency_s"],
            "MedDet": next(v for k, v in rows.items() if k.startswith("our student + nmODE²"))["latency_s"],
        }
        fig, ax = plt.subplots(figsize=(5, 3.5))
        for name, r in points:
            ap = 100 * statistics.fmean(x["map50"] for x in r)  # type: ignore[union-attr]
            ax.scatter(1000 * lat[name], ap, s=40)
            ax.annotate(name, (1000 * lat[name], ap), textcoords="offset points", xytext=(4, 4))
        ax.set_xscale("log")
        ax.set_xlabel("CPU latency per 512x512 slice (ms, log)")
        ax.set_ylabel("mAP50 (%), synthetic hard set")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(figs / f"{tag}_speed_accuracy.png", dpi=120)
        plt.close(fig)
        made.append(f"{tag}_speed_accuracy.png")
    return made


def write_report(out: Path, docs: Path, speed_dir: Path | None = None) -> Path:
    """Render ``out``/*.json into its block of ``docs/results.md`` and ``docs/figures/``;
    latency comes from ``speed_dir`` (default ``out``)."""
    args = _load(out, "args") or {}
    speed = _load(speed_dir or out, "speed")
    noise = _load(out, "noise")
    figs = plots(out, docs, speed)
    body = [
        "<!-- generated by benchmarks/distill_report.py from the JSON files of benchmarks/distill_experiments.py -->",
        f"### Run `{out.name}`",
        "",
        "Setting: "
        + ", ".join(
            f"{k}={args.get(k)}"
            for k in (
                "size",
                "train_images",
                "test_images",
                "teacher_epochs",
                "student_epochs",
                "batch",
                "ode_steps",
                "seed",
                "threads",
            )
        ),
        "",
        "#### Accuracy (synthetic hard test set; students: mean ± sd over seeds)",
        "",
        *accuracy_table(out),
        "",
    ]
    if any(_runs(out, f"student_{n}") for n, _, _ in ABLATION + PLACEMENT + FUSION if n != "meddet"):
        body += [
            "#### Ablations",
            "",
            *ablation_table(out, ABLATION, "cumulative"),
            "",
            *ablation_table(out, PLACEMENT, "nmODE² placement"),
            "",
            *ablation_table(out, FUSION, "fusion"),
            "",
        ]
    if noise:
        body += [
            "#### Noise robustness (mAP50 %, added Rician noise)",
            "",
            "| sigma | " + " | ".join(str(s) for s in noise["sigma"]) + " |",
            "|---|" + "---|" * len(noise["sigma"]),
        ]
        for key in ("undistilled", "meddet"):
            body.append(f"| {key} | " + " | ".join(_pct(v) for v in noise[key]) + " |")
        body.append("")
    if speed and speed_dir is None:  # a run that borrows another's latency only plots it
        body += [
            f"#### Size and CPU speed at 512x512 ({speed['threads']} threads, median of interleaved rounds)",
            "",
            *speed_table(speed),
            "",
            "#### Cost of nmODE² in the head (same student, same run)",
            "",
            *nmode_table(speed),
            "",
        ]
    body += [f"![{f}](figures/{f})" for f in figs]
    return splice(docs / "results.md", out.name, "\n".join(body) + "\n")


def splice(path: Path, tag: str, text: str) -> Path:
    """Replace the block between ``<!-- distill:TAG:begin/end -->`` in ``path`` (appended
    when absent), so the hand-written commentary around the tables survives a re-run."""
    begin, end = f"<!-- distill:{tag}:begin -->", f"<!-- distill:{tag}:end -->"
    old = path.read_text() if path.is_file() else ""
    block = f"{begin}\n{text}{end}"
    if begin in old and end in old:
        new = old[: old.index(begin)] + block + old[old.index(end) + len(end) :]
    else:
        new = (old.rstrip() + "\n\n" if old else "") + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(new)
    return path


if __name__ == "__main__":
    speed_from = Path(sys.argv[2]) if len(sys.argv) > 2 else None
    print(write_report(Path(sys.argv[1]), Path(__file__).resolve().parents[1] / "docs", speed_from))
