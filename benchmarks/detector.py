"""Detector benchmark: params, GMACs and CPU latency per slice of student and teacher configs.

Latency is ``model.predict`` (network + post-processing) on one [1, 1, S, S] slice, at 512x512
(the paper's input) and at each config's default input; the median over interleaved rounds
(every config once per round), so background load hits all configs alike. Ratios are against
the GFL-R50 teacher measured in the same run.

    python benchmarks/detector.py [--rounds 5] [--threads 1] [--json] [--configs student,teacher_r50]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

# This file is named like the ``detector`` package; drop its folder from the import path.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

DEFAULT_CONFIGS = (
    "student",
    "meddet",
    "student_slim96",
    "student_paper",
    "teacher_r50",
    "teacher_r101",
    "teacher_r152",
)
BASELINE = "teacher_r50"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default=",".join(DEFAULT_CONFIGS), help="comma-separated config names")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--no-channels-last", dest="channels_last", action="store_false")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args(argv)

    import torch

    from detector.config import load_config
    from detector.flops import count_macs, count_params
    from detector.models import build_detector

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = [n.strip() for n in args.configs.split(",") if n.strip()]
    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    cases = []  # (name, size, model, input)
    rows: dict[str, dict] = {}
    for name in names:
        cfg = load_config(name)
        model = build_detector(cfg).eval()
        sizes = sorted({512, cfg.preprocess.size})
        rows[name] = {
            "config": name,
            "params_m": count_params(model) / 1e6,
            "gmacs_512": count_macs(model, 512, cfg.backbone.in_channels) / 1e9,
            "default_size": cfg.preprocess.size,
            "gmacs_default": count_macs(model, cfg.preprocess.size, cfg.backbone.in_channels) / 1e9,
        }
        model.to(memory_format=fmt)
        for s in sizes:
            x = torch.rand(1, 1, s, s).contiguous(memory_format=fmt)
            with torch.inference_mode():
                model.predict(x)  # warm-up
            cases.append((name, s, model, x))

    times: dict[tuple[str, int], list[float]] = {(n, s): [] for n, s, _, _ in cases}
    for _ in range(args.rounds):
        for name, s, model, x in cases:
            with torch.inference_mode():
                t0 = time.perf_counter()
                model.predict(x)
                times[(name, s)].append(time.perf_counter() - t0)
    for (name, s), ts in times.items():
        ms = statistics.median(ts) * 1e3
        if s == 512:
            rows[name]["latency_ms_512"] = ms
        if s == rows[name]["default_size"]:
            rows[name]["latency_ms_default"] = ms
    base = rows.get(BASELINE)
    for row in rows.values():
        if base:
            row["params_vs_r50"] = row["params_m"] / base["params_m"]
            row["speedup_vs_r50_512"] = base["latency_ms_512"] / row["latency_ms_512"]
            row["speedup_vs_r50_default"] = base["latency_ms_512"] / row["latency_ms_default"]
    result = {
        "threads": args.threads,
        "rounds": args.rounds,
        "channels_last": args.channels_last,
        "baseline": BASELINE,
        "rows": list(rows.values()),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"CPU, {args.threads} thread(s), median of {args.rounds} interleaved rounds, channels_last={args.channels_last}"
    )
    head = f"{'config':<16}{'params M':>9}{'GMACs@512':>10}{'ms@512':>9}{'x R50':>7}{'input':>7}{'GMACs':>7}{'ms':>8}{'x R50':>7}{'params/R50':>11}"
    print(head)
    for r in rows.values():
        print(
            f"{r['config']:<16}{r['params_m']:>9.2f}{r['gmacs_512']:>10.2f}{r['latency_ms_512']:>9.1f}{r.get('speedup_vs_r50_512', float('nan')):>7.2f}"
            f"{r['default_size']:>7}{r['gmacs_default']:>7.2f}{r['latency_ms_default']:>8.1f}{r.get('speedup_vs_r50_default', float('nan')):>7.2f}"
            f"{r.get('params_vs_r50', float('nan')):>11.3f}"
        )
    print("x R50: GFL-R50 latency at 512x512 divided by this config's latency (same run).")
    return 0


if __name__ == "__main__":
    sys.exit(main())
