"""Disc level assignment: per-slice detections -> one finding per level."""

from __future__ import annotations

import numpy as np
import pytest

from detector.data.synthetic import make_study
from detector.levels import LEVELS, assign_levels
from detector.types import CLASS_NAMES, Detection


def disc(y: float, label: str = "normal_disc", score: float = 0.9, x: float = 100.0) -> Detection:
    return Detection(label, score, (x - 15, y - 5, x + 15, y + 5))


def column(ys=(50, 80, 110, 140, 170, 200), **kw) -> list[Detection]:
    return [disc(y, **kw) for y in ys]


def test_six_discs_named_from_the_top():
    found = assign_levels([column()])
    assert [f.level for f in found] == list(LEVELS)
    assert all(f.label == "normal_disc" and f.slice_index == 0 for f in found)
    assert found[0].box[1] == 45  # the top box is C2-C3


def test_order_of_detections_does_not_matter():
    dets = column()[::-1]
    assert [f.box for f in assign_levels([dets])] == [f.box for f in assign_levels([column()])]


def test_highest_herniation_score_wins_with_its_key_slice():
    s0 = column()
    s1 = column()
    s1[3] = disc(140, "herniation", 0.7)
    s2 = column()
    s2[3] = disc(141, "herniation", 0.95)
    found = {f.level: f for f in assign_levels([s0, s1, s2])}
    assert found["C5-C6"].label == "herniation"
    assert found["C5-C6"].score == 0.95 and found["C5-C6"].slice_index == 2
    assert found["C4-C5"].label == "normal_disc"


def test_below_threshold_is_normal_with_best_normal_score():
    s0 = column(score=0.6)
    s1 = column(score=0.8)
    s1[2] = disc(110, "herniation", 0.4)
    found = {f.level: f for f in assign_levels([s0, s1], threshold=0.5)}
    assert found["C4-C5"].label == "normal_disc"
    assert found["C4-C5"].score == 0.6 and found["C4-C5"].slice_index == 0
    assert found["C3-C4"].score == 0.8
    lowered = {f.level: f for f in assign_levels([s0, s1], threshold=0.3)}
    assert lowered["C4-C5"].label == "herniation" and lowered["C4-C5"].score == 0.4


def test_two_classes_on_one_disc_are_one_disc():
    s = column()
    s.append(Detection("herniation", 0.8, (86, 136, 116, 146)))  # on the C5-C6 disc
    found = assign_levels([s])
    assert [f.level for f in found] == list(LEVELS)
    assert {f.level: f.label for f in found}["C5-C6"] == "herniation"


def test_a_missed_top_disc_on_one_slice_does_not_shift_names():
    full = column()
    missing_top = column()[1:]
    missing_top[2] = disc(140, "herniation", 0.9)  # truly C5-C6
    found = {f.level: f for f in assign_levels([full, missing_top, full])}
    assert found["C5-C6"].label == "herniation"
    assert found["C4-C5"].label == "normal_disc"


def test_a_gap_in_the_middle_is_filled_from_the_spacing():
    only = [disc(y) for y in (50, 80, 140, 170, 200)] + [disc(110, "herniation", 0.3)]
    found = {f.level: f for f in assign_levels([[d for d in only if d.score > 0.5]])}
    assert sorted(found) == ["C2-C3", "C3-C4", "C5-C6", "C6-C7", "C7-T1"]
    assert found["C5-C6"].box[1] == 135


def test_no_detections():
    assert assign_levels([]) == []
    assert assign_levels([[], []]) == []
    assert assign_levels([[disc(50, score=0.01)]]) == []


def test_single_disc_is_c2_c3():
    found = assign_levels([[disc(120)]])
    assert [f.level for f in found] == ["C2-C3"]


def test_synthetic_truth_with_dropped_discs_gives_the_true_levels():
    rng = np.random.default_rng(0)
    for t in range(6):
        st = make_study(rng, hard=bool(t % 2), n_slices=11, size=160)
        drop = np.random.default_rng(t)
        dets = []
        for boxes, labels in zip(st.boxes, st.labels):
            s = [Detection(CLASS_NAMES[c], 0.9, tuple(map(float, b))) for b, c in zip(boxes, labels)]
            if len(s) > 1 and drop.random() < 0.5:
                s.pop(int(drop.integers(len(s))))
            dets.append(s)
        found = assign_levels(dets)
        assert [f.level for f in found] == list(LEVELS)
        assert tuple(f.level for f in found if f.label == "herniation") == st.herniated_levels


def test_weak_spurious_discs_do_not_shift_the_names():
    """Seen with the shipped model: faint boxes above C2-C3 and beside the spine on every slice."""
    slices = []
    for k in range(5):
        s = column(score=0.7)
        s[3] = disc(140, "herniation", 0.8) if k == 2 else s[3]
        s += [disc(20, score=0.08), disc(60, score=0.07, x=40), disc(225, score=0.1)]
        slices.append(s)
    found = {f.level: f for f in assign_levels(slices)}
    assert sorted(found) == sorted(LEVELS)
    assert found["C2-C3"].box[1] == 45
    assert found["C5-C6"].label == "herniation" and found["C5-C6"].slice_index == 2


@pytest.mark.parametrize("extra_y", [20, 230])
def test_a_seventh_consistent_but_weaker_position_at_an_end_is_dropped(extra_y):
    """Seen with the shipped model: the dens base boxed (score ~0.4) on a few slices above C2-C3."""
    slices = [column(score=0.7) + ([disc(extra_y, score=0.4)] if k < 3 else []) for k in range(6)]
    found = assign_levels(slices)
    assert [f.level for f in found] == list(LEVELS)
    assert found[0].box[1] == 45 and found[-1].box[1] == 195


def test_seven_equally_strong_positions_are_named_from_the_top():
    found = assign_levels([column(ys=(20, 50, 80, 110, 140, 170, 200))])
    assert [f.level for f in found] == list(LEVELS) and found[0].box[1] == 15


def test_a_pillar_boxed_on_lateral_slices_beside_the_spine_is_not_a_disc():
    """A box 40 px behind the disc column, between two discs, on the lateral slices only."""
    from detector.levels import disc_chain

    central = [column() for _ in range(5)]
    lateral = [[disc(125, score=0.6, x=140)] for _ in range(2)]
    chain = disc_chain([*lateral, *central, *lateral])
    assert chain is not None and len(chain.positions) == 6
    np.testing.assert_allclose(chain.positions[:, 1], [50, 80, 110, 140, 170, 200])
    assert [f.level for f in assign_levels([*lateral, *central, *lateral])] == list(LEVELS)


def test_one_disc_drifting_across_slices_is_one_position():
    """Disc C4-C5 at y=110 on central slices, 13 px lower on lateral ones (its boxes drift)."""
    from detector.levels import disc_chain

    slices = [column() for _ in range(4)] + [column(ys=(50, 80, 123, 140, 170, 200)) for _ in range(3)]
    chain = disc_chain(slices)
    assert chain is not None and len(chain.positions) == 6
    assert [len({d.slice_index for d in m}) for m in chain.members] == [7] * 6


def test_a_line_of_pillars_behind_the_discs_does_not_replace_them():
    """Lateral slices box the articular pillars 18 px behind every disc at its height, on more
    slices than the discs show: the chain stays on the discs (the front line)."""
    from detector.levels import disc_chain

    central = [column(score=0.6) for _ in range(5)]
    lateral = [column(score=0.35, x=118.0) for _ in range(4)]
    chain = disc_chain([*lateral, *central, *lateral])
    assert chain is not None and len(chain.positions) == 6
    np.testing.assert_allclose(chain.positions[:, 0], 100.0, atol=1.0)
    assert [sorted({d.slice_index for d in m}) for m in chain.members] == [list(range(4, 9))] * 6
