"""``meddet serve`` and ``meddet worker`` subprocesses that the suite restarts and kills.

Each start gets its own log file, named ``<role>-<n>.<json|console>.log``; the format alternates
between starts so both renderers are grepped for patient data.
"""

from __future__ import annotations

import os
from pathlib import Path

from benchmarks.faultsuite.services import PeakRSS
from dicom_node.loopback import MeddetProcess, free_port, node_environment
from tests.worker.support import start_worker


def suite_env(destination: str, checkpoint: Path, data_dir: Path, database_url: str, **extra: str) -> dict[str, str]:
    """A node's (or worker's) environment: the demo's (loopback, CPU, 2 send retries) with its
    own port, data dir and audit DB, one torch thread and no web console."""
    env = node_environment(
        dict(os.environ), data_dir, free_port(), destination, quiet_period=15.0, checkpoint=checkpoint, device="cpu"
    )
    env.update(MEDDET_DATABASE_URL=database_url, MEDDET_CONSOLE_PORT="0", OMP_NUM_THREADS="1", **extra)
    return env


class Restartable:
    """A ``meddet`` command that can be stopped (SIGTERM), killed (SIGKILL) and started again."""

    def __init__(self, role: str, env: dict[str, str], logs: Path, rss: PeakRSS, json_first: bool) -> None:
        self.role = role
        self.env = env
        self.logs = logs
        self.rss = rss
        self.starts = 0
        self.json_first = json_first
        self.log_files: list[Path] = []
        self.process: MeddetProcess | None = None

    def _launch(self, env: dict[str, str], log: Path) -> MeddetProcess:
        raise NotImplementedError

    def start(self) -> Restartable:
        self.starts += 1
        as_json = (self.starts % 2 == 1) == self.json_first
        log = self.logs / f"{self.role}-{self.starts}.{'json' if as_json else 'console'}.log"
        self.log_files.append(log)
        env = {**self.env, "MEDDET_LOG_JSON": "true" if as_json else "false"}
        self.process = self._launch(env, log)
        self.rss.track(self.role, self.process.pid)
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.alive()

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM to the process group (a node drains, a worker finishes its job)."""
        if self.process is not None:
            self.rss.sample()
            self.process.stop(timeout)

    def kill(self) -> None:
        """SIGKILL to the whole process group: no cleanup of any kind."""
        if self.process is not None and self.alive():
            self.rss.sample()
            self.process.kill()

    def tail(self, lines: int = 40) -> str:
        if not self.log_files:
            return ""
        return "\n".join(self.log_files[-1].read_text(errors="replace").splitlines()[-lines:])


class ServeProcess(Restartable):
    """``meddet serve``; up once it says it listens."""

    def _launch(self, env: dict[str, str], log: Path) -> MeddetProcess:
        return MeddetProcess(["serve"], env, log, ready="listening on")

    @property
    def port(self) -> int:
        return int(self.env["MEDDET_PORT"])


class WorkerProcess(Restartable):
    """``meddet worker`` (one pool process, fast retries), as the worker tests start it."""

    def _launch(self, env: dict[str, str], log: Path) -> MeddetProcess:
        return start_worker(env, log)
