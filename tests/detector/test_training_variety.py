"""What the second stage's training varies beyond our generator: crop randomisation
(``detector.discs.randomize``), misplaced anchors (``samples.shift_anchor``) and anchors that
do not tell the label (``Variety.annulus_anchor``), osteophytes beside the discs
(``Variety.osteophytes``), and random textures (``randomize.random_texture``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.discs.crop_batch import CropBatch, shift_anchor
from detector.discs.crops import HERNIATION_CROP, LEVEL_CROP
from detector.discs.randomize import band_limited_noise, random_texture, randomize
from detector.discs.samples import LABEL_THRESHOLD_MM, Variety, draw


def test_crop_randomisation_simulates_coarser_acquisitions_on_request() -> None:
    crops = torch.rand(200, 3, 48, 48, generator=torch.Generator().manual_seed(1)) + 1.0

    def fine_detail(coarsest: float) -> float:
        x = randomize(crops.clone(), torch.Generator().manual_seed(7), coarsest=coarsest)
        return float((x[..., 1:] - x[..., :-1]).abs().mean() / x.abs().mean())

    default = randomize(crops.clone(), torch.Generator().manual_seed(7))
    assert torch.equal(default, randomize(crops.clone(), torch.Generator().manual_seed(7), coarsest=2.5))
    # same draws, only the coarsest resolution differs: less fine detail the coarser it may go
    assert fine_detail(4.0) < fine_detail(2.5) < fine_detail(1.0)
    assert torch.equal(default, randomize(crops.clone(), torch.Generator().manual_seed(7), acquired_noise=False))
    grouped = randomize(crops.clone(), torch.Generator().manual_seed(7), coarsest=4.0, acquired_noise=True)
    assert grouped.shape == crops.shape and bool(grouped.isfinite().all())


def test_acquired_noise_is_white_at_the_acquired_pixel_not_at_the_crops() -> None:
    grain = torch.tensor([1.0, 2.0, 4.0]).view(3, 1, 1, 1)
    z = band_limited_noise(torch.Size([3, 1, 96, 96]), grain, torch.Generator().manual_seed(3))
    sd = z.flatten(1).std(dim=1)
    torch.testing.assert_close(sd, torch.ones(3))  # the same noise power, whatever the grain
    neighbours = (z[..., 1:] * z[..., :-1]).flatten(1).mean(dim=1) / sd**2
    assert abs(float(neighbours[0])) < 0.05  # white at 0.3 mm: neighbours independent
    assert 0.5 < float(neighbours[1]) < float(neighbours[2])  # coarser scans: smoother grain


def test_random_texture_changes_local_contrast_but_keeps_polarity_level_and_spread() -> None:
    # a bright band (fluid) beside a dark one (annulus) on mid grey, in every slice channel
    crops = torch.full((64, 3, 48, 48), 0.4)
    crops[..., 20:28] = 1.0
    crops[..., 30:34] = 0.05
    crops += 0.02 * torch.rand(64, 1, 48, 48, generator=torch.Generator().manual_seed(2))  # alike in every slice
    out = random_texture(crops.clone(), torch.Generator().manual_seed(5))
    assert out.shape == crops.shape and bool((out >= 0).all())
    # each crop keeps its mean, and the fluid stays brighter than the annulus (no inversion)
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), crops.mean(dim=(1, 2, 3)), atol=0.03, rtol=0)
    assert bool((out[..., 20:28].mean(dim=(1, 2, 3)) > out[..., 30:34].mean(dim=(1, 2, 3))).all())
    # one net for all slice channels: alike slices stay alike
    torch.testing.assert_close(out[:, 0], out[:, 2])
    assert float((out - crops).abs().mean()) > 0.01  # it does change the crops


def test_texture_is_drawn_only_when_asked_and_only_on_its_share() -> None:
    crops = torch.rand(96, 3, 48, 48, generator=torch.Generator().manual_seed(1)) + 1.0
    default = randomize(crops.clone(), torch.Generator().manual_seed(7), coarsest=4.0, acquired_noise=True)
    off = randomize(crops.clone(), torch.Generator().manual_seed(7), coarsest=4.0, acquired_noise=True, texture=0.0)
    assert torch.equal(default, off)  # 0 draws nothing: every other effect as before
    on = randomize(crops.clone(), torch.Generator().manual_seed(7), coarsest=4.0, acquired_noise=True, texture=0.5)
    assert on.shape == crops.shape and bool(on.isfinite().all()) and not torch.equal(on, default)


def test_anchor_shifts_stay_within_their_millimetres_on_anisotropic_pixels() -> None:
    rng = np.random.default_rng(4)
    moved = np.array([shift_anchor(rng, (100.0, 50.0), 3.0, (0.5, 0.25)) for _ in range(2000)])
    rows_mm, cols_mm = (moved[:, 0] - 100.0) * 0.5, (moved[:, 1] - 50.0) * 0.25
    assert np.abs(rows_mm).max() <= 3.0 and np.abs(cols_mm).max() <= 1.5
    assert np.abs(rows_mm).max() > 2.8 and np.abs(cols_mm).max() > 1.4  # the whole range is used
    with pytest.raises(ValueError, match="anchor_shift_mm"):
        Variety(anchor_shift_mm=-1.0)


def _patient(seed: int, variety: Variety, augment: bool = False, detect=None) -> CropBatch:  # noqa: ANN001
    return draw(np.random.default_rng([seed, 11]), HERNIATION_CROP, LEVEL_CROP, augment, detect, variety)


@pytest.mark.parametrize("other_generator", [0.0, 1.0], ids=["ours", "altgen"])
def test_annulus_anchor_moves_the_crops_of_herniated_discs_only(other_generator: float) -> None:
    """A herniation widens its disc's box backwards: on the box's centre a herniated disc's crop
    sits further back. Anchored on the annulus, crops of discs with no protrusion stay where
    they were and those of herniated discs move (both generators, un-augmented draws)."""
    box, annulus = (
        Variety(other_generator=other_generator),
        Variety(other_generator=other_generator, annulus_anchor=True),
    )
    for seed in range(40):
        plain = _patient(seed, box)
        mm = plain.protrusion_mm
        if bool((mm >= LABEL_THRESHOLD_MM).any()) and bool((mm == 0).any()):
            break
    else:
        pytest.fail("no patient with both a herniated disc and a disc without protrusion in 40 draws")
    moved = _patient(seed, annulus)
    torch.testing.assert_close(moved.protrusion_mm, mm)  # the same discs, the same labels
    for crop_box, crop_annulus, disc_mm in zip(plain.herniation, moved.herniation, mm.tolist()):
        if disc_mm == 0:
            assert torch.equal(crop_box, crop_annulus)
        elif disc_mm >= LABEL_THRESHOLD_MM:
            assert not torch.equal(crop_box, crop_annulus)


def test_annulus_anchor_puts_no_training_crop_on_the_detectors_boxes() -> None:
    """The detector learnt our boxes, protrusion included: its boxes would bring the crop's place
    back as a cue, so with ``annulus_anchor`` the sampler never asks it."""
    asked: list[int] = []

    def detect(image: np.ndarray) -> list[tuple[float, float, float, float]]:
        asked.append(image.shape[0])
        return [(10.0, 10.0, 40.0, 30.0)]

    for seed in range(6):
        _patient(seed, Variety(annulus_anchor=True), augment=True, detect=detect)
    assert asked == []
    for seed in range(6):
        _patient(seed, Variety(), augment=True, detect=detect)
    assert asked  # without it, about half the patients' crops sit on the detector's boxes


def test_osteophytes_are_drawn_into_the_canal_and_leave_the_disc_and_its_label_alone() -> None:
    from dataclasses import replace

    from detector.data.anatomy import disc_boxes, sample_spine, to_pixels, uv_grid, with_osteophytes
    from detector.data.render import render_slice, sample_contrast

    rng = np.random.default_rng(5)
    spine = replace(sample_spine(rng, False, 320), disc_bulge=np.zeros(7), hernias=())
    contrast = sample_contrast(rng, False)
    u, v = uv_grid(spine)
    texture = np.zeros((2, 320, 320))
    spurred = replace(spine, osteophyte=np.full(7, 3.0))
    plain, spur = (render_slice(s, contrast, u, v, 0.0, texture) for s in (spine, spurred))
    # 2 mm behind the posterior corner of C4's lower endplate: CSF without, bone with the spur
    col, row = to_pixels(spine, np.array([spine.body_bot[2] + 0.3]), np.array([spine.body_depth[2] / 2 + 2.0]))
    r, c = int(round(float(row[0]))), int(round(float(col[0])))
    assert plain[r, c] == pytest.approx(contrast.csf) and spur[r, c] == pytest.approx(contrast.cortex)
    assert np.count_nonzero(plain != spur) > 100
    # far lateral slices show no spur; boxes and labels are the disc's alone
    far = [render_slice(x, contrast, u, v, 30.0, texture) for x in (spine, spurred)]
    assert np.array_equal(*far)
    for a, b in zip(disc_boxes(spine, 0.0), disc_boxes(spurred, 0.0)):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    # a share of 0 draws nothing (every existing study stays as it was); 1 spurs every disc
    assert with_osteophytes(spine, rng, 0.0) is spine
    assert np.all(with_osteophytes(spine, np.random.default_rng(1), 1.0).osteophyte >= 1.0)
    with pytest.raises(ValueError, match="osteophytes"):
        Variety(osteophytes=1.5)
    same = [_patient(3, Variety(osteophytes=x)).herniation for x in (0.0, 0.0)]
    assert torch.equal(*same) and not torch.equal(same[0], _patient(3, Variety(osteophytes=1.0)).herniation)


def test_view_disagreement_is_zero_when_two_views_agree_and_at_most_ln2() -> None:
    from detector.discs.train import view_disagreement

    def call(logits: list[float]) -> torch.Tensor:  # a herniation call as [yes, no]
        p = torch.sigmoid(torch.tensor(logits))
        return torch.stack([p, 1 - p], dim=1)

    a = [-3.0, 0.0, 2.5]
    assert float(view_disagreement(call(a), call(a))) == pytest.approx(0.0, abs=1e-6)
    near, far = (
        view_disagreement(call(a), call([v + 0.5 for v in a])),
        view_disagreement(call(a), call([v + 3 for v in a])),
    )
    assert 0 < float(near) < float(far)
    assert float(view_disagreement(call([v + 0.5 for v in a]), call(a))) == pytest.approx(float(near))  # symmetric
    assert float(view_disagreement(call([-30.0]), call([30.0]))) == pytest.approx(np.log(2), abs=1e-3)
    levels = torch.softmax(torch.randn(4, 8, generator=torch.Generator().manual_seed(2)), dim=1)
    assert float(view_disagreement(levels, levels)) == pytest.approx(0.0, abs=1e-6)
    assert float(view_disagreement(levels, levels.roll(1, dims=1))) > 0


@pytest.mark.parametrize("net", ["herniation", "level"])
def test_the_consistency_loss_trains_a_net_on_two_randomisations_of_each_crop(tmp_path, net: str) -> None:
    from detector.discs.model import DiscModels
    from detector.discs.train import DiscTrainConfig, train_discs

    logs: dict[float, list[str]] = {}
    for weight in (0.0, 10.0):
        torch.manual_seed(1)
        init = DiscModels.new()
        before = [p.detach().clone() for p in getattr(init, net).parameters()]
        cfg = DiscTrainConfig(epochs=1, patients_per_epoch=2, val_patients=2, nets=(net,), seed=7, consistency=weight)
        lines = logs.setdefault(weight, [])
        best = DiscModels.load(train_discs(cfg, tmp_path / str(weight), log=lines.append, init=init))
        assert any(not torch.equal(a, b) for a, b in zip(before, getattr(best, net).parameters()))
    assert "views" not in logs[0.0][0]
    views = float(logs[10.0][0].split("/ views ")[1].split(";")[0])
    assert views > 0  # two randomisations of an untrained net's crops disagree a little
