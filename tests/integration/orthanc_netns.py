"""A real Orthanc (Debian package) for tests, in a private network namespace holding only loopback.

Orthanc binds every interface; inside a fresh namespace that is one loopback nothing else on the
machine can reach, and its fixed ports (8042, 4242) are free. Everything that talks to it (the
node, dcmtk, REST calls) runs inside the same namespace through :meth:`NetNamespace.command`.
Needs root (``ip netns add``); :func:`unavailable_reason` says why not when it cannot run, and
:func:`namespace_or_skip` skips a test then. :func:`route_synthetic_study` runs the hospital
loop's first half (study uploaded to Orthanc, routed to ``meddet serve``, analysed).
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dicom_node.demo import JobResults, find_results
from dicom_node.loopback import MEDDET, node_environment, wait_for

REPO = Path(__file__).resolve().parents[2]
ORTHANC_DIR = REPO / "deploy" / "orthanc"
ORTHANC_BIN = "/usr/sbin/Orthanc"
DEBIAN_PLUGINS = "/usr/share/orthanc/plugins"
NODE_PORT = 11112  # the node's port in the namespace: Orthanc's modality MEDDET

# Runs inside the namespace: one REST call (body from stdin) or one POST per file given.
_CLIENT = r"""
import sys, urllib.request
method, url, token, *files = sys.argv[1:]
def call(body):
    request = urllib.request.Request(url, data=body, method=method, headers={"Authorization": "Basic " + token})
    with urllib.request.urlopen(request, timeout=60) as response:
        return response.read()
if files:
    for path in files:
        with open(path, "rb") as f:
            call(f.read())
else:
    sys.stdout.buffer.write(call(sys.stdin.buffer.read() if method in ("POST", "PUT") else None))
"""


def unavailable_reason() -> str | None:
    """None when Orthanc can run in a namespace here, else why not (for pytest.skip)."""
    if not Path(ORTHANC_BIN).exists():
        return "Orthanc not installed (Debian packages orthanc, orthanc-dicomweb)"
    if shutil.which("ip") is None:
        return "`ip` not installed (Debian package iproute2)"
    if os.geteuid() != 0:
        return "network namespaces need root (`ip netns add`)"
    return None


@contextmanager
def namespace_or_skip() -> Iterator[NetNamespace]:
    """A :class:`NetNamespace`, closed afterwards; the test is skipped where none can be made."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)
    ns = NetNamespace()
    try:
        yield ns
    finally:
        ns.close()


class NetNamespace:
    """A network namespace with only loopback; ``close()`` ends what ran in it and deletes it."""

    def __init__(self) -> None:
        self.name = f"meddet-{secrets.token_hex(4)}"
        subprocess.run(["ip", "netns", "add", self.name], check=True, capture_output=True)
        self._processes: list[subprocess.Popen] = []
        self.run(["ip", "link", "set", "lo", "up"], check=True)

    def command(self, argv: Iterable[str]) -> list[str]:
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: Iterable[str], **kwargs: Any) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 120)
        return subprocess.run(self.command(argv), **kwargs)

    def popen(self, argv: Iterable[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a process in the namespace, output to ``log``; it is ended by ``close()``."""
        with log.open("ab") as out:
            process = subprocess.Popen(
                self.command(argv), stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        self._processes.append(process)
        return process

    def close(self) -> None:
        for process in reversed(self._processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
        # Anything left in the namespace was started by us (its children): end it by pid.
        pids = subprocess.run(["ip", "netns", "pids", self.name], capture_output=True, text=True).stdout
        for pid in pids.split():
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        subprocess.run(["ip", "netns", "del", self.name], capture_output=True)


class Orthanc:
    """Orthanc started from ``deploy/orthanc/orthanc.json`` (the file users get), with test storage.

    The node is the modality MEDDET at ``node_port`` on the namespace's loopback.
    """

    def __init__(
        self,
        ns: NetNamespace,
        workdir: Path,
        node_port: int = NODE_PORT,
        node_aet: str = "MEDDET",
        stable_age: int = 2,
    ) -> None:
        self.ns = ns
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.password = secrets.token_hex(8)
        config = json.loads((ORTHANC_DIR / "orthanc.json").read_text())
        self.http_port, self.dicom_port, self.aet = config["HttpPort"], config["DicomPort"], config["DicomAet"]
        config.update(
            StorageDirectory=str(workdir / "db"),
            IndexDirectory=str(workdir / "db"),
            StableAge=stable_age,
            LuaScripts=[str(ORTHANC_DIR / script) for script in config["LuaScripts"]],
            Plugins=[DEBIAN_PLUGINS],
        )
        self.config_path = workdir / "orthanc.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log = workdir / "orthanc.log"
        self.env = {
            **os.environ,
            "MEDDET_NODE_HOST": "127.0.0.1",
            "MEDDET_NODE_PORT": str(node_port),
            "MEDDET_NODE_AET": node_aet,
            "ORTHANC_ADMIN_PASSWORD": self.password,
        }
        self._token = base64.b64encode(f"admin:{self.password}".encode()).decode()

    def start(self, timeout: float = 30.0) -> Orthanc:
        process = self.ns.popen([ORTHANC_BIN, str(self.config_path)], self.log, env=self.env)

        def ready() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({process.returncode}):\n{self.log.read_text()[-3000:]}")
            return self._call("GET", "/system", check=False).returncode == 0

        wait_for(ready, timeout, "Orthanc's REST API")
        return self

    @property
    def destination(self) -> str:
        """The node's MEDDET_DESTINATIONS value for this Orthanc."""
        return f"{self.aet}@127.0.0.1:{self.dicom_port}"

    @property
    def authorization(self) -> str:
        """The HTTP Authorization header value of Orthanc's admin user."""
        return f"Basic {self._token}"

    def echo(self, modality: str = "MEDDET") -> bool:
        """Orthanc's C-ECHO to ``modality`` (the node) succeeds."""
        return self._call("POST", f"/modalities/{modality}/echo", b"{}", check=False).returncode == 0

    def _call(
        self, method: str, path: str, body: bytes = b"", files: Iterable[Path] = (), check: bool = True
    ) -> subprocess.CompletedProcess:
        url = f"http://127.0.0.1:{self.http_port}{path}"
        argv = [sys.executable, "-c", _CLIENT, method, url, self._token, *map(str, files)]
        return self.ns.run(argv, input=body, check=check)

    def get(self, path: str) -> Any:
        """GET a JSON resource of the REST API."""
        return json.loads(self._call("GET", path).stdout)

    def get_bytes(self, path: str) -> bytes:
        return self._call("GET", path).stdout

    def post(self, path: str, body: bytes | str) -> Any:
        output = self._call("POST", path, body.encode() if isinstance(body, str) else body).stdout
        return json.loads(output) if output.strip() else None

    def upload(self, files: Iterable[Path]) -> None:
        """Store DICOM files through REST (POST /instances), as a user's upload would."""
        self._call("POST", "/instances", files=sorted(files))

    def series_of_study(self, study_uid: str) -> list[dict]:
        """The study's series (expanded), [] while Orthanc does not hold the study."""
        found = self.post("/tools/lookup", study_uid)
        studies = [item["ID"] for item in found if item["Type"] == "Study"]
        return self.get(f"/studies/{studies[0]}/series?expand") if studies else []

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass(frozen=True)
class Routed:
    """A synthetic study uploaded to Orthanc, routed by its Lua rule to the node and analysed."""

    orthanc: Orthanc
    study: dict[str, Any]  # the study's entry in meddet synth's index.json
    results: JobResults  # what the node wrote for the series
    node_log: Path
    uploaded_at: float  # time.monotonic() at the upload


def route_synthetic_study(
    ns: NetNamespace,
    tmp: Path,
    seed: int,
    *,
    stable_age: int,
    quiet_period: float,
    objects: Sequence[str] = (),
) -> Routed:
    """``meddet synth`` one study (``seed``), then Orthanc and ``meddet serve`` (shipped checkpoint,
    CPU; Orthanc its one destination, asking for ``objects`` when given) in ``ns``; upload the
    study through REST and wait for the node's results of the series."""
    subprocess.run(
        [*MEDDET, "synth", "--out", str(tmp / "study"), "--studies", "1", "--seed", str(seed)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    [study] = json.loads((tmp / "study" / "index.json").read_text())["studies"]
    files = sorted((tmp / "study" / study["dicom_dir"]).glob("*.dcm"))
    orthanc = Orthanc(ns, tmp / "orthanc", stable_age=stable_age).start()
    destination = orthanc.destination + (f"?objects={'+'.join(objects)}" if objects else "")
    env = node_environment(dict(os.environ), tmp / "node", NODE_PORT, destination, quiet_period)
    env |= {"MEDDET_ALLOWED_AES": "ORTHANC", "OMP_NUM_THREADS": "1"}  # as docs/admin-guide.md tells a site
    node_log = tmp / "node.log"
    ns.popen([*MEDDET, "serve"], node_log, env=env)
    wait_for(orthanc.echo, 120, lambda: f"the node answering Orthanc's C-ECHO\n{node_log.read_text()}")
    uploaded_at = time.monotonic()
    orthanc.upload(files)  # routed to the node by deploy/orthanc's Lua rule
    results = wait_for(
        lambda: find_results(tmp / "node", study["series_instance_uid"]),
        240,
        lambda: f"the node's results\n{node_log.read_text()[-4000:]}",
    )
    return Routed(orthanc, study, results, node_log, uploaded_at)
