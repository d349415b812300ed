"""COCO-json detection folders.

Layout (the usual export of CVAT, Label Studio, Roboflow)::

    root/
      annotations.json          # or any single *.json at the top (e.g. instances_train.json)
      images/<file_name>        # as named in the json; PNG/JPEG/TIFF (8/16 bit) or .npy
                                # (file names may also be relative to root itself)

json: ``images`` [{id, file_name, width, height}], ``annotations`` [{image_id,
bbox [x, y, w, h] in pixels, category_id}], ``categories`` [{id, name}]. Category names map
to our classes: herniation (hernia, herniated_disc) and normal_disc (normal, disc, healthy).
Images without annotations are kept as negatives. ``iscrowd`` annotations are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from detector.data.common import Target, class_index, make_target, read_image


class CocoDataset:
    """Items: (image float32 [H, W], {"boxes": float32 [N, 4] x0 y0 x1 y1, "labels": int64 [N]}).

    Map-style (``__len__`` + ``__getitem__``), usable by torch's DataLoader without importing torch.
    """

    def __init__(self, root: str | Path, annotations: str | Path | None = None) -> None:
        self.root = Path(root)
        ann_path = Path(annotations) if annotations else _find_json(self.root)
        data = json.loads(ann_path.read_text())
        for key in ("images", "annotations", "categories"):
            if key not in data:
                raise ValueError(f"{ann_path}: not COCO json, missing {key!r}")
        cats = {c["id"]: class_index(c["name"]) for c in data["categories"]}
        self.images = sorted(data["images"], key=lambda im: im["id"])
        self.targets: dict[int, tuple[list[list[float]], list[int]]] = {im["id"]: ([], []) for im in self.images}
        for a in data["annotations"]:
            if a.get("iscrowd", 0):
                continue
            if a["image_id"] not in self.targets:
                raise ValueError(f"{ann_path}: annotation {a.get('id')} names unknown image {a['image_id']}")
            if a["category_id"] not in cats:
                raise ValueError(f"{ann_path}: annotation {a.get('id')} has unknown category {a['category_id']}")
            x, y, w, h = a["bbox"]
            boxes, labels = self.targets[a["image_id"]]
            boxes.append([x, y, x + w, y + h])
            labels.append(cats[a["category_id"]])

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Target]:
        info = self.images[i]
        path = _image_path(self.root, info["file_name"])
        image = read_image(path)
        boxes, labels = self.targets[info["id"]]
        return image, make_target(boxes, labels, image.shape, where=str(path))


def _find_json(root: Path) -> Path:
    preferred = root / "annotations.json"
    if preferred.is_file():
        return preferred
    found = sorted(root.glob("*.json")) or sorted((root / "annotations").glob("*.json"))
    if len(found) != 1:
        raise FileNotFoundError(f"{root}: expected annotations.json (or exactly one *.json), found {len(found)}")
    return found[0]


def _image_path(root: Path, name: str) -> Path:
    for p in (root / "images" / name, root / name):
        if p.is_file():
            return p
    raise FileNotFoundError(f"image {name!r}: not under {root / 'images'} nor {root}")
