"""The loopback toolkit: the node's real parts run on one machine, talking over 127.0.0.1.

One home for what ``meddet demo``, the tests and the benchmarks share: a free port, a wait
with a deadline, a test PACS (a Storage SCP that keeps what it receives) and ``meddet``
subprocesses (``meddet serve`` up once it listens). Nothing here binds anything but loopback,
and nothing runs at import.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from pydicom import Dataset, dcmread

T = TypeVar("T")

LOOPBACK = "127.0.0.1"
PACS_AE = "DEMOPACS"
#: ``meddet`` as this interpreter runs it (no console script needed on PATH).
MEDDET = (sys.executable, "-c", "from dicom_node.cli import main; main()")


def free_port() -> int:
    """A TCP port nothing listens on at the moment (the OS's pick on loopback)."""
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def accepts(port: int, timeout: float = 1.0) -> bool:
    """True when something accepts TCP connections on ``port`` of loopback."""
    try:
        socket.create_connection((LOOPBACK, port), timeout=timeout).close()
    except OSError:
        return False
    return True


def wait_for(
    probe: Callable[[], T | None],
    timeout: float = 15.0,
    what: str | Callable[[], str] = "condition",
    interval: float = 0.1,
) -> T:
    """Poll ``probe`` until it returns something truthy, and return that.

    After ``timeout`` s: TimeoutError naming ``what`` (a callable ``what`` is called then, e.g.
    to show a server's log at the time of failure).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what() if callable(what) else what}")
        time.sleep(interval)


class TestPACS:
    """A Storage SCP (and Verification SCP) on loopback that keeps every object it receives,
    duplicates too: filed under ``folder`` when given, else in memory."""

    __test__ = False  # not a pytest class

    def __init__(self, folder: Path | None = None, ae_title: str = PACS_AE, port: int | None = None) -> None:
        self.folder = folder
        self.ae_title = ae_title
        self.port = port or free_port()  # known before start: a destination that is down
        self._server: Any = None
        self._lock = threading.Lock()
        self._received: list[Dataset | Path] = []

    @property
    def destination(self) -> str:
        """The node's ``MEDDET_DESTINATIONS`` value for this PACS."""
        return f"{self.ae_title}@{LOOPBACK}:{self.port}"

    def start(self) -> TestPACS:
        from pynetdicom import AE, AllStoragePresentationContexts, VerificationPresentationContexts, evt

        if self.folder is not None:
            self.folder.mkdir(parents=True, exist_ok=True)
        ae = AE(ae_title=self.ae_title)
        for context in [*AllStoragePresentationContexts, *VerificationPresentationContexts]:
            if context.abstract_syntax is not None:
                ae.add_supported_context(context.abstract_syntax)
        self._server = ae.start_server(
            (LOOPBACK, self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._on_store)]
        )
        return self

    def _on_store(self, event: Any) -> int:
        kept: Dataset | Path
        if self.folder is None:
            dataset: Dataset = event.dataset
            dataset.file_meta = event.file_meta
            kept = dataset
        else:
            kept = self.folder / f"{event.request.AffectedSOPInstanceUID}.dcm"
            kept.write_bytes(event.encoded_dataset())
        with self._lock:
            self._received.append(kept)
        return 0x0000  # Success

    def received(self) -> list[Dataset]:
        """Every object received so far, in order of arrival."""
        with self._lock:
            kept = list(self._received)
        return [dcmread(item) if isinstance(item, Path) else item for item in kept]

    def uids(self) -> list[str]:
        """The SOP Instance UIDs received, in order of arrival (a duplicate appears twice)."""
        return [str(ds.SOPInstanceUID) for ds in self.received()]

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None


class MeddetProcess:
    """``meddet ARGS`` as a subprocess in its own process group, its output in ``log``.

    With ``ready``, up once its log shows that text. ``command`` replaces ``meddet`` (e.g. a
    script that patches the CLI first).
    """

    def __init__(
        self,
        args: Sequence[str],
        env: dict[str, str],
        log: Path,
        ready: str | None = None,
        timeout: float = 90.0,
        *,
        command: Sequence[str] = MEDDET,
        cwd: Path | None = None,
    ) -> None:
        self.args = list(args)
        self.log = log
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, *args],
                env=env,
                cwd=cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        if ready is not None:
            self.wait_ready(ready, timeout)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def tail(self, lines: int = 30) -> str:
        """The last ``lines`` lines of the log."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    def _running(self) -> None:
        if not self.alive():
            raise RuntimeError(f"meddet {' '.join(self.args)} exited ({self.process.returncode}):\n{self.tail()}")

    def wait_ready(self, text: str, timeout: float = 90.0) -> None:
        """Until the log shows ``text``; RuntimeError with the log's tail if the process ends."""

        def ready() -> bool:
            self._running()
            return text in self.log.read_text(errors="replace")

        wait_for(ready, timeout, lambda: f"meddet {' '.join(self.args)}: {text!r}\n{self.tail()}")

    def wait_listening(self, port: int, timeout: float = 120.0, says: str | None = "listening on") -> None:
        """Until the log ``says`` so (a node: that it listens) and ``port`` accepts connections."""

        def ready() -> bool:
            self._running()
            return (says is None or says in self.log.read_text(errors="replace")) and accepts(port)

        wait_for(ready, timeout, lambda: f"meddet {' '.join(self.args)} on port {port}\n{self.tail()}", interval=0.2)

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM to the group (a node drains, a worker finishes its job), SIGKILL after
        ``timeout`` s; the exit status."""
        if self.alive():
            self._signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

    def kill(self) -> None:
        """SIGKILL to the whole group: no cleanup of any kind."""
        if self.alive():
            self._signal(signal.SIGKILL)
            self.process.wait(10)

    def _signal(self, signum: int) -> None:
        try:
            os.killpg(self.process.pid, signum)
        except ProcessLookupError:  # ended meanwhile
            pass


class NodeProcess(MeddetProcess):
    """``meddet serve``; :meth:`wait_listening` says when it takes associations."""

    def __init__(self, env: dict[str, str], log: Path, *, cwd: Path | None = None) -> None:
        super().__init__(["serve"], env, log, cwd=cwd)


def node_environment(
    base: dict[str, str],
    data_dir: Path,
    port: int,
    destination: str,
    quiet_period: float,
    checkpoint: Path | None = None,
    device: str = "cpu",
) -> dict[str, str]:
    """A loopback node's environment: ``base`` without its MEDDET_ settings, then embedded
    mode (SQLite and spool under ``data_dir``), ``port`` on loopback, one destination."""
    env = {k: v for k, v in base.items() if not k.startswith("MEDDET_")}
    env.update(
        MEDDET_DATA_DIR=str(data_dir),
        MEDDET_HOST=LOOPBACK,
        MEDDET_PORT=str(port),
        MEDDET_QUIET_PERIOD=str(quiet_period),
        MEDDET_DESTINATIONS=destination,
        MEDDET_DEVICE=device,
        MEDDET_SEND_RETRIES="2",
    )
    if checkpoint is not None:
        env["MEDDET_CHECKPOINT"] = str(checkpoint)
    return env
