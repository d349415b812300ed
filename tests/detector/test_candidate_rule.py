"""``benchmarks/candidate_rule.py``: the development rule a candidate model must pass (issue 11)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from candidate_rule import checks  # noqa: E402


def look(named: int, reported: int, wrong: int, no_disc: int) -> dict:
    run = {"named": named, "reported": reported, "wrong": wrong, "seed": 9700, "studies": 100}
    return run | ({"on no disc": no_disc} if no_disc else {})


def own(hard_auc: float, sens: tuple[int, int], normal_auc: float = 1.0) -> dict:
    return {"hard": {"after": {"auc": hard_auc, "sensitivity": list(sens)}}, "normal": {"after": {"auc": normal_auc}}}


def model(named: int = 80, errors: int = 5, hard_auc: float = 0.88, sens: tuple[int, int] = (49, 66)) -> dict:
    return {name: look(named, 500, errors, 0) for name in ("widen", "bones", "random")} | {"own": own(hard_auc, sens)}


def failed(shipped: dict, candidate: dict) -> list[str]:
    return [c.what for c in checks(shipped, candidate) if not c.passed]


def test_an_equal_model_passes_and_each_margin_holds() -> None:
    shipped = model()
    assert failed(shipped, model()) == []
    assert failed(shipped, model(errors=14)) == []  # 0.028 error share against 0.010: within 0.02
    assert failed(shipped, model(errors=16)) == ["widen: error share", "bones: error share", "random: error share"]
    assert failed(shipped, model(named=79)) == ["widen: studies named", "bones: studies named", "random: studies named"]
    assert failed(shipped, model(hard_auc=0.8695)) == ["own hard: AUC"]
    assert failed(shipped, model(sens=(43, 66))) == ["own hard: sensitivity"]  # 0.652 < 0.742 - 0.08
    assert failed(shipped, model(sens=(44, 66))) == []  # 0.667


def test_the_command_refuses_runs_on_other_studies(tmp_path: Path) -> None:
    for name, m in (("shipped", model()), ("candidate", model())):
        (tmp_path / name).mkdir()
        for part, data in m.items():
            if name == "candidate" and part == "bones":
                data = data | {"seed": 9400}
            (tmp_path / name / f"{part}.json").write_text(json.dumps(data))
    cmd = [sys.executable, str(ROOT / "benchmarks" / "candidate_rule.py")]
    done = subprocess.run(
        [*cmd, "--shipped", str(tmp_path / "shipped"), "--candidate", str(tmp_path / "candidate")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "different seeds" in done.stderr


def test_a_candidate_with_more_shifted_chains_fails_that_look() -> None:
    shipped, candidate = model(), model()
    shipped["random"]["shifted chains"] = 2
    candidate["random"]["shifted chains"] = 4  # J1's random look: it passed everything else
    assert failed(shipped, candidate) == ["random: shifted chains"]
    candidate["random"]["shifted chains"] = 2
    candidate["widen"]["shifted chains"] = 0  # a run without the key has none
    assert failed(shipped, candidate) == []
