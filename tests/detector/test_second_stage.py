"""The second stage's pure parts: physical crops, calibration, naming from the C2 anchor."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.checkpoint import STORED_RULES, with_second_stage
from detector.discs.calibration import Calibration, calibrate, fit_platt, operating_point, reliability
from detector.discs.crops import CropRequest, CropSpec, anchor_of_box, normalize_crops, row_quantile, take_crops
from detector.discs.model import (
    UNSTORED_CROP_ANCHOR,
    UNSTORED_KEY_FRACTION,
    DiscModels,
    DiscNet,
    HerniationEnsemble,
    LevelEnsemble,
)
from detector.discs.samples import LABEL_THRESHOLD_MM, draw
from detector.levels import LEVELS
from detector.naming import LEVEL_CLASSES, NOT_DISC, UNSTORED_RULE, Naming, NamingRule, name_chain
from tests.detector.conftest import chain_log_probs


def _dot_volume(spacing: float, size_mm: float = 60.0, dot_mm: tuple[float, float] = (30.0, 20.0)) -> torch.Tensor:
    n = int(round(size_mm / spacing))
    vol = torch.zeros(3, n, n)
    r, c = int(round(dot_mm[0] / spacing)), int(round(dot_mm[1] / spacing))
    vol[1, r - 1 : r + 2, c - 1 : c + 2] = 1.0
    return vol


def test_a_crop_is_the_same_anatomy_whatever_the_matrix() -> None:
    spec = CropSpec(mm_per_px=0.5, size=32, neighbours=(0,))
    crops = []
    for spacing in (0.4, 0.8):
        vol = _dot_volume(spacing)
        row, col = 30.0 / spacing, 20.0 / spacing
        crops.append(take_crops(vol, (spacing, spacing), spec, [CropRequest(1, row, col)])[0, 0])
    for crop in crops:  # the dot sits at the window centre, whatever the source resolution
        peak = np.unravel_index(int(crop.argmax()), crop.shape)
        assert abs(peak[0] - 15.5) <= 1.5 and abs(peak[1] - 15.5) <= 1.5
    # neighbours become channels, repeated at the ends of the series
    vol = _dot_volume(0.5)
    both = take_crops(vol, (0.5, 0.5), CropSpec(0.5, 32, neighbours=(-1, 0, 1)), [CropRequest(0, 60, 40)])
    assert both.shape == (1, 3, 32, 32)
    assert float(both[0, 0].max()) == 0.0 and float(both[0, 2].max()) > 0.5  # slice 0 twice, then slice 1


def test_crop_offsets_and_anchors_are_in_millimetres() -> None:
    assert anchor_of_box((10, 20, 30, 40)) == (30.0, 20.0)
    vol = _dot_volume(0.5)
    spec = CropSpec(mm_per_px=0.5, size=32, offset_mm=(-5.0, 0.0), neighbours=(0,))
    crop = take_crops(vol, (0.5, 0.5), spec, [CropRequest(1, 60.0, 40.0)])[0, 0]
    peak = np.unravel_index(int(crop.argmax()), crop.shape)
    assert abs(peak[0] - (15.5 + 10)) <= 1.5  # the window sits 5 mm (10 px) higher: the dot is lower in it
    normed = normalize_crops(torch.rand(2, 1, 16, 16) * 1000 + 50)
    assert float(normed.min()) >= -0.5 and float(normed.max()) <= 2.0


@pytest.mark.parametrize("shape", [(5, 3 * 96 * 96), (7, 72 * 72), (3, 1), (4, 2), (2, 101)])
def test_row_quantile_is_torch_quantile_to_the_bit(shape: tuple[int, int]) -> None:
    # the analysis's crops were normalised with torch.quantile; selection must not move a call
    gen = torch.Generator().manual_seed(sum(shape))
    for values in (torch.randn(*shape, generator=gen) * 100, torch.randint(0, 5, shape, generator=gen).float()):
        for q in (0.0, 0.02, 0.5, 0.98, 1.0):
            assert torch.equal(row_quantile(values, q), torch.quantile(values, q, dim=1))


def test_platt_scaling_recovers_a_known_curve_and_the_operating_point_meets_its_target() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, 4000)
    labels = (rng.random(4000) < 1 / (1 + np.exp(-(0.5 * logits - 1.0)))).astype(int)
    a, b = fit_platt(logits, labels)
    assert abs(a - 0.5) < 0.08 and abs(b + 1.0) < 0.15
    cal = calibrate(logits, labels, 0.9, data="test")
    assert cal.sensitivity is not None and cal.sensitivity >= 0.9
    assert cal.specificity is not None and 0 < cal.specificity < 1
    p = cal.probability(logits)
    assert ((p >= cal.threshold)[labels == 1]).mean() >= 0.9
    # the bins of a calibrated model lie near the diagonal
    for b_ in reliability(p, labels):
        if b_["count"] > 200:
            assert abs(b_["predicted"] - b_["observed"]) < 0.08
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="both classes"):
        fit_platt(np.zeros(3), np.zeros(3))
    assert operating_point(np.array([0.9, 0.8, 0.1]), np.array([1, 1, 0]), 1.0) == 0.8


def test_the_chain_is_named_from_the_c2_anchor_not_from_the_top() -> None:
    whole = name_chain(chain_log_probs([0, 1, 2, 3, 4, 5, 6]))
    assert whole.status == "found" and whole.names == [*LEVELS, None]
    # a false disc above C2-C3 (the base of the dens) does not shift the names
    extra = name_chain(chain_log_probs([NOT_DISC, 0, 1, 2, 3, 4, 5]))
    assert extra.names == [None, *LEVELS]
    # thoracic discs below: named up to C7-T1, the rest left out
    long = name_chain(chain_log_probs([0, 1, 2, 3, 4, 5, 6, 6, 6]))
    assert long.names[:6] == list(LEVELS) and long.names[6:] == [None, None, None]
    # one ambiguous position in the middle does not break the chain
    noisy = chain_log_probs([0, 1, 2, 3, 4, 5])
    noisy[2] = np.log(np.full(len(LEVEL_CLASSES), 1 / len(LEVEL_CLASSES)))
    assert name_chain(noisy).names == list(LEVELS)
    # below the anchor the count names the discs: a disc or two that look like another
    # level do not rename them...
    mislooking = name_chain(chain_log_probs([0, 1, 4, 3, 1, 5], confidence=0.8))
    assert mislooking.status == "found" and mislooking.names == list(LEVELS)[:6]
    # ...but a count that every disc below the anchor disagrees with is not trusted
    scrambled = name_chain(chain_log_probs([0, 3, 3, 1, 6, 2], confidence=0.8))
    assert scrambled.status == "unknown" and "inconsistent chain" in (scrambled.reason or "")
    assert name_chain(chain_log_probs([0, 3, 3, 1, 6, 2], confidence=0.8), level_weight=0.0).status == "found"


def test_the_lower_discs_appearance_settles_an_unsure_anchor() -> None:
    # the anchor position is barely likelier C2-C3 than C3-C4 (the net's common confusion
    # between neighbours on another scanner); the discs below read as C3-C4, C4-C5, ...
    lp = chain_log_probs([0, 1, 2, 3, 4, 5], confidence=0.5)
    p = np.exp(lp)
    p[0, 0], p[0, 1] = 0.45, 0.4
    p[1:, 0] = 0.05
    lp = np.log(p / p.sum(axis=1, keepdims=True))
    assert name_chain(lp).names == list(LEVELS)[:6]
    # with the count alone, "C2-C3 missed above the chain" is almost as likely: unknown
    assert name_chain(lp, level_weight=0.0).status == "unknown"
    # the stored rule is the same function with its parameters as data
    assert NamingRule()(lp) == name_chain(lp)
    assert NamingRule(level_weight=0.0)(lp).status == "unknown"


def test_the_analysis_rules_travel_with_the_second_stage_and_version_it() -> None:
    models = DiscModels.new()
    models.naming = NamingRule(level_weight=0.0, min_margin=2.0)
    models.key_fraction = 0.6
    models.crop_anchor = "slice"
    payload = models.to_payload()
    again = DiscModels.from_payload(payload)
    assert again.naming == models.naming and again.key_fraction == 0.6 and again.crop_anchor == "slice"
    # every stored rule is in the version (a rule added to DiscModels.rules only would not be)
    assert tuple(models.rules()) == STORED_RULES
    # a checkpoint stored before the rules were: the rules it was calibrated under, fixed
    older = {k: v for k, v in payload.items() if k not in STORED_RULES}
    assert DiscModels.from_payload(older).naming == UNSTORED_RULE == NamingRule()
    assert DiscModels.from_payload(older).key_fraction == UNSTORED_KEY_FRACTION
    assert DiscModels.from_payload(older).crop_anchor == UNSTORED_CROP_ANCHOR == "slice"
    with pytest.raises(ValueError, match="unknown naming parameters"):
        DiscModels.from_payload({**payload, "naming": {"level_weight": 0.5, "margin": 1.0}})
    with pytest.raises(ValueError, match="crop_anchor"):
        DiscModels.from_payload({**payload, "crop_anchor": "box"})
    detector = {"model": {"w": torch.zeros(2)}, "config_name": "meddet-student"}
    versions = {
        with_second_stage(detector, p)["version"]
        for p in (
            payload,
            {**payload, "naming": NamingRule().to_dict()},
            {**payload, "key_fraction": 0.5},
            {**payload, "crop_anchor": "disc"},
            older,
        )
    }
    assert len(versions) == 5  # other rules name other chains or read other boxes: another version


def test_a_counted_disc_that_surely_is_another_level_vetoes_the_count() -> None:
    # ...unless the net is sure: C3-C4 missed by the detector, so the count says C3-C4 where
    # the disc is C4-C5
    skipped = name_chain(chain_log_probs([0, 2, 3, 4], confidence=0.95))
    assert skipped.status == "unknown" and skipped.names == [None] * 4 and skipped.cause == "veto"
    assert "counted as C3-C4 from C2 looks like C4-C5 (probability 0.95)" in (skipped.reason or "")
    assert name_chain(chain_log_probs([0, 2, 3, 4], confidence=0.95), contradiction=0.99).status == "found"
    # a thoracic disc that looks like T1-T2 below C7-T1 is no contradiction (it is not named)
    assert name_chain(chain_log_probs([0, 1, 2, 3, 4, 5, 6], confidence=0.95)).status == "found"


def test_no_anchor_or_a_chain_that_disagrees_gives_unknown_levels_with_a_reason() -> None:
    top_missing = name_chain(chain_log_probs([2, 3, 4, 5]))
    assert top_missing.status == "unknown" and "no C2 anchor" in (top_missing.reason or "")
    assert top_missing.names == [None] * 4 and top_missing.cause == "no_anchor"
    vague = name_chain(chain_log_probs([0, 1, 2, 3], confidence=0.13))
    assert vague.status == "unknown" and vague.reason and vague.cause
    torn = np.full((3, len(LEVEL_CLASSES)), 0.01)  # C2-C3 or C3-C4 on top, each disc below torn alike
    torn[0, :2], torn[1, 1:3], torn[2, 2:4] = (0.5, 0.44), (0.45, 0.49), (0.45, 0.49)
    unsure = name_chain(np.log(torn / torn.sum(axis=1, keepdims=True)))
    assert unsure.cause == "margin" and "best alignment only" in (unsure.reason or "")
    empty = name_chain(np.zeros((0, len(LEVEL_CLASSES))))
    assert (empty.reason, empty.cause) == ("no disc found", "no_disc")
    assert name_chain(chain_log_probs([0, 1, 2, 3])).cause is None
    with pytest.raises(ValueError, match="log_probs"):
        name_chain(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="cause"):  # an unnamed chain says why, in words and as a cause
        Naming([None], "unknown", "why", 0, 0.0)


def test_training_crops_carry_their_protrusion_and_level() -> None:
    models = DiscModels.new()
    rng = np.random.default_rng([31, 4])
    batch = draw(rng, models.herniation_crop, models.level_crop)
    assert batch.herniation.shape[1:] == (3, 96, 96) and batch.level.shape[1:] == (1, 72, 72)
    assert len(batch.herniation) == len(batch.protrusion_mm) >= 3
    assert (batch.protrusion_mm >= 0).all() and (batch.protrusion_mm < 8).all()
    assert set(batch.level_class.tolist()) <= set(range(len(LEVEL_CLASSES)))
    assert NOT_DISC in batch.level_class.tolist()
    assert batch.herniation.abs().sum() > 0 and batch.level.abs().sum() > 0
    assert LABEL_THRESHOLD_MM == models.label_threshold_mm


def test_disc_models_round_trip_through_the_checkpoint_dict() -> None:
    models = DiscModels.new().eval()
    x = torch.rand(2, 3, 96, 96)
    again = DiscModels.from_payload(models.to_payload(half=False))
    torch.testing.assert_close(models.herniation(x), again.herniation(x))
    bad = {**models.to_payload(), "level_classes": ["a"]}
    with pytest.raises(ValueError, match="level classes"):
        DiscModels.from_payload(bad)


def test_a_level_ensemble_averages_its_members_probabilities_and_round_trips() -> None:
    torch.manual_seed(0)
    first, second = DiscModels.new().eval(), DiscModels.new().eval()
    both = first.with_level_member(second)
    x = torch.rand(4, 1, 72, 72)
    mean = (torch.softmax(first.level(x), dim=1) + torch.softmax(second.level(x), dim=1)) / 2
    torch.testing.assert_close(torch.softmax(both.level(x), dim=1), mean)  # its output stands for logits
    again = DiscModels.from_payload(both.to_payload(half=False))
    assert isinstance(again.level, LevelEnsemble) and len(again.level.members) == 2
    torch.testing.assert_close(torch.softmax(again.level(x), dim=1), mean)
    three = both.with_level_member(first).level
    assert isinstance(three, LevelEnsemble) and len(three.members) == 3
    assert isinstance(DiscModels.from_payload(first.to_payload()).level, DiscNet)  # one net stays one net
    other_crop = DiscModels.new(level_crop=CropSpec(mm_per_px=1.0, size=72, neighbours=(0,)))
    with pytest.raises(ValueError, match="level crops differ"):
        first.with_level_member(other_crop)
    with pytest.raises(ValueError, match="at least 2"):
        LevelEnsemble([DiscNet(1, 3)])


def test_a_herniation_ensemble_averages_its_members_outputs_and_round_trips() -> None:
    torch.manual_seed(2)
    first, second = DiscModels.new().eval(), DiscModels.new().eval()
    both = first.with_herniation_member(second)
    x = torch.rand(3, 3, 97, 97)
    mean = (first.herniation(x) + second.herniation(x)) / 2  # logit and mm alike
    torch.testing.assert_close(both.herniation(x), mean)
    payload = both.to_payload(half=False)
    assert isinstance(payload["herniation"], list) and isinstance(payload["level"], dict)
    again = DiscModels.from_payload(payload)
    assert isinstance(again.herniation, HerniationEnsemble) and len(again.herniation_members()) == 2
    torch.testing.assert_close(again.herniation(x), mean)
    assert isinstance(again.level, DiscNet)  # the level net is untouched
    other_crop = DiscModels.new(herniation_crop=CropSpec(mm_per_px=0.5, size=64, neighbours=(0,)))
    with pytest.raises(ValueError, match="herniation crops differ"):
        first.with_herniation_member(other_crop)
    with pytest.raises(ValueError, match="at least 2"):
        HerniationEnsemble([DiscNet(3, 2)])


@pytest.mark.parametrize("net", ["level", "herniation"])
def test_an_ensemble_fine_tunes_as_one_net_and_stays_an_ensemble(tmp_path, net: str) -> None:
    from detector.discs.train import DiscTrainConfig, train_discs

    torch.manual_seed(1)
    both = getattr(DiscModels.new(), f"with_{net}_member")(DiscModels.new())
    before = [p.detach().clone() for p in getattr(both, net).parameters()]
    cfg = DiscTrainConfig(epochs=1, patients_per_epoch=2, val_patients=2, nets=(net,), seed=7, herniation_coarsest=4.0)
    best = DiscModels.load(train_discs(cfg, tmp_path, log=lambda _: None, init=both))
    ensemble = getattr(best, net)
    assert isinstance(ensemble, {"level": LevelEnsemble, "herniation": HerniationEnsemble}[net])
    assert len(ensemble.members) == 2
    after = list(ensemble.parameters())
    assert all(not torch.equal(a, b) for a, b in zip(before, after) if a.ndim > 1)  # every member learnt


def test_the_chain_reaches_one_step_beyond_its_ends_and_missed_discs_borrow_a_neighbours_boxes() -> None:
    from detector.analysis import extend_chain, inferred
    from detector.levels import Chain, Disc

    def disc(k: int, x: float, y: float, score: float) -> Disc:
        return Disc(k, np.array([x, y]), (x - 10, y - 3, x + 10, y + 3), score, 0.0)

    positions = np.array([[50.0, 40.0], [52.0, 60.0], [54.0, 80.0]])
    members = [[disc(3, 50, 40, 0.9)], [disc(3, 52, 60, 0.8), disc(4, 52, 60, 0.1)], []]
    longer = extend_chain(Chain(positions, 20.0, members), (200, 200))
    np.testing.assert_allclose(longer.positions[[0, -1]], [[48.0, 20.0], [56.0, 100.0]])
    assert longer.members[0] == [] and longer.members[-1] == [] and len(longer.members) == 5
    # near the image's upper edge there is no room above: only the bottom is added
    assert len(extend_chain(Chain(positions, 20.0, members), (200, 200)).positions) == 5
    assert len(extend_chain(Chain(positions - [0, 30], 20.0, members), (200, 200)).positions) == 4
    # the missed third disc takes the second's boxes (its faint one on slice 4 left out), moved 20 px down
    moved = inferred(Chain(positions, 20.0, members), 2)
    assert [d.slice_index for d in moved] == [3]
    assert moved[0].box == pytest.approx((44.0, 77.0, 64.0, 83.0))


def test_level_training_draws_other_craniovertebral_proportions() -> None:
    from detector.data.anatomy import sample_spine
    from detector.discs.samples import _vary_craniovertebral

    rng = np.random.default_rng(8)
    spine = sample_spine(rng, hard=False, size=256)
    varied = [_vary_craniovertebral(spine, rng) for _ in range(20)]
    for v in varied:  # C2 grows or shrinks, and the rest of the spine moves with it
        assert v.body_top[0] == spine.body_top[0]
        np.testing.assert_allclose(v.disc_center - v.body_bot[0], spine.disc_center - spine.body_bot[0])
        np.testing.assert_allclose(np.diff(v.body_top[1:]), np.diff(spine.body_top[1:]))
        assert v.skull_gap > v.dens_len
    assert np.ptp([v.body_bot[0] for v in varied]) > 4 and np.ptp([v.dens_len for v in varied]) > 5


def test_training_necks_get_c1s_posterior_arch_and_a_clivus_above_c2_only() -> None:
    """The bones around the anchor that our generator leaves out are drawn where they belong
    (C1's posterior arch behind the canal, the clivus above the dens tip), nothing at or below
    the C2 body changes, and the training sampler draws them in most necks, of varied size."""
    from dataclasses import replace

    from detector.data.anatomy import sample_spine, uv_grid
    from detector.data.render import render_slice, sample_contrast
    from detector.discs.samples import with_craniovertebral_bones

    rng = np.random.default_rng(3)
    spine = sample_spine(rng, hard=False, size=256)
    look = sample_contrast(rng, hard=False)
    u, v = uv_grid(spine)
    texture = np.zeros((2, 256, 256), np.float32)
    plain = render_slice(spine, look, u, v, 0.0, texture)
    arch = render_slice(replace(spine, c1_posterior_arch=6.0), look, u, v, 0.0, texture) != plain
    clivus = render_slice(replace(spine, clivus=9.0), look, u, v, 0.0, texture) != plain
    assert arch.sum() > 20 and clivus.sum() > 20
    assert (u[arch] < 0).all() and (u[clivus] < -spine.dens_len).all()  # above C2's body / the dens
    assert (v[arch] > 0).all() and np.median(v[clivus]) < 0  # behind the canal / in front of it
    drawn = [with_craniovertebral_bones(spine, np.random.default_rng([5, i])) for i in range(40)]
    assert 0.5 < np.mean([s.clivus > 0 for s in drawn]) < 0.95
    assert np.ptp([s.c1_posterior_arch for s in drawn]) > 3 and np.ptp([s.dens_half_width for s in drawn]) > 1.5
    from detector.discs.samples import Variety

    with pytest.raises(ValueError, match="random_look"):
        Variety(random_look=0.6)  # half the patients are random T2 looks already


def test_training_looks_vary_every_tissue_but_keep_what_a_t2_call_needs() -> None:
    """Half the training patients get random tissue intensities (domain randomisation), but
    always bright CSF over a darker cord, a dark annulus and dark cortex: the herniation
    label must stay visible. ``random_contrast`` (the naming stress set) keeps nothing."""
    from detector.data.render import random_contrast, t2_random_contrast

    for hard in (False, True):
        looks = [t2_random_contrast(np.random.default_rng([i, hard]), hard) for i in range(60)]
        assert all(c.csf > c.cord and c.csf > c.annulus and c.cortex <= 0.15 for c in looks)
        assert any(c.marrow > c.fat for c in looks) and any(c.marrow < c.fat for c in looks)
        assert any(c.nucleus > c.csf for c in looks) and any(c.muscle > c.soft for c in looks)
    free = [random_contrast(np.random.default_rng(i), hard=False) for i in range(40)]
    assert any(c.marrow > c.csf for c in free) and any(c.annulus > c.nucleus for c in free)


def test_an_elastic_warp_moves_the_anatomy_smoothly_and_none_changes_nothing() -> None:
    from detector.discs.crops import WARP_BASIS

    spec = CropSpec(mm_per_px=0.5, size=32, neighbours=(0,))
    vol = _dot_volume(0.5)
    plain = take_crops(vol, (0.5, 0.5), spec, [CropRequest(1, 60, 40)])
    zero = take_crops(vol, (0.5, 0.5), spec, [CropRequest(1, 60, 40, warp=(0.0,) * (2 * WARP_BASIS**2))])
    torch.testing.assert_close(plain, zero)
    shift = [0.0] * (2 * WARP_BASIS**2)
    shift[0] = 3.0  # the constant row mode: every sample 3 mm further caudal, so the dot moves up 6 px
    moved = take_crops(vol, (0.5, 0.5), spec, [CropRequest(1, 60, 40, warp=tuple(shift))])[0, 0]
    peak = np.unravel_index(int(moved.argmax()), moved.shape)
    assert abs(peak[0] - (15.5 - 6)) <= 1.5 and abs(peak[1] - 15.5) <= 1.5


def test_a_share_of_second_stage_training_comes_from_the_other_generator_with_its_own_truth() -> None:
    """``Variety.other_generator``: patients of ``detector.altgen`` give herniation and level
    crops, each disc's level crop on that disc's box and "not a disc" crops beside them; with
    no share the draws are exactly those of the shipped recipe."""
    from detector.altgen import make_study
    from detector.discs.other_generator import level_points
    from detector.discs.samples import Variety

    models = DiscModels.new()
    other = draw(
        np.random.default_rng([31, 5]), models.herniation_crop, models.level_crop, variety=Variety(other_generator=1.0)
    )
    assert len(other.herniation) == len(other.protrusion_mm) >= 1 and other.herniation.shape[1:] == (3, 96, 96)
    assert (other.protrusion_mm >= 0).all() and other.herniation.abs().sum() > 0
    classes = other.level_class.tolist()
    assert NOT_DISC in classes and any(c < NOT_DISC for c in classes)
    assert other.level.shape == (len(classes), 1, 72, 72) and other.level.abs().sum() > 0
    plain = draw(np.random.default_rng([31, 4]), models.herniation_crop, models.level_crop)
    none = draw(
        np.random.default_rng([31, 4]), models.herniation_crop, models.level_crop, variety=Variety(other_generator=0.0)
    )
    torch.testing.assert_close(plain.level, none.level)
    with pytest.raises(ValueError, match="other_generator"):
        Variety(other_generator=1.5)

    study = make_study(77, hard=False, positions=(-3.0, 0.0, 3.0))
    boxes = {d.level: d.boxes[1] for d in study.discs if 1 in d.boxes}
    (sr, sc) = study.pixel_spacing
    points = level_points(study, 1, np.random.default_rng(0))
    assert {LEVEL_CLASSES[c] for _, c in points if c != NOT_DISC} == set(boxes) & set(LEVEL_CLASSES)
    for (row, col), c in points:
        inside = [
            lv
            for lv, (x0, y0, x1, y1) in boxes.items()
            if x0 - 6 / sc <= col <= x1 + 6 / sc and y0 - 6 / sr <= row <= y1 + 6 / sr
        ]
        if c != NOT_DISC:
            assert LEVEL_CLASSES[c] in inside  # on its own disc, give or take the jitter
