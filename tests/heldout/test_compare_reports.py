"""``benchmarks/compare_reports.py``: two models' held-out (or altgen) runs compared, paired by
study and level, with clear refusals for runs that are not of the same studies."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]


def run_file(path: Path, scores: np.ndarray, truth: np.ndarray, seed: int = 7300, model: str = "m") -> Path:
    """A generalization.py-shaped JSON: 20 routine + 20 hard studies, six levels each."""
    levels = ["C2-C3", "C3-C4", "C4-C5", "C5-C6", "C6-C7", "C7-T1"]
    cases = [
        {
            "study": f"{'hard' if i >= 20 else 'routine'} {1000 + i}",
            "hard": i >= 20,
            "level": levels[j],
            "herniated": bool(truth[6 * i + j]),
            "protrusion": 2.0,
            "kind": "protrusion",
            "p_name": float(scores[6 * i + j]),
            "p_pos": float(scores[6 * i + j]),
        }
        for i in range(40)
        for j in range(6)
    ]
    data = {"seed": seed, "routine": 20, "hard": 20, "reports": {"new": {"model_version": model, "cases": cases}}}
    path.write_text(json.dumps(data))
    return path


def compare(*args: Path) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, str(ROOT / "benchmarks" / "compare_reports.py"), *map(str, args), "--rounds", "300"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300)


def test_a_clearly_better_model_is_ahead_and_its_interval_excludes_zero(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    truth = rng.random(240) < 0.3
    a = truth + rng.normal(0, 0.9, 240)
    b = truth * 2.5 + rng.normal(0, 0.9, 240)
    done = compare(
        run_file(tmp_path / "a.json", a, truth, model="A"), run_file(tmp_path / "b.json", b, truth, model="B")
    )
    assert done.returncode == 0, done.stderr
    assert (
        done.stdout.splitlines()[0].startswith("A A (")
        and "seed 7300: 20 routine + 20 hard studies, 240 levels" in done.stdout
    )
    rows = [line for line in done.stdout.splitlines() if " AUC " in line]
    assert len(rows) == 6  # routine, hard, all x by position, by name
    for row in rows:
        lo = float(row.split("95% CI ")[1].split(" to ")[0])
        assert lo > 0 and "ahead in 100%" in row


def test_runs_of_other_studies_or_without_cases_are_refused_clearly(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    truth = rng.random(240) < 0.3
    a = run_file(tmp_path / "a.json", rng.random(240), truth)
    other_truth = run_file(tmp_path / "t.json", rng.random(240), ~truth)
    done = compare(a, other_truth)
    assert done.returncode == 1 and "disagree on the truth" in done.stderr
    fewer = json.loads(a.read_text())
    fewer["reports"]["new"]["cases"] = fewer["reports"]["new"]["cases"][:-6]
    (tmp_path / "f.json").write_text(json.dumps(fewer))
    done = compare(a, tmp_path / "f.json")
    assert done.returncode == 1 and "different studies" in done.stderr
    old = json.loads(a.read_text())
    del old["reports"]["new"]["cases"]
    (tmp_path / "o.json").write_text(json.dumps(old))
    done = compare(a, tmp_path / "o.json")
    assert done.returncode == 1 and "no per-case scores" in done.stderr
    done = compare(a, a, Path("--report"), Path("baseline"))
    assert done.returncode == 1 and "no report 'baseline'" in done.stderr
