"""Ingest benchmark: our node against dcmtk's storescp, same instances, same run.

    python benchmarks/ingest.py [--instances 500] [--rounds 3] [--associations 4]
                                [--per-association 250] [--series-size 20] [--json]
                                [--baseline DIR]

Makes ``--instances`` synthetic MR instances (256x256, 16 bit, explicit VR LE) and runs
``--rounds`` interleaved rounds of:

- one association (dcmtk ``storescu`` sends all of them) to: dcmtk ``storescp`` writing to a
  fresh temp folder; our node (``Node`` in a subprocess, fresh data dir and SQLite audit DB
  each round, selection hand-off a no-op, so no model runs) with ``MEDDET_DURABILITY=group``
  (the default); the same with ``per-instance``; the same with group commit's flush switched
  off (``none``: what the receive path costs when the flush is free);
- ``--associations`` concurrent associations of ``--per-association`` instances each
  (4 x 250): storescp with ``--fork`` (one process per association) and without, and the
  node in ``group`` mode;
- with ``--baseline DIR`` (another checkout, e.g. ``git worktree add /tmp/base <commit>``),
  that checkout's node too (``group``, one association and concurrent), right after ours in
  each round: before and after a change in one run, with the node's CPU seconds.

It prints the median instances/s of each, the ratio to storescp (one association: storescp;
concurrent: the faster of the two storescp variants), the node's peak RSS while receiving
(target < 300 MB), the cost of one durable write on this disk (temp file, fsync, rename,
fsync of the folder: what ``per-instance`` pays per instance) and the group committer's
flushes. Every dcmtk process gets ``TCP_NODELAY=1`` (without it Nagle's algorithm makes them
crawl and the ratio lies). Targets (issue 14): >= 0.8x storescp in ``group`` mode, one
association and concurrent.

``--serve DIR --durability MODE`` is the node subprocess (internal): it prints its port,
serves until its stdin closes, then prints the instances the audit DB recorded, the lane's
count and the committer's flush statistics as JSON.

Here: the node's rounds, its peak RSS and thread CPU, the durable-write cost, the report. The
instances, the dcmtk sender and storescp rounds are in ``benchmarks/receive_harness.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.receive_harness import ROOT, make_instances, send, serving, storescp_round  # noqa: E402

MODES = ("group", "per-instance", "none")


class RssSampler:
    """Samples a process's resident set size (VmRSS) every 20 ms; keeps the peak."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_kb = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.02):
            try:
                for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        self.peak_kb = max(self.peak_kb, int(line.split()[1]))
            except OSError:
                return

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def node_round(
    files: list[Path], mode: str = "group", associations: int = 1, script: Path = Path(__file__)
) -> tuple[float, float, dict[str, Any]]:
    """Instances/s of our node (``script``'s, for a baseline checkout) receiving ``files``,
    its peak RSS (MB) and its statistics. Refuses a node that ran another checkout's code."""
    tree = script.resolve().parents[1]
    with tempfile.TemporaryDirectory(prefix="bench-node-") as data_dir:
        command = [sys.executable, str(script), "--serve", data_dir, "--durability", mode]
        with serving(command, tree) as (server, port, lines):
            with RssSampler(server.pid) as rss:
                sent = send(port, files, "MEDDET", associations)
            stats = json.loads(lines()[0])
            stats["sender_cpu_s"] = sent.sender_cpu_s
        ran = stats.get("tree")  # a baseline from before 2026-12-01 does not say
        if ran is not None and Path(ran) != tree:
            raise RuntimeError(f"the node of {tree} ran the code of {ran}")
        spooled = len(list(Path(data_dir, "spool").glob("*/*/*.dcm")))
        if spooled != len(files) or stats["recorded"] != len(files):
            raise RuntimeError(f"node spooled {spooled}, recorded {stats['recorded']} of {len(files)}")
    return len(files) / sent.seconds, rss.peak_kb / 1024, stats


def durable_write_ms(folder: Path, size: int = 132_000, n: int = 40) -> float:
    """Median ms of one atomic durable write (temp file, fsync, rename, fsync of the folder)."""
    data, times = os.urandom(size), []
    for i in range(n):
        start = time.perf_counter()
        tmp, final = folder / f"{i}.part", folder / f"{i}.dcm"
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, final)
        fd = os.open(folder, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def serve(data_dir: Path, mode: str) -> None:
    """The node under test: ``Node`` with a no-op selection hand-off (no model runs)."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import func, select

    import dicom_node
    from dicom_node.audit.db import make_engine, make_session_factory
    from dicom_node.audit.models import Instance
    from dicom_node.config import Settings
    from dicom_node.logging import configure_logging
    from dicom_node.node import Node
    from migrations import upgrade

    configure_logging("WARNING")
    durability = "per-instance" if mode == "per-instance" else "group"
    settings = Settings(data_dir=data_dir, port=0, quiet_period=30.0, durability=durability)
    upgrade(settings.effective_database_url)
    factory = make_session_factory(make_engine(settings.effective_database_url))
    node = Node(settings, factory, on_selected=lambda session, series: None)
    if mode == "none" and node.committer is not None:
        node.committer.flush = lambda folder, paths: None  # the receive path without the flush
    node.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    print(node.port, flush=True)
    cpu_start = thread_cpu()
    sys.stdin.read()  # until the parent closes our stdin
    cpu = {name: round(seconds - cpu_start.get(name, 0.0), 3) for name, seconds in thread_cpu().items()}
    node.stop()
    committer = node.committer
    with factory() as session:
        recorded = session.scalar(select(func.count()).select_from(Instance))
    print(
        json.dumps(
            {
                "recorded": recorded,
                "flush_groups": committer.groups if committer else 0,
                "flushed_files": committer.files if committer else 0,
                "slowest_flush_ms": round(1000 * committer.slowest_flush_s, 1) if committer else 0,
                "via_pynetdicom_handler": node.handlers.handler_stores,
                "cpu_s": cpu,
                "tree": str(Path(dicom_node.__file__).resolve().parents[1]),  # whose code ran
            }
        ),
        flush=True,
    )


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of this process's long-lived threads by name, and of the
    association threads (those that came and went: the process total minus the rest)."""
    tick = os.sysconf("SC_CLK_TCK")

    def seconds(stat: str) -> float:
        fields = stat.rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / tick

    names = {t.native_id: t.name for t in threading.enumerate()}
    result: dict[str, float] = {}
    for tid, name in names.items():
        if name.startswith("AcceptorThread") or "run_reactor" in name:
            continue
        try:
            result[name] = seconds(Path(f"/proc/self/task/{tid}/stat").read_text())
        except OSError:
            continue
    total = seconds(Path("/proc/self/stat").read_text())
    result["associations and the rest"] = total - sum(result.values())
    return result


def run(
    instances: int, rounds: int, series_size: int, associations: int, per_association: int, baseline: Path | None = None
) -> dict[str, Any]:
    results: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}  # node CPU seconds per round (group mode)
    base_script = baseline / "benchmarks" / "ingest.py" if baseline is not None else None
    rss: list[float] = []
    flush: list[float] = []
    groups: list[dict[str, Any]] = []
    base_groups: list[dict[str, Any]] = []  # the baseline's, so its threads' CPU is comparable
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder:
        every = make_instances(max(instances, associations * per_association), series_size, Path(folder))
        files, concurrent = every[:instances], every[: associations * per_association]
        send_bytes = sum(f.stat().st_size for f in files)
        for _ in range(rounds):  # interleaved, so drift in machine load hits all alike
            results.setdefault("storescp", []).append(storescp_round(files).rate)
            for mode in MODES:
                rate, peak, stats = node_round(files, mode)
                results.setdefault(f"node {mode}", []).append(rate)
                rss.append(peak)
                if mode == "group":
                    groups.append(stats)
                    cpu.setdefault("node group", []).append(sum(stats["cpu_s"].values()))
                    if base_script is not None:
                        rate, _, stats = node_round(files, mode, script=base_script)
                        results.setdefault("baseline group", []).append(rate)
                        cpu.setdefault("baseline group", []).append(sum(stats["cpu_s"].values()))
                        base_groups.append(stats)
            results.setdefault("storescp concurrent", []).append(storescp_round(concurrent, associations).rate)
            results.setdefault("storescp --fork concurrent", []).append(
                storescp_round(concurrent, associations, fork=True).rate
            )
            rate, peak, stats = node_round(concurrent, "group", associations)
            results.setdefault("node group concurrent", []).append(rate)
            cpu.setdefault("node group concurrent", []).append(sum(stats["cpu_s"].values()))
            rss.append(peak)
            if base_script is not None:
                rate, _, stats = node_round(concurrent, "group", associations, script=base_script)
                results.setdefault("baseline group concurrent", []).append(rate)
                cpu.setdefault("baseline group concurrent", []).append(sum(stats["cpu_s"].values()))
            with tempfile.TemporaryDirectory(prefix="bench-flush-", dir=ROOT) as scratch:
                flush.append(durable_write_ms(Path(scratch)))
    median = {name: statistics.median(values) for name, values in results.items()}
    best_concurrent = max(median["storescp concurrent"], median["storescp --fork concurrent"])
    ratios = {
        name: round(rate / (best_concurrent if "concurrent" in name else median["storescp"]), 3)
        for name, rate in median.items()
    }
    flush_ms = statistics.median(flush)
    return {
        "instances": instances,
        "associations": associations,
        "per_association": per_association,
        "rounds": rounds,
        "mb_per_round": round(send_bytes / 1e6, 1),
        "inst_per_s": {name: round(rate, 1) for name, rate in median.items()},
        "ratio": ratios,
        "rounds_inst_per_s": {name: [round(r, 1) for r in values] for name, values in results.items()},
        "node_peak_rss_mb": round(max(rss), 1),
        "durable_write_ms": round(flush_ms, 2),
        "per_instance_ceiling_inst_per_s": round(1000 / flush_ms, 1),
        "group_commit": groups[len(groups) // 2] if groups else {},
        "baseline_group_commit": base_groups[len(base_groups) // 2] if base_groups else {},
        "node_cpu_s": {name: round(statistics.median(values), 3) for name, values in cpu.items()},
        "load_average": os.getloadavg(),
        "targets": {"ratio": 0.8, "rss_mb": 300},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--associations", type=int, default=4, help="concurrent senders")
    parser.add_argument("--per-association", type=int, default=250, help="instances each")
    parser.add_argument("--series-size", type=int, default=20, help="instances per series")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--baseline", type=Path, help="another checkout whose node runs too (before/after)")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--durability", choices=MODES, default="group", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, args.durability)
        return
    result = run(args.instances, args.rounds, args.series_size, args.associations, args.per_association, args.baseline)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    n, k, m = result["instances"], result["associations"], result["per_association"]
    print(
        f"{n} MR instances 256x256 ({result['mb_per_round']} MB), {result['rounds']} interleaved rounds, "
        f"medians; load average {', '.join(f'{x:.1f}' for x in result['load_average'])}"
    )
    for name, rate in result["inst_per_s"].items():
        where = f"{k} assoc x {m}" if "concurrent" in name else f"1 assoc x {n}"
        print(
            f"  {name:28s} {where:14s} {rate:8.1f} instances/s  ratio {result['ratio'][name]:.3f}  "
            f"{result['rounds_inst_per_s'][name]}"
        )
    print(
        f"  one durable write (fsync file + folder) here: {result['durable_write_ms']:.2f} ms "
        f"(per-instance ceiling {result['per_instance_ceiling_inst_per_s']:.0f}/s)"
    )
    print(f"  group commit (median round): {result['group_commit']}")
    if result["baseline_group_commit"]:
        print(f"  baseline group commit (median round): {result['baseline_group_commit']}")
    print(f"  node CPU seconds per round (median): {result['node_cpu_s']}")
    print(f"  node peak RSS while receiving: {result['node_peak_rss_mb']:.0f} MB  (target < 300)")


if __name__ == "__main__":
    main()
