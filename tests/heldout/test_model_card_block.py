"""``benchmarks/generalization.py --model-card``: the checkpoint's metadata states its own
held-out run (a small run of the real benchmark, two studies), and its per-case scores
feed ``benchmarks/compare_reports.py``."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

from detector import ANALYSIS_RULES, SHIPPED_CHECKPOINT, model_version

ROOT = Path(__file__).resolve().parents[2]


def run(card: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "generalization.py"), "--routine", "1", "--hard", "1"]
    return subprocess.run([*cmd, "--model-card", str(card), *extra], capture_output=True, text=True, timeout=600)


def test_the_held_out_summary_goes_into_the_models_own_metadata(tmp_path: Path) -> None:
    card = tmp_path / "meddet-student.json"
    shutil.copy(SHIPPED_CHECKPOINT.with_suffix(".json"), card)
    before = json.loads(card.read_text())
    scores = tmp_path / "run.json"
    done = run(card, "--seed", "7101", "--json", str(scores))
    assert done.returncode == 0, done.stderr
    after = json.loads(card.read_text())
    block = after["metrics"]["heldout"]
    assert block["command"] == f"python benchmarks/generalization.py --routine 1 --hard 1 --seed 7101 --json {scores}"
    assert block["model_version"] == model_version() == f"{after['version']}+r{ANALYSIS_RULES}"
    for group in ("routine", "hard"):
        g = block[group]
        assert g["named_right"] <= g["reported"] and g["unknown_findings"] >= 0
        assert 0.0 <= g["by_position"]["specificity"] <= 1.0
        assert g["by_position"]["auc_ci95"] is None or len(g["by_position"]["auc_ci95"]) == 2
    # the run's per-case scores compare with themselves: no difference, every group present
    compare = [sys.executable, str(ROOT / "benchmarks" / "compare_reports.py"), str(scores), str(scores)]
    same = subprocess.run(compare, capture_output=True, text=True, timeout=300)
    assert same.returncode == 0, same.stderr
    assert "seed 7101: 1 routine + 1 hard studies" in same.stdout
    for line in same.stdout.splitlines()[3:]:
        assert "one class only" in line or "+0.000 (95% CI +0.000 to +0.000; ahead in 0%)" in line
    # nothing else in the metadata moves
    del after["metrics"]["heldout"], before["metrics"]["heldout"]
    assert after == before


def test_a_metadata_file_of_another_model_is_refused(tmp_path: Path) -> None:
    card = tmp_path / "other.json"
    card.write_text(json.dumps({"version": "meddet-student-000000000000", "metrics": {}}))
    done = run(card)
    assert done.returncode == 2 and "describes meddet-student-000000000000+r" in done.stderr
    assert "study" not in done.stdout  # refused before scoring anything
    assert json.loads(card.read_text()) == {"version": "meddet-student-000000000000", "metrics": {}}
    altgen = run(card, "--generator", "altgen")
    assert altgen.returncode == 2 and "--model-card" in altgen.stderr
