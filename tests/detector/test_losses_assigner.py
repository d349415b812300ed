import torch

from detector.models.assigner import atss_assign
from detector.models.losses import distribution_focal_loss, giou_loss, quality_focal_loss


def test_qfl_is_smallest_when_score_matches_quality() -> None:
    labels = torch.tensor([0, 2])  # one positive of class 0 (quality 0.8), one background
    quality = torch.tensor([0.8, 0.0])
    good = torch.tensor([[torch.logit(torch.tensor(0.8)), -9.0], [-9.0, -9.0]])
    bad = torch.tensor([[-3.0, 2.0], [3.0, -9.0]])
    lg, lb = quality_focal_loss(good, labels, quality), quality_focal_loss(bad, labels, quality)
    assert lg.shape == (2,)
    assert (lg < 1e-2).all() and (lb > lg).all()


def test_dfl_prefers_the_two_bins_around_the_target() -> None:
    target = torch.tensor([2.3])
    near = torch.full((1, 8), -5.0)
    near[0, 2], near[0, 3] = torch.log(torch.tensor(0.7)) + 5, torch.log(torch.tensor(0.3)) + 5
    far = torch.zeros(1, 8)
    assert distribution_focal_loss(near, target) < distribution_focal_loss(far, target)


def test_giou_loss_zero_for_identical_boxes() -> None:
    b = torch.tensor([[1.0, 2.0, 5.0, 9.0]])
    assert giou_loss(b, b).item() == 0.0
    assert giou_loss(b, b + 20).item() > 1.0


def test_atss_assigns_anchors_near_the_object_only() -> None:
    # one 8x8 level of stride 8 (anchors 64 px squares at cell centres) and a box in the middle
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    c = torch.stack([xs.reshape(-1), ys.reshape(-1)], -1) * 8 + 4
    anchors = torch.cat([c - 32, c + 32], 1)
    gt = torch.tensor([[20.0, 20.0, 44.0, 36.0]])
    assigned = atss_assign(anchors, [64], gt, topk=9)
    pos = (assigned == 0).nonzero().squeeze(1)
    assert 1 <= len(pos) <= 9
    centers = c[pos]
    assert ((centers >= gt[0, :2]) & (centers <= gt[0, 2:])).all()
    assert (atss_assign(anchors, [64], gt[:0]) == -1).all()
