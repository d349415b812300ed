"""Metrics and the scoring protocol, on known values and on a generated study."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from detector.heldout import DISC_LEVELS, REPORTED_LEVELS, make_study
from detector.heldout.metrics import (
    Rate,
    at_threshold,
    auc_interval,
    best_sensitivity_at_specificity,
    paired_auc_difference,
    reliability_bins,
    roc_auc,
    sensitivity,
    specificity,
    wilson_interval,
)
from detector.heldout.protocol import UNNAMED_BECAUSE, Report, check_targets, score_study
from detector.heldout.report_text import format_calibration, format_report


def test_wilson_interval_known_values() -> None:
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(50, 50)
    assert hi == 1.0 and lo == pytest.approx(0.9287, abs=1e-3)
    assert all(math.isnan(v) for v in wilson_interval(0, 0))
    with pytest.raises(ValueError):
        wilson_interval(3, 2)
    # the interval holds k/n to the bit (rounding put 6/6's upper end at 0.9999999999999999,
    # and the calibration plot's error bar below the point failed to draw)
    for n in range(1, 80):
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert lo <= k / n <= hi


def test_roc_auc_known_values() -> None:
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([0.9, 0.8, 0.1], [1, 1, 0]) == 1.0
    assert roc_auc([0.1, 0.2, 0.9], [1, 1, 0]) == 0.0
    assert roc_auc([0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1]) == pytest.approx(0.5)  # ties count half
    assert roc_auc([0.3, 0.5, 0.5, 0.7], [0, 0, 1, 1]) == pytest.approx(0.875)
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))


def _scored_studies(n_studies: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Six discs a study, a third herniated, scores that separate them imperfectly."""
    rng = np.random.default_rng(seed)
    studies = np.repeat(np.arange(n_studies), 6)
    y = rng.random(len(studies)) < 1 / 3
    return y + rng.normal(0, 0.7, len(y)), y, studies


def test_auc_interval_holds_the_auc_and_narrows_with_more_studies() -> None:
    s, y, st = _scored_studies(25, 1)
    lo, hi = auc_interval(s, y, st, rounds=500)
    assert lo < roc_auc(s, y) < hi and 0.05 < hi - lo < 0.4
    s4, y4, st4 = _scored_studies(400, 1)
    lo4, hi4 = auc_interval(s4, y4, st4, rounds=500)
    assert hi4 - lo4 < (hi - lo) / 2.5  # ~1/sqrt(16) as wide
    assert auc_interval(y.astype(float), y, st, rounds=50) == (1.0, 1.0)
    assert all(math.isnan(v) for v in auc_interval(s, np.zeros_like(y), st))


def test_auc_interval_resamples_whole_studies() -> None:
    # every study's discs are one copy of the same six cases: as many cases, but one study's worth
    # of independent evidence per study, so resampling studies (not discs) changes nothing
    s, y, _ = _scored_studies(1, 2)
    copies = 30
    lo, hi = auc_interval(np.tile(s, copies), np.tile(y, copies), np.repeat(np.arange(copies), 6), rounds=200)
    assert lo == hi == pytest.approx(roc_auc(s, y))


def test_paired_auc_difference_of_a_model_with_itself_and_with_a_better_one() -> None:
    s, y, st = _scored_studies(25, 3)
    same = paired_auc_difference(s, s, y, st, rounds=300)
    assert same.delta == 0.0 and same.ci95 == (0.0, 0.0) and same.b_ahead == 0.0
    better = paired_auc_difference(s, s + 1.5 * y, y, st, rounds=300)
    assert better.delta > 0 and better.ci95[0] > 0 and better.b_ahead > 0.97
    assert "ahead in" in str(better)
    # B's own noise: a difference the studies cannot tell from none has an interval around 0
    rng = np.random.default_rng(4)
    noisy = paired_auc_difference(s, s + rng.normal(0, 0.3, len(s)), y, st, rounds=300)
    assert noisy.ci95[0] < 0 < noisy.ci95[1]
    with pytest.raises(ValueError, match="scores for"):
        paired_auc_difference(s, s[:-1], y, st)
    with pytest.raises(ValueError, match="both classes"):
        paired_auc_difference(s, s, np.ones_like(y), st)


def test_rates_at_threshold() -> None:
    scores, labels = [0.9, 0.6, 0.4, 0.2, 0.7], [1, 1, 1, 0, 0]
    se, sp = at_threshold(scores, labels, 0.5)
    assert (se.k, se.n, sp.k, sp.n) == (2, 3, 1, 2)
    assert sensitivity([True, False], [True, True]) == Rate(1, 2)
    assert specificity([True, False], [False, False]) == Rate(1, 2)
    assert Rate(8, 10).ci == pytest.approx(wilson_interval(8, 10))
    best, thr = best_sensitivity_at_specificity(scores, labels, 0.5)
    assert best == 1.0 and thr == pytest.approx(0.4)  # one of two negatives (0.7) called
    best, thr = best_sensitivity_at_specificity(scores, labels, 0.6)
    assert best == pytest.approx(1 / 3) and thr == pytest.approx(0.9)


def test_reliability_bins_counts_means_empty_bins_and_the_top_edge() -> None:
    p = [0.0, 0.125, 0.25, 0.375, 0.5, 0.75, 1.0, 1.0]
    y = [False, False, True, False, True, True, True, False]
    bins = reliability_bins(p, y, [0.0, 0.25, 0.5, 0.625, 0.75, 1.0])
    assert [(b.lo, b.hi) for b in bins] == [(0.0, 0.25), (0.25, 0.5), (0.5, 0.625), (0.625, 0.75), (0.75, 1.0)]
    assert [b.n for b in bins] == [2, 2, 1, 0, 3]  # 0.25 opens its bin; 1.0 sits in the last one
    assert [b.positives for b in bins] == [0, 1, 1, 0, 2]
    assert [b.mean_predicted for b in bins if b.n] == [0.0625, 0.3125, 0.5, 2.75 / 3]
    assert [b.observed.value for b in bins if b.n] == [0.0, 0.5, 1.0, 2 / 3]
    empty = bins[3]
    assert math.isnan(empty.mean_predicted) and math.isnan(empty.observed.value)
    assert empty.to_dict() == {
        "lo": 0.625,
        "hi": 0.75,
        "n": 0,
        "positives": 0,
        "mean_predicted": None,
        "observed": None,
    }
    assert bins[4].observed == Rate(2, 3)
    top = reliability_bins(np.array([1.0, 1.0]), np.array([1, 0]), np.linspace(0, 1, 6))
    assert [b.n for b in top] == [0, 0, 0, 0, 2] and top[-1].mean_predicted == 1.0
    none = reliability_bins([], [], [0.0, 0.5, 1.0])
    assert [(b.lo, b.hi, b.n, b.positives) for b in none] == [(0.0, 0.5, 0, 0), (0.5, 1.0, 0, 0)]
    assert all(math.isnan(b.mean_predicted) for b in none)


@pytest.mark.parametrize(
    ("p", "y", "edges"),
    [
        ([0.5, 1.01], [0, 1], [0.0, 0.5, 1.0]),  # above the top edge
        ([-0.1], [0], [0.0, 1.0]),  # below the bottom edge
        ([math.nan], [0], [0.0, 1.0]),
        ([0.5, 0.6], [1], [0.0, 1.0]),  # one label short
        ([0.5], [1], [0.0, 0.5, 0.5, 1.0]),  # edges not increasing
        ([0.5], [1], [0.0]),
    ],
)
def test_reliability_bins_rejects_bad_input(p, y, edges) -> None:
    with pytest.raises(ValueError):
        reliability_bins(p, y, edges)


@pytest.fixture(scope="module")
def study():
    seed = next(
        s for s in range(60) if sum(d.herniated for d in make_study(s, False, matrix=64).discs if d.reported) >= 1
    )
    return make_study(seed, False, matrix=128)


def _perfect(study, shift: int = 0, drop: str | None = None) -> list[dict]:
    out = []
    for d in study.discs:
        if not d.reported or d.level == drop:
            continue
        k = (
            max(d.protrusion_by_slice, key=d.protrusion_by_slice.get)
            if d.herniated
            else sorted(d.boxes)[len(d.boxes) // 2]
        )
        out.append(
            {
                "level": DISC_LEVELS[DISC_LEVELS.index(d.level) + shift],
                "probability": 0.95 if d.herniated else 0.05,
                "called": d.herniated,
                "slice_index": k,
                "box": d.boxes[k],
            }
        )
    return out


def test_perfect_findings_score_perfectly(study) -> None:
    g = Report([score_study(study, _perfect(study))]).group("all")
    assert g["naming"]["accuracy"].value == 1.0 and g["naming"]["accuracy"].n == 6
    assert g["naming"]["shifted_studies"] == 0 and g["naming"]["off_disc"] == 0 and g["naming"]["unknown"] == 0
    for view in ("by_name", "by_position"):
        assert g[view]["sensitivity"].value == 1.0 and g[view]["specificity"].value == 1.0
        n_pos = sum(d.herniated for d in study.discs if d.reported)
        assert g[view]["sensitivity"].n == n_pos and g[view]["specificity"].n == 6 - n_pos
        assert g[view]["auc"] == 1.0 or (n_pos == 6 and math.isnan(g[view]["auc"]))


@dataclass
class Obj:
    level: str
    probability: float
    called: bool
    slice_index: int
    box: tuple


def test_chain_shifted_by_one_is_counted(study) -> None:
    shifted = [Obj(**f) for f in _perfect(study, shift=1)]  # objects, not dicts
    r = score_study(study, shifted)
    assert r.shifted
    g = Report([r]).group("all")
    assert g["naming"]["accuracy"].k == 0 and g["naming"]["shifted_studies"] == 1
    # by position the calls still land on the right discs
    assert g["by_position"]["sensitivity"].value == 1.0 and g["by_position"]["specificity"].value == 1.0
    # by name "C7-T1" now points at T1-T2's box: a naming error, not an unreported level
    assert g["naming"]["accuracy"].n == 6


def test_missing_level_counts_as_not_called(study) -> None:
    level = next(d.level for d in study.discs if d.reported and d.herniated)
    r = score_study(study, _perfect(study, drop=level))
    case = next(c for c in r.cases if c["level"] == level)
    assert case["herniated"] and case["p_name"] == 0.0 and not case["c_name"]
    g = Report([r]).group("all")
    n_pos = sum(d.herniated for d in study.discs if d.reported)
    assert g["by_name"]["sensitivity"].k == n_pos - 1
    assert g["by_name"]["per_level"][level]["sensitivity"].value == 0.0


def test_sensitivity_by_size_in_both_views_an_unknown_level_found_by_position_only(study) -> None:
    level = next(d.level for d in study.discs if d.reported and d.herniated)
    fs = [dict(f, level="unknown") if f["level"] == level else f for f in _perfect(study)]
    g = Report([score_study(study, fs)]).group("all")
    n_pos = sum(d.herniated for d in study.discs if d.reported and d.protrusion_mm >= 1.5)
    by_name, by_pos = g["by_name"]["sensitivity_by_size"], g["by_position"]["sensitivity_by_size"]
    assert list(by_name) == list(by_pos) == ["1.5-2.5mm", "2.5-4mm", ">=4mm"]
    assert sum(r.k for r in by_pos.values()) == sum(r.n for r in by_pos.values()) == n_pos
    assert sum(r.k for r in by_name.values()) == n_pos - 1  # its name is unknown: a miss by name
    assert "by position, sensitivity by protrusion size" in format_report(Report([score_study(study, fs)]))


def test_unknown_and_off_disc_findings(study) -> None:
    fs = _perfect(study)
    fs[0] = dict(fs[0], level="unknown")
    fs.append({"level": "C3-C4", "probability": 0.9, "called": True, "slice_index": 0, "box": (1.0, 1.0, 5.0, 5.0)})
    g = Report([score_study(study, fs)]).group("all")
    assert g["naming"]["unknown"] == 1 and g["naming"]["off_disc"] == 1
    assert g["naming"]["accuracy"].n == 6 and g["naming"]["accuracy"].k == 5


def test_unnamed_studies_are_counted_by_the_cause_their_findings_carry(study) -> None:
    from detector.naming import UNNAMED_CAUSES

    assert UNNAMED_BECAUSE == (*UNNAMED_CAUSES, "other")  # the report's vocabulary is the analysis'
    margin = [dict(f, level="unknown", reason="inconsistent chain", cause="margin") for f in _perfect(study)]
    silent = [dict(f, level="unknown") for f in _perfect(study)]  # a finding that carries no cause
    report = Report([score_study(study, margin), score_study(study, silent), score_study(study, _perfect(study))])
    unnamed = report.group("all")["naming"]["unnamed_studies"]
    assert unnamed == {"no_disc": 0, "no_anchor": 0, "margin": 1, "veto": 0, "other": 1}
    assert "margin 1, other 1" in format_report(report).split("unnamed studies, why")[1].splitlines()[0]
    with pytest.raises(ValueError, match="unknown cause 'typo'"):
        score_study(study, [dict(margin[0], cause="typo")])


def test_report_formats_and_serialises(study) -> None:
    report = Report([score_study(study, _perfect(study))])
    text = format_report(report)
    assert "naming" in text and "C5-C6" in text and "routine" in text
    d = report.to_dict()
    assert d["groups"]["routine"]["naming"]["accuracy"]["value"] == 1.0
    assert set(REPORTED_LEVELS) == set(d["groups"]["all"]["by_name"]["per_level"])
    # every reported level's truth and scores, for paired comparisons of two models
    assert [(c["study"], c["level"]) for c in d["cases"]] == [
        (f"{'hard' if study.hard else 'routine'} {study.seed}", c["level"]) for c in report.results[0].cases
    ]
    assert {"herniated", "p_pos", "p_name", "hard", "protrusion", "kind"} <= set(d["cases"][0])
    by_pos = d["groups"]["all"]["by_position"]
    if by_pos["auc"] is not None:  # both classes in this study: the AUC has its interval
        assert by_pos["auc_ci95"][0] <= by_pos["auc"] <= by_pos["auc_ci95"][1]
        assert "[" in text.split("ROC AUC [study bootstrap]")[1].splitlines()[0]
    names = {(t.name, t.group) for t in check_targets(report)}
    assert ("naming", "all") in names and ("auc", "routine") in names
    assert not any(group == "hard" for _, group in names)  # no hard studies: no hard targets
    assert np.isfinite(d["groups"]["routine"]["by_name"]["sensitivity"]["ci95"][0])


def test_meddet_evaluate_heldout_json() -> None:
    import json

    import torch
    from typer.testing import CliRunner

    import dicom_node.cli.ml  # noqa: F401  (registers the commands)
    from dicom_node.cli import app

    torch.set_num_threads(1)
    done = CliRunner().invoke(
        app, ["evaluate", "--data", "heldout:routine", "--images", "1", "--seed", "3", "--device", "cpu", "--json"]
    )
    assert done.exit_code == 0, done.output
    out = json.loads(done.stdout)
    assert out["data"] == "heldout:routine" and out["studies_per_kind"] == 1
    routine = out["groups"]["routine"]
    assert routine["studies"] == 1 and out["groups"]["hard"]["studies"] == 0
    assert routine["by_name"]["specificity"]["n"] + routine["by_name"]["sensitivity"]["n"] == 6
    assert {t["group"] for t in out["targets"]} == {"all", "routine"}
    bad = CliRunner().invoke(app, ["evaluate", "--data", "heldout:easy", "--images", "1"])
    assert bad.exit_code == 2


def test_calibration_by_position_ignores_names(study) -> None:
    n_pos = sum(d.herniated for d in study.discs if d.reported)
    for shift in (0, 1):  # a shifted chain changes no probability by position
        report = Report([score_study(study, _perfect(study, shift=shift))])
        p, y = report.by_position("all")
        assert len(p) == len(y) == 6 and int(y.sum()) == n_pos
        assert np.array_equal(p, np.where(y, 0.95, 0.05))
        bins = report.calibration("routine")
        assert [b.n for b in bins] == [6 - n_pos, 0, 0, 0, n_pos]
        assert [b.positives for b in bins] == [0, 0, 0, 0, n_pos]
        assert bins[0].mean_predicted == pytest.approx(0.05) and bins[-1].mean_predicted == pytest.approx(0.95)
        assert [b.n for b in report.calibration("hard")] == [0] * 5  # no hard studies: empty bins
    text = format_calibration(report)
    assert "[0.80, 1.00]" in text and "[0.00, 0.20)" in text and "hard" not in text


def test_specificity_is_split_by_the_confounders_of_normal_discs(study) -> None:
    from dataclasses import replace

    normals = [d for d in study.discs if d.reported and not d.herniated]
    spurred = replace(
        study, discs=tuple(replace(d, confounders=("osteophyte",)) if d is normals[0] else d for d in study.discs)
    )
    findings = _perfect(spurred)
    for f in findings:  # the spurred normal disc is called: a false call on an osteophyte
        if f["level"] == normals[0].level:
            f.update(probability=0.9, called=True)
    report = Report([score_study(spurred, findings)])
    split = report.group("all")["by_position"]["specificity_by_confounder"]
    assert (split["osteophyte"].k, split["osteophyte"].n) == (0, 1)
    rest = [d for d in normals[1:] if not d.confounders]
    assert (split["none"].k, split["none"].n) == (len(rest), len(rest))
    assert "osteophyte" in format_report(report) and "confounder" in format_report(report)
