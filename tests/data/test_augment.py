"""MRI augmentation keeps boxes valid, aligned with the anatomy, and never flips."""

from __future__ import annotations

import numpy as np
import torch

from detector.data.augment import Augment


def square_image(size: int = 96) -> tuple[torch.Tensor, torch.Tensor]:
    img = torch.zeros(1, size, size)
    img[0, 30:50, 40:70] = 1.0  # rows 30-50, columns 40-70
    return img, torch.tensor([[40.0, 30.0, 70.0, 50.0]])


def iou(a: torch.Tensor, b: torch.Tensor) -> float:
    iw = (torch.minimum(a[2], b[2]) - torch.maximum(a[0], b[0])).clamp(min=0)
    ih = (torch.minimum(a[3], b[3]) - torch.maximum(a[1], b[1])).clamp(min=0)
    inter = iw * ih
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def test_boxes_stay_valid_and_counted():
    gen = torch.Generator().manual_seed(0)
    aug = Augment(p=1.0, degrees=10, shift=0.2, generator=gen)
    boxes = torch.tensor([[0.0, 0.0, 10.0, 6.0], [90.0, 90.0, 96.0, 96.0], [30.0, 30.0, 60.0, 50.0]])
    for _ in range(50):
        img, out = aug(torch.rand(1, 96, 96), boxes.clone())
        assert out.shape == boxes.shape and img.shape == (1, 96, 96)
        assert torch.isfinite(img).all() and (img >= 0).all()
        assert (out[:, :2] >= 0).all() and (out[:, 2:] <= 96).all()
        assert (out[:, 2] - out[:, 0] >= 2 - 1e-4).all() and (out[:, 3] - out[:, 1] >= 2 - 1e-4).all()


def test_boxes_follow_the_image():
    gen = torch.Generator().manual_seed(1)
    aug = Augment(p=1.0, generator=gen)
    for _ in range(20):
        img, box = square_image()
        out_img, out_box = aug.affine(img, box)
        ys, xs = torch.nonzero(out_img[0] > 0.5, as_tuple=True)
        truth = torch.tensor([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1], dtype=torch.float32)
        assert iou(out_box[0], truth) > 0.75


def test_no_flip_anatomy_keeps_its_side():
    """The bright block sits left of centre and above it; it stays so after any augmentation."""
    aug = Augment(p=1.0, generator=torch.Generator().manual_seed(2))
    for _ in range(20):
        img, box = square_image()
        out_img, out_box = aug(img, box)
        assert (out_box[0, 0] + out_box[0, 2]) / 2 < 70 and (out_box[0, 1] + out_box[0, 3]) / 2 < 55


def test_p_zero_is_identity_and_seeded_runs_repeat():
    img, box = square_image()
    same_img, same_box = Augment(p=0.0)(img.clone(), box.clone())
    assert torch.equal(same_img, img) and torch.equal(same_box, box)
    a = Augment(p=0.8, generator=torch.Generator().manual_seed(5))(img.clone(), box.clone())
    b = Augment(p=0.8, generator=torch.Generator().manual_seed(5))(img.clone(), box.clone())
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_empty_boxes_and_rician_noise_floor():
    aug = Augment(p=1.0, generator=torch.Generator().manual_seed(3))
    img, out = aug(torch.zeros(1, 32, 32), torch.zeros(0, 4))
    assert out.shape == (0, 4)
    noisy = aug.rician(torch.zeros(1, 64, 64), 0.05)
    assert float(noisy.mean()) > 0.03  # magnitude noise is positive-biased, as in MR background
    assert np.isclose(float(aug.rician(torch.ones(1, 8, 8), 0.0).mean()), 1.0)


def test_look_randomisation_keeps_boxes_and_range_and_repeats():
    """``look`` changes intensities only (boxes untouched), windowed back to 0..1, seeded."""
    img, box = square_image()
    img = img + 0.1 * torch.rand(img.shape, generator=torch.Generator().manual_seed(9))
    aug = lambda seed: Augment(p=0.0, look=1.0, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    out_img, out_box = aug(4)(img.clone(), box.clone())
    assert torch.equal(out_box, box) and out_img.shape == img.shape
    assert not torch.allclose(out_img, img) and float(out_img.min()) >= 0 and float(out_img.max()) <= 1
    assert torch.equal(out_img, aug(4)(img.clone(), box.clone())[0])
    assert not torch.equal(out_img, aug(5)(img.clone(), box.clone())[0])
