"""COCO and YOLO folders round-trip to the same items; collate batches them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from detector.data.coco import CocoDataset
from detector.data.common import class_index, collate
from detector.data.synthetic import SyntheticSliceDataset
from detector.data.yolo import YoloDataset


@pytest.fixture(scope="module")
def items():
    ds = SyntheticSliceDataset(4, seed=3, size=128)
    out = [ds[i] for i in range(4)]
    assert any(len(t["boxes"]) for _, t in out)
    return out


def save_png16(path: Path, img: np.ndarray) -> np.ndarray:
    arr = np.clip(np.rint(img), 0, 65535).astype(np.uint16)
    Image.fromarray(arr).save(path)
    return arr.astype(np.float32)


def test_coco_round_trip(tmp_path, items):
    (tmp_path / "images").mkdir()
    images, anns, expected = [], [], []
    for i, (img, t) in enumerate(items):
        name = f"s{i}.png" if i % 2 else f"s{i}.npy"
        if name.endswith(".png"):
            pixels = save_png16(tmp_path / "images" / name, img)
        else:
            np.save(tmp_path / "images" / name, img)
            pixels = img
        expected.append((pixels, t))
        images.append({"id": 10 + i, "file_name": name, "width": img.shape[1], "height": img.shape[0]})
        for b, c in zip(t["boxes"], t["labels"]):
            x0, y0, x1, y1 = map(float, b)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": 10 + i,
                    "category_id": 7 if c == 0 else 3,
                    "bbox": [x0, y0, x1 - x0, y1 - y0],
                    "area": (x1 - x0) * (y1 - y0),
                    "iscrowd": 0,
                }
            )
    cats = [{"id": 3, "name": "normal"}, {"id": 7, "name": "herniation"}]  # CDH-1848 style names
    (tmp_path / "annotations.json").write_text(json.dumps({"images": images, "annotations": anns, "categories": cats}))
    ds = CocoDataset(tmp_path)
    assert len(ds) == len(items)
    for i, (pixels, t) in enumerate(expected):
        img, target = ds[i]
        assert img.dtype == np.float32 and np.array_equal(img, pixels)
        np.testing.assert_allclose(target["boxes"], t["boxes"], atol=1e-3)
        assert np.array_equal(target["labels"], t["labels"])


def test_coco_unknown_category_is_named(tmp_path):
    (tmp_path / "annotations.json").write_text(
        json.dumps({"images": [], "annotations": [], "categories": [{"id": 1, "name": "vertebra"}]})
    )
    with pytest.raises(ValueError, match="vertebra"):
        CocoDataset(tmp_path)


def test_yolo_round_trip_with_split_and_class_names(tmp_path, items):
    (tmp_path / "images" / "train").mkdir(parents=True)
    (tmp_path / "labels" / "train").mkdir(parents=True)
    (tmp_path / "classes.txt").write_text("normal_disc\nherniation\n")  # ids swapped vs ours
    expected = []
    for i, (img, t) in enumerate(items):
        pixels = save_png16(tmp_path / "images" / "train" / f"{i:03d}.png", img)
        h, w = img.shape
        lines = []
        for (x0, y0, x1, y1), c in zip(t["boxes"], t["labels"]):
            lines.append(
                f"{1 - c} {(x0 + x1) / 2 / w:.6f} {(y0 + y1) / 2 / h:.6f} {(x1 - x0) / w:.6f} {(y1 - y0) / h:.6f}"
            )
        if i != 0:  # image 0 has no label file: a negative
            (tmp_path / "labels" / "train" / f"{i:03d}.txt").write_text("\n".join(lines) + "\n")
        expected.append((pixels, t if i != 0 else {"boxes": np.zeros((0, 4)), "labels": np.zeros(0)}))
    ds = YoloDataset(tmp_path, split="train")
    assert len(ds) == len(items)
    for i, (pixels, t) in enumerate(expected):
        img, target = ds[i]
        assert np.array_equal(img, pixels)
        np.testing.assert_allclose(target["boxes"], np.asarray(t["boxes"]).reshape(-1, 4), atol=1e-2)
        assert np.array_equal(target["labels"], np.asarray(t["labels"], dtype=np.int64))


def test_yolo_bad_line_is_reported(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    np.save(tmp_path / "images" / "a.npy", np.zeros((8, 8), np.float32))
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2\n")
    with pytest.raises(ValueError, match="a.txt"):
        YoloDataset(tmp_path)[0]


def test_class_aliases():
    assert class_index("Herniation") == 0 and class_index("normal") == 1 and class_index("normal-disc") == 1
    with pytest.raises(ValueError, match="vertebra"):
        class_index("vertebra")


def test_collate_same_and_mixed_sizes(items):
    images, targets = collate(items[:2])
    assert images.shape == (2, 1, 128, 128) and images.dtype == torch.float32
    assert targets[0]["boxes"].dtype == torch.float32 and targets[0]["labels"].dtype == torch.int64
    mixed = [
        items[0],
        (np.zeros((64, 80), np.float32), {"boxes": np.zeros((0, 4), np.float32), "labels": np.zeros(0, np.int64)}),
    ]
    images, targets = collate(mixed)
    assert isinstance(images, list) and images[1].shape == (1, 64, 80) and len(targets[1]["boxes"]) == 0
