"""Ingest benchmark: our node against dcmtk's storescp, same instances, same run.

    python benchmarks/ingest.py [--instances 500] [--rounds 5] [--series-size 20] [--json]

Makes ``--instances`` synthetic MR instances (256x256, 16 bit, explicit VR LE), then runs
``--rounds`` interleaved rounds: dcmtk ``storescu`` sends all of them on one association to
(a) dcmtk ``storescp`` writing to a fresh temp folder and (b) our node (``Node`` in a
subprocess, fresh data dir and SQLite DB each round), and (c) the same node with the spool's
fsync off. It prints the median instances/s of each, the ratio node/storescp (target >= 0.8,
DESIGN.md section 6) and the node's peak RSS while receiving (target < 300 MB). Every dcmtk
process gets ``TCP_NODELAY=1`` (without it Nagle's algorithm makes them crawl and the ratio
lies).

storescp never fsyncs; the node fsyncs file and folder before answering success (C-STORE
success means "safely on disk"), and storescu waits for each answer, so the disk's flush
latency is a floor per instance. The benchmark measures that floor in the same run (median
of an atomic durable 130 KB write) and prints the ceiling it implies; (c) shows what the
receive path does when the flush is free (e.g. a disk with a power-loss-protected cache).

``--serve DIR [--no-fsync]`` is the node subprocess (internal): it prints its port, serves
until its stdin closes, then prints the number of instances the audit DB recorded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STORESCP = "/usr/bin/storescp"  # /usr/bin: a pip package shadows storescu on PATH
STORESCU = "/usr/bin/storescu"
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}


def make_instances(n: int, series_size: int, folder: Path) -> list[Path]:
    """``n`` MR instances (256x256) in series of ``series_size``, written as DICOM files."""
    sys.path.insert(0, str(ROOT))
    from tests.factories import make_mr_series, write_series

    files: list[Path] = []
    for start in range(0, n, series_size):
        count = min(series_size, n - start)
        files += write_series(make_mr_series(count, 256, 256, seed=start), folder / f"s{start}")
    return files


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on port {port}")


def send(port: int, files: list[Path], called_ae: str) -> float:
    """Send every file on one association with dcmtk storescu; returns the seconds it took."""
    start = time.perf_counter()
    result = subprocess.run(
        [STORESCU, "-aec", called_ae, "127.0.0.1", str(port), *map(str, files)],
        env=DCMTK_ENV,
        capture_output=True,
        text=True,
    )
    elapsed = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"storescu failed ({result.returncode}): {result.stderr[-1000:]}")
    return elapsed


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

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def storescp_round(files: list[Path]) -> float:
    """Instances/s of dcmtk storescp receiving ``files`` into a fresh folder."""
    with tempfile.TemporaryDirectory(prefix="bench-storescp-") as out:
        port = free_port()
        server = subprocess.Popen(
            [STORESCP, "-od", out, str(port)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(port, server)
            elapsed = send(port, files, "STORESCP")
        finally:
            server.terminate()
            server.wait(10)
        received = len(list(Path(out).iterdir()))
        if received != len(files):
            raise RuntimeError(f"storescp wrote {received} of {len(files)} files")
    return len(files) / elapsed


def node_round(files: list[Path], durable: bool = True) -> tuple[float, float]:
    """Instances/s of our node receiving ``files`` and its peak RSS (MB) while receiving."""
    with tempfile.TemporaryDirectory(prefix="bench-node-") as data_dir:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", data_dir, *([] if durable else ["--no-fsync"])],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert server.stdin is not None and server.stdout is not None
        try:
            port = int(server.stdout.readline())
            wait_listening(port, server)
            with RssSampler(server.pid) as rss:
                elapsed = send(port, files, "MEDDET")
            server.stdin.close()
            recorded = int(server.stdout.readline())
            server.wait(60)
        finally:
            if server.poll() is None:
                server.kill()
        spooled = len(list(Path(data_dir, "spool").glob("*/*/*.dcm")))
        if spooled != len(files) or recorded != len(files):
            raise RuntimeError(f"node spooled {spooled}, recorded {recorded} of {len(files)}")
    return len(files) / elapsed, rss.peak_kb / 1024


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


def serve(data_dir: Path, durable: bool = True) -> None:
    """The node under test: ``Node`` with a no-op selection hand-off (no model runs)."""
    sys.path.insert(0, str(ROOT))
    from sqlalchemy import func, select

    from dicom_node.audit.db import make_engine, make_session_factory
    from dicom_node.audit.models import Instance
    from dicom_node.config import Settings
    from dicom_node.logging import configure_logging
    from dicom_node.node import Node
    from migrations import upgrade

    configure_logging("WARNING")
    settings = Settings(data_dir=data_dir, port=0, quiet_period=30.0)
    upgrade(settings.effective_database_url)
    factory = make_session_factory(make_engine(settings.effective_database_url))
    node = Node(settings, factory, on_selected=lambda session, series: None)
    node.spool.durable = durable
    node.start()
    signal.signal(signal.SIGTERM, lambda *_: sys.stdin.close())
    print(node.port, flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    node.stop()
    with factory() as session:
        print(session.scalar(select(func.count()).select_from(Instance)), flush=True)


def run(instances: int, rounds: int, series_size: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as folder:
        files = make_instances(instances, series_size, Path(folder))
        send_bytes = sum(f.stat().st_size for f in files)
        dcmtk, node, no_fsync, rss, flush = [], [], [], [], []
        for _ in range(rounds):  # interleaved, so drift in machine load hits all alike
            dcmtk.append(storescp_round(files))
            rate, peak = node_round(files)
            node.append(rate)
            rss.append(peak)
            no_fsync.append(node_round(files, durable=False)[0])
            with tempfile.TemporaryDirectory(prefix="bench-flush-") as scratch:
                flush.append(durable_write_ms(Path(scratch)))
    storescp_rate, node_rate = statistics.median(dcmtk), statistics.median(node)
    no_fsync_rate, flush_ms = statistics.median(no_fsync), statistics.median(flush)
    return {
        "instances": instances,
        "rounds": rounds,
        "mb_per_round": round(send_bytes / 1e6, 1),
        "storescp_inst_per_s": round(storescp_rate, 1),
        "node_inst_per_s": round(node_rate, 1),
        "ratio": round(node_rate / storescp_rate, 3),
        "node_peak_rss_mb": round(max(rss), 1),
        "node_no_fsync_inst_per_s": round(no_fsync_rate, 1),
        "ratio_no_fsync": round(no_fsync_rate / storescp_rate, 3),
        "durable_write_ms": round(flush_ms, 2),
        "durable_ceiling_inst_per_s": round(1000 / flush_ms, 1),
        "storescp_rounds": [round(r, 1) for r in dcmtk],
        "node_rounds": [round(r, 1) for r in node],
        "node_no_fsync_rounds": [round(r, 1) for r in no_fsync],
        "targets": {"ratio": 0.8, "rss_mb": 300},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--instances", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--series-size", type=int, default=20, help="instances per series")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--serve", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-fsync", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve is not None:
        serve(args.serve, durable=not args.no_fsync)
        return
    result = run(args.instances, args.rounds, args.series_size)
    if args.json:
        print(json.dumps(result, indent=2))
        return
    print(f"{result['instances']} MR instances 256x256, {result['rounds']} interleaved rounds (medians)")
    print(f"  dcmtk storescp : {result['storescp_inst_per_s']:8.1f} instances/s  {result['storescp_rounds']}")
    print(f"  meddet node    : {result['node_inst_per_s']:8.1f} instances/s  {result['node_rounds']}")
    print(f"  node, no fsync : {result['node_no_fsync_inst_per_s']:8.1f} instances/s  {result['node_no_fsync_rounds']}")
    print(f"  ratio node/storescp: {result['ratio']:.3f}  (target >= 0.8); without fsync {result['ratio_no_fsync']:.3f}")
    print(
        f"  one durable write (fsync file + folder) takes {result['durable_write_ms']:.2f} ms here: "
        f"at most {result['durable_ceiling_inst_per_s']:.0f} instances/s for a sender that waits for each answer"
    )
    print(f"  node peak RSS while receiving: {result['node_peak_rss_mb']:.0f} MB  (target < 300)")


if __name__ == "__main__":
    main()
