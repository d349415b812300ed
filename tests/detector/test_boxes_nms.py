import torch

from detector.models.boxes import (
    aligned_giou,
    aligned_iou,
    batched_nms,
    bbox2distance,
    box_iou,
    distance2bbox,
    nms,
)


def test_box_iou_known_values() -> None:
    a = torch.tensor([[0.0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])
    iou = box_iou(a, b)
    assert iou.shape == (1, 3)
    torch.testing.assert_close(iou[0], torch.tensor([1.0, 50 / 150, 0.0]))
    torch.testing.assert_close(aligned_iou(a.expand(3, 4), b), iou[0])


def test_giou_is_negative_for_disjoint_boxes() -> None:
    a = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10]])
    b = torch.tensor([[0.0, 0, 10, 10], [20, 0, 30, 10]])
    g = aligned_giou(a, b)
    assert g[0] == 1.0
    torch.testing.assert_close(g[1], torch.tensor(0.0 - (300 - 200) / 300))


def test_distance_coding_round_trip() -> None:
    points = torch.tensor([[5.0, 5.0], [12.0, 3.0]])
    boxes = torch.tensor([[1.0, 2.0, 9.0, 8.0], [10.0, 1.0, 14.0, 6.0]])
    d = bbox2distance(points, boxes, max_dis=16)
    torch.testing.assert_close(distance2bbox(points, d), boxes)
    clipped = distance2bbox(points, torch.full((2, 4), 100.0), max_shape=(20, 30))
    assert clipped.min() >= 0 and clipped[:, 2].max() <= 30 and clipped[:, 3].max() <= 20


def test_nms_keeps_best_of_each_cluster() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [0, 0, 10, 9]])
    scores = torch.tensor([0.8, 0.9, 0.7, 0.1])
    keep = nms(boxes, scores, 0.5)
    assert keep.tolist() == [1, 2]
    assert nms(boxes[:0], scores[:0], 0.5).numel() == 0


def test_batched_nms_keeps_overlapping_boxes_of_different_labels() -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10]])
    scores = torch.tensor([0.9, 0.8, 0.7])
    labels = torch.tensor([0, 1, 0])
    assert sorted(batched_nms(boxes, scores, labels, 0.5).tolist()) == [0, 1]
