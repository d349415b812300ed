"""What the receive benchmarks share: the instances, the dcmtk sender and storescp, receivers.

Used by ``benchmarks/ingest.py``, ``benchmarks/reactor.py`` and ``benchmarks/receive_profile.py``:
synthetic MR instances written as DICOM files (:func:`make_instances`), dcmtk ``storescu``
sending them over one or more concurrent associations (:func:`send`), dcmtk ``storescp``
receiving one round (:func:`storescp_round`), and a receiver subprocess that prints its port
and, when its stdin closes, its statistics (:func:`serving`). Every dcmtk process gets
``TCP_NODELAY=1`` (without it Nagle's algorithm makes them crawl and the ratio lies).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dicom_node.loopback import accepts, free_port, wait_for

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


def wait_listening(port: int, process: subprocess.Popen[Any], timeout: float = 30.0) -> None:
    """Wait until ``process`` accepts connections on ``port``; RuntimeError if it exits first."""

    def up() -> bool:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}")
        return accepts(port, timeout=0.5)

    wait_for(up, timeout, f"a server on port {port}", interval=0.05)


@contextmanager
def serving(
    command: list[str], tree: Path | None = None
) -> Iterator[tuple[subprocess.Popen[str], int, Callable[[], list[str]]]]:
    """A receiver subprocess that prints its port, serves until its stdin closes, then prints
    lines of statistics: yields it, its port, and ``lines()`` (closes its stdin, returns what it
    printed after the port once it has exited). Killed if still running at exit.

    ``tree``: the checkout whose code the subprocess runs (a baseline's): its folder and first on
    ``PYTHONPATH``, so that ``import dicom_node`` finds that checkout's package, not the one
    installed here, whatever order the script imports in."""
    env = None
    if tree is not None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(tree), os.environ.get("PYTHONPATH")]))}
    server = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=tree, env=env)
    assert server.stdin is not None and server.stdout is not None
    stdin, stdout = server.stdin, server.stdout

    def lines() -> list[str]:
        stdin.close()
        printed = stdout.read().splitlines()
        server.wait(60)
        return printed

    try:
        port = int(stdout.readline())
        wait_listening(port, server)
        yield server, port, lines
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(10)


def reap(process: subprocess.Popen[Any]) -> float:
    """Wait for ``process`` to exit (its ``returncode`` set) and return its CPU seconds, user +
    system, its own reaped children included (``wait4``'s rusage)."""
    _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class Sent:
    """One round's sending: seconds until the last sender finished, and the CPU seconds
    (user + system) of all the ``storescu`` processes."""

    seconds: float
    sender_cpu_s: float


def send(port: int, files: list[Path], called_ae: str, associations: int = 1) -> Sent:
    """Send ``files`` with dcmtk storescu, split over ``associations`` concurrent processes
    (one association each)."""
    parts = [files[i::associations] for i in range(associations)]
    start = time.perf_counter()
    senders = [
        subprocess.Popen(
            [STORESCU, "-aec", called_ae, "127.0.0.1", str(port), *map(str, part)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        for part in parts
    ]
    stderr = [p.stderr.read() if p.stderr else "" for p in senders]
    cpu = sum(reap(p) for p in senders)
    elapsed = time.perf_counter() - start
    for process, err in zip(senders, stderr, strict=True):
        if process.returncode != 0:
            raise RuntimeError(f"storescu failed ({process.returncode}): {err[-1000:]}")
    return Sent(elapsed, cpu)


@dataclass(frozen=True)
class StorescpRound:
    """dcmtk storescp receiving one round: instances/s, and the CPU seconds of storescp (its
    ``--fork`` children included) and of the senders."""

    rate: float
    receiver_cpu_s: float
    sender_cpu_s: float


def storescp_round(files: list[Path], associations: int = 1, fork: bool = False) -> StorescpRound:
    """dcmtk storescp receiving ``files`` into a fresh folder."""
    with tempfile.TemporaryDirectory(prefix="bench-storescp-") as out:
        port = free_port()
        server = subprocess.Popen(
            [STORESCP, *(["--fork"] if fork else []), "-od", out, str(port)],
            env=DCMTK_ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_listening(port, server)
            sent = send(port, files, "STORESCP", associations)
        finally:
            server.terminate()
            receiver_cpu = reap(server)
        received = len(list(Path(out).iterdir()))
        if received != len(files):
            raise RuntimeError(f"storescp wrote {received} of {len(files)} files")
    return StorescpRound(len(files) / sent.seconds, receiver_cpu, sent.sender_cpu_s)
