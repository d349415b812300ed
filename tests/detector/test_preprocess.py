import numpy as np
import torch

from detector.config import PreprocessConfig
from detector.preprocess import letterbox, normalize_intensity, preprocess


def test_normalize_maps_percentiles_to_unit_range() -> None:
    img = np.linspace(0, 4000, 10000, dtype=np.float32).reshape(100, 100)
    out = normalize_intensity(img, 1, 99)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    assert np.allclose(normalize_intensity(np.full((8, 8), 7.0)), 0.0)


def test_letterbox_keeps_aspect_and_maps_boxes_back() -> None:
    img = np.random.default_rng(0).random((300, 200)).astype(np.float32)
    tensor, meta = letterbox(img, 150)
    assert tensor.shape == (1, 150, 150) and meta.scale == 0.5
    assert tensor[0, :, 100:].abs().sum() == 0  # padding on the right
    boxes = np.array([[10.0, 20.0, 110.0, 220.0]], np.float32)
    back = meta.to_original(torch.from_numpy(meta.to_input(boxes)))
    np.testing.assert_allclose(back.numpy(), boxes, rtol=1e-6)


def test_preprocess_rejects_volumes() -> None:
    import pytest

    with pytest.raises(ValueError, match="2-D"):
        preprocess(np.zeros((2, 8, 8), np.float32), PreprocessConfig(size=16))
