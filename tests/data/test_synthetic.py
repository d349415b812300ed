"""The synthetic cervical MR generator: deterministic, sane boxes, consistent labels, hard mode."""

from __future__ import annotations

import numpy as np
import pytest

from detector.data.anatomy import LEVELS, sample_spine
from detector.data.render import sample_artifacts
from detector.data.synthetic import SyntheticSliceDataset, make_study


@pytest.fixture(scope="module")
def studies():
    return [make_study(np.random.default_rng(s), hard=bool(s % 2), n_slices=11, size=160) for s in range(6)]


def test_make_study_is_deterministic():
    a = make_study(np.random.default_rng(42), n_slices=5, size=128)
    b = make_study(np.random.default_rng(42), n_slices=5, size=128)
    c = make_study(np.random.default_rng(43), n_slices=5, size=128)
    assert np.array_equal(a.volume, b.volume)
    assert all(np.array_equal(x, y) for x, y in zip(a.boxes, b.boxes))
    assert a.herniated_levels == b.herniated_levels
    assert not np.array_equal(a.volume, c.volume)


def test_slice_dataset_items_depend_on_seed_and_index_only():
    a, b = SyntheticSliceDataset(4, seed=5, size=128), SyntheticSliceDataset(4, seed=5, size=128)
    img3, t3 = a[3]
    _ = b[0], b[1]
    img3b, t3b = b[3]
    assert np.array_equal(img3, img3b) and np.array_equal(t3["boxes"], t3b["boxes"])
    assert not np.array_equal(SyntheticSliceDataset(4, seed=6, size=128)[3][0], img3)
    with pytest.raises(IndexError):
        a[4]


def test_item_format():
    img, target = SyntheticSliceDataset(1, seed=0, size=128)[0]
    assert img.dtype == np.float32 and img.shape == (128, 128) and img.min() >= 0
    assert target["boxes"].dtype == np.float32 and target["boxes"].shape[1:] == (4,)
    assert target["labels"].dtype == np.int64 and len(target["labels"]) == len(target["boxes"])


def test_varied_matrix_size():
    shapes = {SyntheticSliceDataset(12, seed=1)[i][0].shape for i in range(12)}
    assert len(shapes) > 1


def test_boxes_inside_image_and_valid(studies):
    for st in studies:
        s, h, w = st.volume.shape
        assert st.volume.dtype == np.float32 and np.isfinite(st.volume).all()
        for boxes, labels, levels in zip(st.boxes, st.labels, st.levels):
            assert len(boxes) == len(labels) == len(levels)
            assert (boxes[:, 0] >= 0).all() and (boxes[:, 1] >= 0).all()
            assert (boxes[:, 2] <= w).all() and (boxes[:, 3] <= h).all()
            assert (boxes[:, 2] - boxes[:, 0] >= 2).all() and (boxes[:, 3] - boxes[:, 1] >= 2).all()
            assert set(labels.tolist()) <= {0, 1}


def test_every_level_boxed_in_order_on_midline_slices(studies):
    for st in studies:
        mid = int(np.argmin(np.abs(st.slice_offsets)))
        assert st.levels[mid] == list(LEVELS)
        centres = (st.boxes[mid][:, 1] + st.boxes[mid][:, 3]) / 2
        assert (np.diff(centres) > 0).all()  # cranial first
        for levels in st.levels:  # never a level twice on a slice; order kept on every slice
            assert levels == [lv for lv in LEVELS if lv in levels]


def test_lateral_slices_show_no_disc():
    st = make_study(np.random.default_rng(3), n_slices=15, size=128)
    far = np.abs(st.slice_offsets) > 16
    assert far.any() and all(len(st.boxes[k]) == 0 for k in np.flatnonzero(far))


def test_herniation_flags_consistent(studies):
    for st in studies:
        seen = {lv for lab, lev in zip(st.labels, st.levels) for c, lv in zip(lab, lev) if c == 0}
        assert set(st.herniated_levels) == seen
    assert any(st.herniated_levels for st in studies)


def test_herniated_disc_box_reaches_further_back_than_its_normal_slices():
    """A herniation shows as a box extending posteriorly (towards larger x) on its slices."""
    rng = np.random.default_rng(11)
    checked = 0
    for _ in range(10):
        st = make_study(rng, n_slices=15, size=160)
        for level in st.herniated_levels:
            right = {int(c): [] for c in (0, 1)}
            for b, lab, lev in zip(st.boxes, st.labels, st.levels):
                for box, c, lv in zip(b, lab, lev):
                    if lv == level:
                        right[int(c)].append(box[2] - box[0])
            if right[0] and right[1]:
                assert max(right[0]) > np.median(right[1])
                checked += 1
    assert checked > 0


def test_hard_is_harder_than_easy():
    """Hard mode: smaller herniations, more noise; and its images are measurably noisier."""
    rng = np.random.default_rng(0)
    easy = [sample_spine(rng, False, 128) for _ in range(40)]
    hard = [sample_spine(rng, True, 128) for _ in range(40)]
    size = lambda spines: np.mean([h.size for s in spines for h in s.hernias])  # noqa: E731
    assert size(hard) < size(easy)
    assert np.mean([sample_artifacts(rng, True, 64).noise for _ in range(20)]) > 2 * np.mean(
        [sample_artifacts(rng, False, 64).noise for _ in range(20)]
    )

    def roughness(hard_mode: bool) -> float:
        vals = []
        for i in range(6):
            img, _ = SyntheticSliceDataset(6, seed=9, hard=hard_mode, size=160)[i]
            img = img / np.percentile(img, 99)
            vals.append(np.median(np.abs(np.diff(img, axis=1))))
        return float(np.mean(vals))

    assert roughness(True) > 1.5 * roughness(False)


def test_varied_items_draw_other_necks_and_looks():
    """``varied`` draws the share of items with ``adjust`` and ``contrast_of``; 0 keeps the old items."""
    from detector.config import TrainConfig
    from detector.data.render import t2_random_contrast
    from detector.discs.samples import widen
    from detector.sources import synthetic_split

    plain = SyntheticSliceDataset(6, seed=8, size=128)
    assert np.array_equal(SyntheticSliceDataset(6, seed=8, size=128, varied=0.0, adjust=widen)[2][0], plain[2][0])
    varied = SyntheticSliceDataset(6, seed=8, size=128, varied=1.0, adjust=widen, contrast_of=t2_random_contrast)
    heights = {"plain": [], "varied": []}
    for name, ds in (("plain", plain), ("varied", varied)):
        for i in range(6):
            img, target = ds[i]
            b = target["boxes"]
            assert img.shape == (128, 128) and ((b >= 0) & (b <= 128)).all()
            heights[name] += list(b[:, 3] - b[:, 1])
    assert not np.array_equal(varied[2][0], plain[2][0])
    assert np.mean(heights["varied"]) < np.mean(heights["plain"])  # a wider field of view: smaller discs
    train, _ = synthetic_split(TrainConfig(train_images=4, val_images=2, varied=0.5))
    assert all(part.varied == 0.5 and part.adjust is widen for part in train.datasets)
    assert all(part.contrast_of is t2_random_contrast for part in train.datasets)
    own, _ = synthetic_split(TrainConfig(train_images=4, val_images=2, varied=0.5, varied_tissues=False))
    assert all(part.adjust is widen and part.contrast_of is not t2_random_contrast for part in own.datasets)


def test_a_share_of_detector_slices_comes_from_the_other_generator_with_its_labels():
    """``train.other_generator``: that share of the slices are ``detector.altgen``'s, boxed and
    labelled as it draws them (herniation where the slice shows >= 1.0 mm, as our own slices);
    0 keeps the split, and ``synthetic:hard`` takes only its hard slices."""
    from detector.altgen import make_study
    from detector.config import TrainConfig
    from detector.data.anatomy import HERNIATION, NORMAL_DISC
    from detector.other_slices import OtherGeneratorSlices
    from detector.sources import synthetic_split

    train, _ = synthetic_split(TrainConfig(train_images=10, val_images=2, other_generator=0.4))
    sizes = {type(p).__name__: 0 for p in train.datasets}
    for part in train.datasets:
        sizes[type(part).__name__] += len(part)
    assert sizes == {"SyntheticSliceDataset": 6, "OtherGeneratorSlices": 4}
    plain, _ = synthetic_split(TrainConfig(train_images=10, val_images=2))
    assert [len(p) for p in plain.datasets] == [5, 5]
    hard, _ = synthetic_split(TrainConfig(train_images=10, val_images=2, other_generator=0.4), hard_only=True)
    assert [(type(p).__name__, p.hard, len(p)) for p in hard.datasets] == [
        ("SyntheticSliceDataset", True, 6),
        ("OtherGeneratorSlices", True, 4),
    ]

    slices = OtherGeneratorSlices(4, seed=4, hard=True)
    shown = 0
    for i in range(4):
        image, target = slices[i]
        h, w = image.shape
        b, labels = target["boxes"], target["labels"]
        assert image.dtype == np.float32 and len(b) == len(labels)
        shown += len(b)
        assert ((b[:, [0, 2]] >= 0) & (b[:, [0, 2]] <= w) & (b[:, [1, 3]] >= 0) & (b[:, [1, 3]] <= h)).all()
        assert set(labels.tolist()) <= {HERNIATION, NORMAL_DISC}
    assert shown >= 12  # mostly where the discs show
    assert np.array_equal(slices[1][0], OtherGeneratorSlices(4, seed=4, hard=True)[1][0])  # item i: (seed, i)

    # the label is the slice's own protrusion, not the disc's largest
    study = make_study(11, hard=False)
    herniated = [d for d in study.discs if d.herniated]
    assert herniated
    assert any(min(d.protrusion_by_slice.values()) < 1.5 for d in herniated)


def test_a_share_of_detector_slices_has_every_tissue_at_a_random_intensity():
    """``train.random_look``: that share of our slices is drawn in ``random_contrast`` (a disc may
    be far darker or brighter than the rest of the image, as it never is in the generator's T2
    look), with the
    same boxes and labels; 0 keeps every item as before."""
    from detector.config import TrainConfig
    from detector.data.synthetic import SyntheticSliceDataset
    from detector.sources import synthetic_split

    def disc_brightness(ds: SyntheticSliceDataset) -> list[float]:
        """Per item: mean intensity inside its disc boxes over the image's median."""
        out = []
        for i in range(len(ds)):
            image, target = ds[i]
            inside = [image[int(y0) : int(y1), int(x0) : int(x1)].mean() for x0, y0, x1, y1 in target["boxes"]]
            if inside:
                out.append(float(np.mean(inside) / np.median(image)))
        return out

    plain = SyntheticSliceDataset(12, seed=3, size=128)
    assert all(
        np.array_equal(a[0], b[0]) for a, b in zip(plain, SyntheticSliceDataset(12, seed=3, size=128, random_look=0.0))
    )
    random = SyntheticSliceDataset(12, seed=3, size=128, random_look=1.0)
    assert min(disc_brightness(plain)) > 0.9  # boxes hold the dark annulus and endplates too
    assert min(disc_brightness(random)) < 0.6 and max(disc_brightness(random)) > 2.0
    train, _ = synthetic_split(TrainConfig(train_images=4, val_images=2, random_look=0.3))
    assert all(part.random_look == 0.3 for part in train.datasets)
