"""The fault suite of issue 12 at its CI size: ``python benchmarks/faults.py --small``.

Real ``meddet serve`` / ``meddet worker`` subprocesses, pynetdicom and dcmtk senders, a private
Redis and PostgreSQL stopped mid-run, a full tmpfs, a hypothesis fuzz. Every acknowledged
instance must be analysed, no job stuck, no duplicate at the destination, and no log line may
hold a patient name or ID. Parts the machine cannot do (no root for a tmpfs, no PostgreSQL
binaries) are skipped by the suite with their reason, which the test checks is given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_the_small_fault_suite_loses_nothing_and_logs_no_patient_data(tmp_path: Path) -> None:
    out = tmp_path / "faults.json"
    run = subprocess.run(
        [
            sys.executable,
            str(ROOT / "benchmarks" / "faults.py"),
            "--small",
            "--json",
            str(out),
            "--keep",
            str(tmp_path / "work"),
        ],
        cwd=ROOT,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    rows = {row["phase"]: row for row in result["rows"]}
    total = rows["total"]
    assert total["lost"] == 0 and total["stuck"] == 0 and total["duplicates"] == 0, result["table"]
    assert result["phi"] == {"json": [], "console": []}
    assert result["patients"] > 0 and result["problems"] == []

    soak = rows["soak"]
    assert soak["sent"] == soak["acked"] == soak["recorded"] == soak["analysed"] > 0, result["table"]
    notes = "\n".join(result["notes"])
    assert "SIGTERM" in notes and "SIGKILL at" in notes
    assert "fuzz:" in notes and rows["fuzz"]["lost"] == 0
    logs = result["logs"]
    assert any(".json." in name for name in logs) and any(".console." in name for name in logs)

    skipped = "\n".join(result["skipped"])
    if "full disk" not in skipped:
        assert rows["full disk"]["analysed"] == rows["full disk"]["acked"] > 0
        assert "0 acknowledged" in notes and "partial files left: 0" in notes
    dist = rows["distributed"]
    assert dist["analysed"] == dist["acked"] > 0 and dist["worker_rss_mib"]
    assert "SIGKILLed while running job" in notes and "Redis down" in notes
    assert "PostgreSQL down" in notes or "PostgreSQL outage" in skipped


def test_the_phi_grep_finds_names_and_ids_in_either_log_format(tmp_path: Path) -> None:
    """The suite's PHI count means something only if its grep finds what it looks for."""
    from benchmarks.faultsuite.report import phi_lines

    console, as_json = tmp_path / "node-1.console.log", tmp_path / "node-2.json.log"
    console.write_text("2026-01-01 [info] series complete uid=1.2.3\n[error] bad name QXFAULT ABC0001\n")
    as_json.write_text('{"event": "x", "pid": "qxfabc-0002"}\n{"event": "series complete"}\n')
    found = phi_lines([console, as_json], ["QXFAULT", "QXFABC", "QXFAULT^ABC0001"])
    assert len(found["console"]) == 1 and len(found["json"]) == 1
