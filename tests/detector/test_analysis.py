"""The shipped analysis (detector + second stage + operating point) on our own generator, and
``meddet calibrate`` writing a checkpoint that the analysis then uses.

These studies come from ``detector.data`` with seeds no training, calibration or model choice
used (training 5150, calibration 880000); the held-out generator's numbers are in the model
card and ``benchmarks/generalization.py``, not here.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from detector import SHIPPED_CHECKPOINT, analysis_version, checkpoint
from detector.analysis import UNKNOWN, Analyzer, DiscFinding
from detector.data.synthetic import make_study
from detector.discs.calibration import Calibration
from detector.discs.model import CROP_ANCHOR, KEY_FRACTION, DiscModels
from detector.levels import LEVELS
from detector.naming import NamingRule


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    torch.set_num_threads(1)
    return Analyzer.from_checkpoint(None, device="cpu")


def test_the_shipped_checkpoint_holds_a_calibrated_second_stage(analyzer: Analyzer) -> None:
    cal = analyzer.calibration
    assert cal.method == "platt" and cal.target_sensitivity == 0.9
    assert 0 < cal.threshold < 1 and cal.n_positive > 20 and cal.n_negative > 20
    assert "synthetic" in cal.data
    meta = json.loads(SHIPPED_CHECKPOINT.with_suffix(".json").read_text())
    assert analysis_version(meta["version"]) == analyzer.version


def test_levels_are_named_from_the_anchor_and_calls_follow_the_truth(analyzer: Analyzer) -> None:
    named = right = 0
    probs, truth = [], []
    for i in range(6):
        study = make_study(np.random.default_rng([9300, i]), hard=bool(i % 2), n_slices=11)
        result = analyzer.analyze(list(study.volume), (study.pixel_spacing, study.pixel_spacing))
        assert result.naming.status == "found", result.naming.reason
        for f in result.findings:
            assert f.level in LEVELS
            named += 1
            right += study.level_under(f.slice_index, f.box) == f.level
            probs.append(f.probability)
            truth.append(f.level in study.herniated_levels)
            assert f.called == (f.probability >= analyzer.calibration.threshold)
    assert named >= 30 and right / named >= 0.95
    probs_, truth_ = np.array(probs), np.array(truth)
    assert truth_.any() and (~truth_).any()
    assert probs_[truth_].mean() > probs_[~truth_].mean() + 0.3


def test_a_series_without_its_top_discs_gets_unknown_levels_with_a_reason(analyzer: Analyzer) -> None:
    """Cut away everything above C4: no C2 anchor, so no level names, but the discs are reported."""
    study = make_study(np.random.default_rng([9400, 0]), n_slices=9, size=288)
    c4_top = min(b[1] for bs, lv in zip(study.boxes, study.levels) for b, name in zip(bs, lv) if name == "C4-C5")
    cut = int(c4_top) - 25
    volume = [im[cut:] for im in study.volume]
    result = analyzer.analyze(volume, (study.pixel_spacing, study.pixel_spacing))
    assert result.naming.status == "unknown" and "anchor" in (result.naming.reason or "")
    assert result.findings and all(f.level == UNKNOWN and f.reason for f in result.findings)
    assert result.naming.cause == "no_anchor" and {f.cause for f in result.findings} == {"no_anchor"}


def nudged_single_net(net: str = "level") -> tuple[dict, str]:
    """A second stage (payload) whose ``net`` ("level" or "herniation") is one net: the
    shipped one's first, a bias nudged so that it differs (to a value half precision holds, as
    a checkpoint stores its weights); and that bias's key."""
    from dataclasses import replace

    models = DiscModels.from_payload(checkpoint.load(SHIPPED_CHECKPOINT)["discs"])
    one = {"level": models.level_members, "herniation": models.herniation_members}[net]()[0]
    payload = replace(models, **{net: one}).to_payload(half=False)
    key = next(k for k in payload[net] if k.endswith("bias"))
    payload[net][key] = (payload[net][key] + 0.01).half().float()
    return payload, key


def test_calibrate_writes_an_operating_point_that_predict_uses(tmp_path) -> None:
    import dicom_node.cli.calibrate  # noqa: F401  (registers the command)
    from dicom_node.cli import app

    out = tmp_path / "calibrated.pt"
    level, key = nudged_single_net()  # --level: another level net goes in
    torch.save(level, tmp_path / "level.pt")
    source = tmp_path / "source.pt"  # the shipped checkpoint, its metadata with a held-out run
    shutil.copy(SHIPPED_CHECKPOINT, source)
    shipped_meta = json.loads(SHIPPED_CHECKPOINT.with_suffix(".json").read_text())
    shipped_meta["metrics"]["heldout"] = {"command": "python benchmarks/generalization.py"}
    source.with_suffix(".json").write_text(json.dumps(shipped_meta))
    run = CliRunner().invoke(
        app,
        [
            "calibrate",
            "--checkpoint",
            str(source),
            "--out",
            str(out),
            "--studies",
            "8",
            "--seed",
            "123",
            "--target-sensitivity",
            "0.8",
            "--threads",
            "1",
            "--level",
            str(tmp_path / "level.pt"),
        ],
    )
    assert run.exit_code == 0, run.output
    payload = checkpoint.load(out)
    torch.testing.assert_close(payload["discs"]["level"][key].float(), level["level"][key].float())
    cal = Calibration.from_dict(payload["discs"]["calibration"])
    assert cal.target_sensitivity == 0.8 and "seed 123" in cal.data and cal.sensitivity >= 0.8
    assert payload["version"] != checkpoint.load(SHIPPED_CHECKPOINT)["version"]
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["version"] == payload["version"]
    assert "heldout" not in meta["metrics"]  # the source's run judged another version: run it again
    assert meta["metrics"]["hard_set"] == shipped_meta["metrics"]["hard_set"]  # the same detector's figures
    assert payload["discs"]["naming"] == NamingRule().to_dict()  # the rules it was fitted under
    assert payload["discs"]["key_fraction"] == KEY_FRACTION
    assert payload["discs"]["crop_anchor"] == CROP_ANCHOR
    assert Analyzer.from_checkpoint(out, device="cpu").calibration == cal
    bad = CliRunner().invoke(app, ["calibrate", "--out", str(out), "--data", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "no boxes.json or ground_truth.json found" in bad.output.replace("\n", " ")


@pytest.mark.parametrize("net", ["level", "herniation"])
def test_calibrate_add_ships_an_ensemble_of_nets(tmp_path, net: str) -> None:
    import dicom_node.cli.calibrate  # noqa: F401  (registers the command)
    from detector.discs.model import HerniationEnsemble, LevelEnsemble
    from dicom_node.cli import app

    shipped = checkpoint.load(SHIPPED_CHECKPOINT)
    members = len(getattr(DiscModels.from_payload(shipped["discs"]), f"{net}_members")())
    other, key = nudged_single_net(net)
    torch.save(other, tmp_path / "second.pt")
    out = tmp_path / "ensemble.pt"
    args = ["calibrate", "--out", str(out), "--studies", "4", "--seed", "123", "--threads", "1"]
    run = CliRunner().invoke(app, [*args, f"--add-{net}", str(tmp_path / "second.pt")])
    assert run.exit_code == 0, run.output
    payload = checkpoint.load(out)
    states = payload["discs"][net]
    assert isinstance(states, list) and len(states) == members + 1  # the shipped net(s), then the added one
    torch.testing.assert_close(states[-1][key].float(), other[net][key].float())
    assert not torch.equal(states[0][key].float(), states[-1][key].float())
    analyzer = Analyzer.from_checkpoint(out, device="cpu")
    ensemble = {"level": LevelEnsemble, "herniation": HerniationEnsemble}[net]
    assert isinstance(getattr(analyzer.discs, net), ensemble) and payload["version"] != shipped["version"]
    missing = CliRunner().invoke(app, [*args, f"--add-{net}", str(tmp_path / "nothing.pt")])
    assert missing.exit_code != 0 and "nothing.pt" in missing.output


def test_the_level_net_reads_each_chain_position_in_several_views_and_averages_them(analyzer: Analyzer) -> None:
    from detector.analysis import LEVEL_VIEWS, LevelView, extend_chain
    from detector.levels import disc_chain

    study = make_study(np.random.default_rng([9300, 2]), n_slices=11)
    volume = torch.from_numpy(study.volume.astype(np.float32))
    spacing = (study.pixel_spacing, study.pixel_spacing)
    found = disc_chain(analyzer.detector.predict(list(study.volume)))
    assert found is not None
    chain = extend_chain(found, volume.shape[1:])
    one, views = Analyzer(analyzer.detector, analyzer.discs, analyzer.version, (LevelView(),)), []
    assert len(LEVEL_VIEWS) > 1 and LevelView() in LEVEL_VIEWS
    for view in LEVEL_VIEWS:
        one.level_views = (view,)
        views.append(np.exp(one.level_log_probs(volume, spacing, chain)))
    mean = np.exp(analyzer.level_log_probs(volume, spacing, chain))
    np.testing.assert_allclose(mean, np.mean(views, axis=0), atol=1e-5)
    np.testing.assert_allclose(mean.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(views[0], views[len(views) // 2], atol=1e-3)  # the views do differ


def test_a_normal_disc_is_shown_on_its_clearest_slice_and_a_herniation_where_it_shows_most(
    analyzer: Analyzer,
) -> None:
    """The call is the disc's highest logit either way; a disc called normal is boxed on the
    slice where it was detected most clearly (not on a far lateral slice whose low logit
    happened to be the highest), a herniation on the slice where its logit is highest. The box
    is that slice's; one further than ``reach`` from where its crop looked (here 0: any) is
    shown there instead (with the shipped "disc" anchor, the disc's point: a lateral slice's
    box on an articular pillar is not shown on the pillar)."""
    from detector.analysis import clearest, crop_anchors
    from detector.levels import Disc

    def shown_as(finding: DiscFinding, disc: Disc, k: int) -> None:
        row, col = crop_anchors(members, analyzer.discs.crop_anchor)[k]
        x0, y0, x1, y1 = finding.box
        assert (x1 - x0, y1 - y0) == pytest.approx((disc.box[2] - disc.box[0], disc.box[3] - disc.box[1]))
        assert ((y0 + y1) / 2, (x0 + x1) / 2) == pytest.approx((row, col))

    members = [
        Disc(k, np.array([50.0, 60.0 + k]), (40.0, 55.0 + k, 60.0, 65.0 + k), 0.0, s)
        for k, s in ((3, 0.4), (7, 0.95), (11, 0.5))
    ]
    normal = analyzer._finding(
        "C4-C5", members, np.array([[-6.0, 0.1], [-5.0, 0.2], [-3.0, 0.4]]), None, (256, 256), 0.0
    )
    assert normal.label == "normal_disc" and normal.slice_index == 7
    shown_as(normal, members[1], 1)
    assert normal.logit == -3.0 and normal.probability == pytest.approx(analyzer.calibration.probability(-3.0))
    assert normal.protrusion_mm == pytest.approx(0.2)
    herniated = analyzer._finding(
        "C4-C5", members, np.array([[-6.0, 0.1], [-5.0, 0.2], [6.0, 3.0]]), None, (256, 256), 0.0
    )
    assert herniated.label == "herniation" and herniated.slice_index == 11 and herniated.protrusion_mm == 3.0
    shown_as(herniated, members[2], 2)
    assert analyzer.discs.crop_anchor == "disc" and herniated.box != members[2].box  # moved onto the disc point
    inferred = [Disc(k, np.zeros(2), (0.0, 0.0, 1.0, 1.0), 0.0, 0.0) for k in (4, 5, 6)]
    assert clearest(inferred) == 1  # nothing detected there: the middle slice


def test_a_discs_crops_are_centred_on_its_own_boxes_or_on_one_point_for_the_disc() -> None:
    """ "slice": each detection's crop on its own box; "disc": all on the score-weighted mean of
    the boxes' centres, so one misplaced box does not move its crop (the slices still differ)."""
    from detector.analysis import crop_anchors, shown_box
    from detector.levels import Disc

    def box(k: int, x: float, y: float, score: float) -> Disc:
        return Disc(k, np.array([x, y]), (x - 10, y - 4, x + 10, y + 4), 0.0, score)

    members = [box(4, 50.0, 100.0, 0.9), box(5, 56.0, 103.0, 0.3), box(6, 50.0, 100.0, 0.9)]
    assert crop_anchors(members, "slice") == [(100.0, 50.0), (103.0, 56.0), (100.0, 50.0)]
    row, col = (100.0 * 1.8 + 103.0 * 0.3) / 2.1, (50.0 * 1.8 + 56.0 * 0.3) / 2.1
    for anchor in crop_anchors(members, "disc"):
        assert anchor == pytest.approx((row, col))
    on_pillar = members[1].box  # centred (103, 56): 6.7 px from (100, 50)
    moved = (40.0, 96.0, 60.0, 104.0)  # where the crop looked
    assert shown_box(on_pillar, 100.0, 50.0, 5.0, (256, 256)) == moved
    assert shown_box(on_pillar, 100.0, 50.0, 7.0, (256, 256)) == on_pillar  # close enough: on the disc, as detected
    own = crop_anchors(members, "slice")[1]
    assert shown_box(on_pillar, *own, 0.0, (256, 256)) == on_pillar  # "slice": the crop looked at the box itself
    assert shown_box(on_pillar, 2.0, 250.0, 5.0, (128, 256)) == (240.0, 0.0, 256.0, 6.0)  # kept inside the image
    inferred = [box(4, 50.0, 100.0, 0.0), box(5, 60.0, 110.0, 0.0)]  # nothing detected: a plain mean
    assert crop_anchors(inferred, "disc") == [pytest.approx((105.0, 55.0))] * 2
    assert crop_anchors([], "disc") == []
    with pytest.raises(ValueError, match="crop_anchor"):
        crop_anchors(members, "box")
