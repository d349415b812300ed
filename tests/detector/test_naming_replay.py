"""``benchmarks/naming_replay.py``: naming rules replayed on cached chains, tallied as naming_dev does."""

import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.append(str(ROOT / "benchmarks"))  # last: benchmarks/detector.py must not shadow the package

from naming_replay import EMPTY, chain_truth, error_share, main, replay, tally  # noqa: E402  (tally: naming_dev's)

from detector.levels import LEVELS, Disc  # noqa: E402
from detector.naming import NOT_DISC, name_chain  # noqa: E402
from tests.detector.conftest import chain_log_probs  # noqa: E402


def chain(classes: list[int], truth: list, confidence: float = 0.9, second: list[int] | None = None) -> dict:
    """A cached chain whose position i reads as class ``classes[i]``; ``second``: a second
    ensemble member reading ``second[i]``."""

    def lp(cs: list[int]) -> list:
        return chain_log_probs(cs, confidence).tolist()

    members = [lp(classes), lp(second)] if second else []
    mean = np.log(np.mean([np.exp(m) for m in members], axis=0)).tolist() if second else lp(classes)
    return {"log_probs": mean, "members": members, "truth": truth}


def test_a_right_chain_a_shifted_one_and_an_unnamed_one_are_tallied_as_naming_dev_does() -> None:
    right = chain([NOT_DISC, 0, 1, 2, 3, 4, 5], [EMPTY, *LEVELS])
    # the detector missed C2-C3's box: the net's C2-C3 sits on C3-C4, every name one level high
    shifted = chain([NOT_DISC, 0, 1, 2, 3], [EMPTY, "C3-C4", "C4-C5", "C5-C6", None])
    nothing = {"log_probs": None, "members": [], "truth": []}
    counts = replay([right, shifted, nothing], name_chain)
    assert counts["studies"] == 3 and counts["named"] == 2 and counts["unknown"] == 1
    assert counts["reported"] == 6 + 4 and counts["right"] == 6
    assert counts["wrong"] == 3 and counts["on no disc"] == 1 and counts["shifted chains"] == 1
    assert error_share(counts) == pytest.approx(4 / 10)


def test_a_member_or_a_mix_of_the_ensemble_can_be_replayed_alone() -> None:
    # the first member reads the chain right, the second one level low at every position
    both = chain([NOT_DISC, 0, 1, 2], [EMPTY, *LEVELS[:3]], second=[NOT_DISC, NOT_DISC, 0, 1])
    first = replay([both], name_chain, member="0")
    assert first["right"] == 3 and first["wrong"] == 0
    second = replay([both], name_chain, member="1")
    assert second["wrong"] == 2 and second["shifted chains"] == 1
    assert replay([both], name_chain, member="0.0") == first
    with pytest.raises(ValueError, match="not an ensemble"):
        replay([chain([0, 1], LEVELS[:2])], name_chain, member="1")


def test_a_positions_truth_is_the_most_common_level_under_its_detections() -> None:
    class Study:
        def level_under(self, k: int, box) -> str | None:
            return {0: "C3-C4", 1: "C3-C4", 2: "C4-C5"}.get(k)

    def disc(k: int) -> Disc:
        return Disc(k, np.zeros(2), (0.0, 0.0, 1.0, 1.0), 0.5, 0.5)

    assert chain_truth(Study(), [[disc(0), disc(1), disc(2)], [], [disc(5)]]) == ["C3-C4", EMPTY, None]


def test_tally_counts_only_named_levels() -> None:
    counts: Counter[str] = Counter()
    tally(counts, [("unknown", "C2-C3"), ("C2-C3", "C2-C3"), ("C3-C4", None)])
    assert counts["reported"] == 2 and counts["right"] == 1 and counts["on no disc"] == 1


def test_replay_says_when_nothing_was_cached(tmp_path) -> None:
    with pytest.raises(SystemExit, match="no cached looks"):
        main(["replay", str(tmp_path)])


def test_replay_starts_from_the_cached_models_stored_rule(tmp_path, capsys) -> None:
    import json

    # the anchor position is C2-C3 with probability 0.5: named under the default rule, unknown
    # under a stored rule that asks for 0.9
    p = np.exp(chain_log_probs([0, 1, 2, 3], 0.9))
    p[0, 0], p[0, NOT_DISC] = 0.5, p[0, NOT_DISC] + 0.4
    lp = np.log(p / p.sum(axis=1, keepdims=True)).tolist()
    cached = {"model": "m", "chains": [{"log_probs": lp, "members": [], "truth": list(LEVELS[:4])}]}
    for name, rule in (("default", {}), ("strict", {"naming": {"min_anchor_prob": 0.9}})):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "widen.json").write_text(json.dumps(cached | rule))
        main(["replay", str(folder), "--level-weight", "0.5"])
    default, strict = capsys.readouterr().out.strip().splitlines()[1::2]
    assert "widen 1 / 4 /" in default and "widen 0 / 0 /" in strict
