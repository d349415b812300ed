"""The README's quick start, command by command, so it cannot rot."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dicom_node.loopback import NodeProcess, free_port
from tests.conftest import dcmtk

pytestmark = [pytest.mark.integration, pytest.mark.slow]

README = Path(__file__).resolve().parents[2] / "README.md"


def quick_start_commands() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Quick start") : text.index("## What it does")]
    return [line.split("  #")[0].strip() for line in section.splitlines() if line.startswith("    ")]


def expand(word: str, cwd: Path) -> list[str]:
    """A shell glob, as bash would expand it in ``cwd``."""
    if "*" not in word:
        return [word]
    return sorted(str(p.relative_to(cwd)) for p in cwd.glob(word)) or [word]


def test_quick_start_commands_run_as_written(tmp_path: Path) -> None:
    commands = quick_start_commands()
    assert commands[0].startswith("meddet synth") and commands[-1].startswith("cat ")
    port = free_port()
    env = dict(os.environ, MEDDET_PORT=str(port), MEDDET_QUIET_PERIOD="3", TCP_NODELAY="1")
    env.pop("MEDDET_DATA_DIR", None)
    meddet = [sys.executable, "-m", "dicom_node.cli"]
    node = NodeProcess(env, tmp_path / "serve.log", cwd=tmp_path)

    def run(command: str) -> subprocess.CompletedProcess[str]:
        # Only what differs on a test machine: our port, Debian's storescu, this Python.
        command = command.replace("11112", str(port)).replace("storescu ", f"{dcmtk('storescu')} ", 1)
        words = [w for part in shlex.split(command) for w in expand(part, tmp_path)]
        if words[0] == "meddet":
            words = [*meddet, *words[1:]]
        return subprocess.run(words, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    try:
        node.wait_listening(port, timeout=60)
        outputs = []
        for command in commands:
            if command.startswith("meddet audit series"):  # the README's "about 35 s later"
                jobs: list = []
                deadline = time.monotonic() + 240
                while not (jobs and jobs[0]["state"] in ("done", "failed")) and time.monotonic() < deadline:
                    time.sleep(1)
                    jobs = json.loads(run("meddet audit jobs --json").stdout or "[]")
                assert jobs and jobs[0]["state"] == "done", jobs
            result = run(command)
            assert result.returncode == 0, f"{command}: {result.stderr[-2000:]}"
            outputs.append(result.stdout)
        assert "selected" in outputs[2] and "done" in outputs[3]
        findings = json.loads(outputs[-1])
        assert {f["level"] for f in findings["findings"]} <= {"C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1"}
        assert findings["findings"] and re.match(r"^[0-9.]+$", findings["series_instance_uid"])
    finally:
        node.stop(timeout=60)
