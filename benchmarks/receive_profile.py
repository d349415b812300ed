"""Where one C-STORE's time goes: sender, receiver, and the node's receive path by part.

    python benchmarks/receive_profile.py [--instances 1000] [--rounds 3] [--associations 1] [--json]

Same instances and sender as benchmarks/ingest.py (dcmtk ``storescu``, TCP_NODELAY=1),
interleaved rounds of dcmtk ``storescp`` (``--fork`` with several associations) and our node
(``group`` durability, no model). Per instance, medians over the rounds:

- the round trip (1 / instances/s) and the CPU of the senders and of the receiver (storescp:
  the process and its children; the node: each thread, from /proc);
- on the node's association threads, their CPU split over the parts of the receive path, by
  thread-CPU clocks (kernel time included) around the functions that do each part, taken
  apart where they nest (reading a PDU holds the lane's work, ``Intake.finish`` holds the
  close, the header scan and the spool move);
- with one association (one instance in flight at a time), what is neither the sender's CPU
  nor the association thread's: the round trip minus both, i.e. time the next instance waits
  on something else (a busy core, the GIL, the kernel's own threads, the loopback wake-ups).

The accumulators cost a few microseconds per part per instance (two clock reads each), so
the profiled node is a little slower than ``ingest.py``'s; ``ingest.py`` gives the rates.
``--serve DIR`` is the node subprocess (internal).
"""

from __future__ import annotations

import argparse
import functools
import importlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.ingest import serve  # noqa: E402
from benchmarks.receive_harness import make_instances, send, serving, storescp_round  # noqa: E402

#: label -> (module, class or None, function) timed in the node subprocess, inclusive.
TIMED: dict[str, tuple[str, str | None, str]] = {
    "read": ("dicom_node.fastlane", "LaneDUL", "_read_pdu_data"),
    "feed": ("dicom_node.fastlane", "StoreLane", "feed"),
    "open": ("dicom_node.intake", "DataSetSink", "__init__"),
    "finish": ("dicom_node.intake", "Intake", "finish"),
    "close": ("dicom_node.intake", "DataSetSink", "close"),
    "writev": ("dicom_node.intake", None, "_write_all"),
    "scan": ("dicom_node.intake", None, "scan_header"),
    "place": ("dicom_node.spool", "Spool", "place"),
    "respond": ("dicom_node.fastlane", "StoreLane", "_respond"),
}

#: The association thread's parts, exclusive: label -> (what it is, timed + nested - subtracted).
PARTS: dict[str, tuple[str, list[str], list[str]]] = {
    "socket reads, PDU framing": ("reading P-DATA-TF PDUs from the socket", ["read"], ["feed"]),
    "lane": ("the lane's Python: PDV items, the command set, the file meta", ["feed"], ["open", "finish", "respond"]),
    "temp file create": ("os.open(O_CREAT) of the temp file", ["open"], []),
    "data set write": ("writev of file meta + fragments into the page cache", ["writev"], []),
    "temp file close": ("closing the file descriptor", ["close"], ["writev"]),
    "header scan": ("the routing elements from the first bytes", ["scan"], []),
    "spool move": ("Spool.place: stat, rename into the series folder", ["place"], []),
    "event hand-off": (
        "the rest of Intake.finish: checks, the event to the committer",
        ["finish"],
        ["close", "scan", "place"],
    ),
    "C-STORE-RSP": ("encoding the response, socket send", ["respond"], []),
}


class Timers:
    """Accumulates thread-CPU nanoseconds per label."""

    def __init__(self) -> None:
        self.cpu: dict[str, int] = dict.fromkeys(TIMED, 0)

    def wrap(self, label: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        cpu = self.cpu

        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            start = time.thread_time_ns()
            try:
                return fn(*args, **kwargs)
            finally:
                cpu[label] += time.thread_time_ns() - start

        return timed

    def install(self) -> None:
        """Replace each function of :data:`TIMED` with its timed wrapper (this process only)."""
        for label, (module_name, owner_name, name) in TIMED.items():
            module = importlib.import_module(module_name)
            owner = getattr(module, owner_name) if owner_name else module
            setattr(owner, name, self.wrap(label, getattr(owner, name)))

    def parts_s(self) -> dict[str, float]:
        """CPU seconds of each exclusive part of :data:`PARTS`."""
        return {
            part: (sum(self.cpu[t] for t in plus) - sum(self.cpu[t] for t in minus)) / 1e9
            for part, (_, plus, minus) in PARTS.items()
        }


def profile_serve(data_dir: Path) -> None:
    """The node subprocess: ``ingest.py``'s node with :class:`Timers` installed; prints the
    parts' CPU seconds as one more JSON line after ingest's statistics."""
    timers = Timers()
    timers.install()
    serve(data_dir, "group")
    print(json.dumps({"parts_s": timers.parts_s()}), flush=True)


def node_round(files: list[Path], associations: int) -> dict[str, Any]:
    """One profiled round of our node: rate, senders' CPU, node threads' CPU, parts."""
    with tempfile.TemporaryDirectory(prefix="bench-profile-") as data_dir:
        with serving([sys.executable, __file__, "--serve", data_dir]) as (_, port, lines):
            sent = send(port, files, "MEDDET", associations)
            stats, parts = (json.loads(line) for line in lines())
    if stats["recorded"] != len(files):
        raise RuntimeError(f"node recorded {stats['recorded']} of {len(files)}")
    return {"rate": len(files) / sent.seconds, "sender_cpu_s": sent.sender_cpu_s, **stats, **parts}


def run(instances: int, rounds: int, associations: int) -> dict[str, Any]:
    """Interleaved rounds; microseconds per instance (median over rounds) for each side."""
    sides: dict[str, list[dict[str, float]]] = {"storescp": [], "node": []}
    rates: dict[str, list[float]] = {"storescp": [], "node": []}
    with tempfile.TemporaryDirectory(prefix="bench-profile-in-") as folder:
        files = make_instances(instances, 20, Path(folder))
        for _ in range(rounds):
            scp = storescp_round(files, associations, fork=associations > 1)
            rates["storescp"].append(scp.rate)
            sides["storescp"].append(
                {
                    "round trip (1 / rate)": 1 / scp.rate,
                    "senders' CPU": scp.sender_cpu_s / instances,
                    "receiver's CPU": scp.receiver_cpu_s / instances,
                }
            )
            got = node_round(files, associations)
            rates["node"].append(got["rate"])
            threads = {name: s / instances for name, s in got["cpu_s"].items() if name != "MainThread"}
            lanes = threads.pop("associations and the rest")
            parts = {f"  {part}": s / instances for part, s in got["parts_s"].items()}
            sides["node"].append(
                {
                    "round trip (1 / rate)": 1 / got["rate"],
                    "senders' CPU": got["sender_cpu_s"] / instances,
                    "receiver's CPU": lanes + sum(threads.values()),
                    "association threads": lanes,
                }
                | parts
                | {"  reactor loop and the rest": lanes - sum(parts.values())}
                | threads
            )
    us = {
        side: {key: round(statistics.median(r[key] for r in values) * 1e6, 1) for key in values[0]}
        for side, values in sides.items()
    }
    if associations == 1:  # one instance at a time: what is neither side's CPU is waiting
        for side in us.values():
            on_path = side.get("association threads", side["receiver's CPU"])
            side["neither sender's nor association's CPU"] = round(
                side["round trip (1 / rate)"] - side["senders' CPU"] - on_path, 1
            )
    return {
        "instances": instances,
        "associations": associations,
        "rounds": rounds,
        "inst_per_s": {name: round(statistics.median(values), 1) for name, values in rates.items()},
        "rounds_inst_per_s": {name: [round(v, 1) for v in values] for name, values in rates.items()},
        "us_per_instance": us,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--associations", type=int, default=1, help="concurrent senders, instances split over them")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        profile_serve(args.serve)
        return
    result = run(args.instances, args.rounds, args.associations)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    rates = result["inst_per_s"]
    print(
        f"{args.instances} MR instances 256x256 over {args.associations} association(s), {args.rounds} interleaved "
        f"rounds, medians: storescp {rates['storescp']:.0f}/s, node (profiled) {rates['node']:.0f}/s "
        f"({rates['node'] / rates['storescp']:.2f}x)"
    )
    us = result["us_per_instance"]
    print(f"  {'microseconds per instance':44s} {'storescp':>9s} {'node':>9s}")
    for key, value in us["node"].items():
        theirs = us["storescp"].get(key)
        print(f"  {key:44s} {'' if theirs is None else f'{theirs:9.1f}':>9s} {value:9.1f}")
    print("  parts of the association threads:")
    for part, (what, _, _) in PARTS.items():
        print(f"    {part:24s} {what}")


if __name__ == "__main__":
    main()
