"""Private services the fault suite may stop and start (never the machine's shared ones), a
small disk to fill, and a peak-RSS sampler for the node and worker processes."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from dicom_node.loopback import free_port


def _pg_bin(tool: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{tool}"))
    return found[-1] if found else shutil.which(tool)


class PrivatePostgres:
    """A throw-away PostgreSQL cluster on a free loopback port (trust auth, fsync off).

    As root it runs as the ``postgres`` user (PostgreSQL refuses root). ``unavailable()`` says
    why it cannot run here, or None.
    """

    def __init__(self) -> None:
        self.port = free_port()
        self.folder: Path | None = None
        self._user: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql+psycopg2://postgres@127.0.0.1:{self.port}/postgres"

    def unavailable(self) -> str | None:
        if not (_pg_bin("initdb") and _pg_bin("pg_ctl")):
            return "initdb/pg_ctl not found"
        if self._user is not None:
            try:
                pwd.getpwnam(self._user)
            except KeyError:
                return "running as root and there is no 'postgres' user to run a private cluster"
        return None

    def _run(self, *args: str, timeout: float = 60) -> None:
        command = list(args)
        if self._user is not None:
            command = ["runuser", "-u", self._user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=timeout)

    def init(self) -> PrivatePostgres:
        self.folder = Path(tempfile.mkdtemp(prefix="meddet-faults-pg-"))
        if self._user is not None:
            entry = pwd.getpwnam(self._user)
            os.chown(self.folder, entry.pw_uid, entry.pw_gid)
        self._run(
            _pg_bin("initdb") or "initdb",
            "-D",
            str(self.folder / "data"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
            "--no-sync",
        )
        return self.start()

    def start(self) -> PrivatePostgres:
        assert self.folder is not None
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._run(
            _pg_bin("pg_ctl") or "pg_ctl",
            "-D",
            str(self.folder / "data"),
            "-l",
            str(self.folder / "server.log"),
            "-o",
            options,
            "-w",
            "start",
        )
        return self

    def stop(self) -> None:
        """Fast shutdown: sessions are cut, as in a crash or failover of the database."""
        if self.folder is not None and (self.folder / "data" / "postmaster.pid").exists():
            self._run(_pg_bin("pg_ctl") or "pg_ctl", "-D", str(self.folder / "data"), "-m", "fast", "-w", "stop")

    def remove(self) -> None:
        try:
            self.stop()
        finally:
            if self.folder is not None:
                shutil.rmtree(self.folder, ignore_errors=True)


class SmallDisk:
    """A tmpfs of ``megabytes`` mounted at ``path`` (needs root and mount rights)."""

    def __init__(self, path: Path, megabytes: int) -> None:
        self.path = path
        self.megabytes = megabytes
        self.mounted = False
        self.filler = path / "filler.bin"

    def unavailable(self) -> str | None:
        if os.geteuid() != 0:
            return "not root: cannot mount a small tmpfs"
        return None

    def mount(self) -> SmallDisk:
        self.path.mkdir(parents=True, exist_ok=True)
        cli = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.megabytes}m,mode=0755", "tmpfs", str(self.path)],
            capture_output=True,
            text=True,
        )
        if cli.returncode != 0:
            raise OSError(f"mount -t tmpfs failed: {cli.stderr.strip()}")
        self.mounted = True
        return self

    def free_bytes(self) -> int:
        stat = os.statvfs(self.path)
        return stat.f_bavail * stat.f_frsize

    def fill(self, leave: int) -> None:
        """Take all free space but ``leave`` bytes (less than one instance)."""
        size = self.free_bytes() - leave
        with open(self.filler, "wb") as handle:
            os.posix_fallocate(handle.fileno(), 0, max(size, 0))

    def free(self) -> None:
        self.filler.unlink(missing_ok=True)

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], capture_output=True)
            self.mounted = False


def _children(pid: int) -> list[int]:
    out = []
    for task in glob.glob(f"/proc/{pid}/task/*/children"):
        try:
            out.extend(int(p) for p in Path(task).read_text().split())
        except OSError:
            continue
    return out


def _peak_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class PeakRSS:
    """Samples the peak RSS (VmHWM) of each process of a role and its children, every 0.2 s.

    A role's figure is its largest single process (a Celery pool process, not the sum).
    """

    def __init__(self) -> None:
        self._roots: dict[str, set[int]] = {}
        self.peak_kib: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss", daemon=True)

    def track(self, role: str, pid: int) -> None:
        with self._lock:
            self._roots.setdefault(role, set()).add(pid)
        self.sample()

    def sample(self) -> None:
        with self._lock:
            roots = {role: set(pids) for role, pids in self._roots.items()}
        for role, pids in roots.items():
            for pid in pids:
                for proc in [pid, *_children(pid)]:
                    peak = _peak_kib(proc)
                    with self._lock:
                        self.peak_kib[role] = max(self.peak_kib.get(role, 0), peak)

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            self.sample()

    def start(self) -> PeakRSS:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def mib(self, role: str) -> float | None:
        kib = self.peak_kib.get(role)
        return None if kib is None else kib / 1024
