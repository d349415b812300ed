"""A receive benchmark's ``--baseline`` must run the baseline checkout's code, not this one's.

Until 2026-12-01 ``benchmarks/ingest.py`` imported ``dicom_node`` (the package installed here)
before putting the baseline's folder on ``sys.path``, so its "before" node ran this tree's
code. ``receive_harness.serving(command, tree)`` now puts the checkout first on
``PYTHONPATH`` whatever the script imports first, and the node says whose code it ran.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

import dicom_node
from benchmarks.ingest import node_round
from benchmarks.receive_harness import ROOT, make_instances, serving

EARLY_IMPORT = """\
import socket
import sys

import dicom_node  # first thing, before any sys.path change, as the old ingest.py did

server = socket.socket()
server.bind(("127.0.0.1", 0))
server.listen()
print(server.getsockname()[1], flush=True)
sys.stdin.read()
print(dicom_node.__file__, flush=True)
"""


def _which_package(script: Path, tree: Path | None) -> Path:
    with serving([sys.executable, str(script)], tree) as (_, _, lines):
        return Path(lines()[0]).resolve()


def test_a_script_that_imports_first_still_runs_its_own_checkouts_package(tmp_path) -> None:
    (tmp_path / "dicom_node").mkdir()
    (tmp_path / "dicom_node" / "__init__.py").write_text('"""the baseline\'s package"""\n')
    (tmp_path / "benchmarks").mkdir()
    script = tmp_path / "benchmarks" / "server.py"
    script.write_text(EARLY_IMPORT)
    installed = Path(dicom_node.__file__).resolve()
    assert _which_package(script, None) == installed  # what the old harness did: the wrong tree
    assert _which_package(script, tmp_path) == (tmp_path / "dicom_node" / "__init__.py").resolve()


@pytest.mark.skipif(not shutil.which("storescu"), reason="dcmtk is not installed")
def test_a_baseline_node_reports_and_runs_its_own_tree(tmp_path) -> None:
    baseline = tmp_path / "baseline"
    for part in ("dicom_node", "migrations", "benchmarks"):
        shutil.copytree(ROOT / part, baseline / part, ignore=shutil.ignore_patterns("__pycache__"))
    files = make_instances(4, 4, tmp_path / "in")
    rate, _, stats = node_round(files, script=baseline / "benchmarks" / "ingest.py")
    assert rate > 0 and stats["recorded"] == 4
    assert Path(stats["tree"]) == baseline.resolve()
    _, _, here = node_round(files)
    assert Path(here["tree"]) == ROOT
