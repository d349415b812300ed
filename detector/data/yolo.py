"""YOLO-txt detection folders.

Layout (Ultralytics style; ``split`` picks a sub-folder such as "train" or "val")::

    root/
      images/[split/]<stem>.png     # PNG/JPEG/TIFF (8/16 bit) or .npy
      labels/[split/]<stem>.txt     # one line per box: class cx cy w h (normalised to 0..1)
      classes.txt                   # optional: one class name per line, in id order

Without classes.txt (or ``names``) class ids are ours: 0 herniation, 1 normal_disc. An image
without a label file is a negative (no boxes).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from detector.data.common import IMAGE_SUFFIXES, Target, class_index, make_target, read_image


class YoloDataset:
    """Items: (image float32 [H, W], {"boxes": float32 [N, 4] x0 y0 x1 y1, "labels": int64 [N]}).

    Map-style (``__len__`` + ``__getitem__``), usable by torch's DataLoader without importing torch.
    """

    def __init__(self, root: str | Path, split: str | None = None, names: Sequence[str] | None = None) -> None:
        self.root = Path(root)
        self.image_dir = self.root / "images" / (split or "")
        self.label_dir = self.root / "labels" / (split or "")
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"{self.image_dir}: no images folder")
        self.images = sorted(p for p in self.image_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if names is None and (self.root / "classes.txt").is_file():
            names = [n for n in (self.root / "classes.txt").read_text().splitlines() if n.strip()]
        self.class_map = [class_index(n) for n in names] if names else None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[np.ndarray, Target]:
        path = self.images[i]
        image = read_image(path)
        h, w = image.shape
        label_path = self.label_dir / f"{path.stem}.txt"
        rows = _read_rows(label_path) if label_path.is_file() else np.zeros((0, 5))
        cls = rows[:, 0].astype(np.int64)
        if self.class_map is not None:
            if len(cls) and cls.max() >= len(self.class_map):
                raise ValueError(f"{label_path}: class id {cls.max()} beyond the {len(self.class_map)} names")
            cls = np.asarray([self.class_map[c] for c in cls], dtype=np.int64)
        cx, cy, bw, bh = rows[:, 1] * w, rows[:, 2] * h, rows[:, 3] * w, rows[:, 4] * h
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], axis=1)
        return image, make_target(boxes, cls, image.shape, where=str(label_path))


def _read_rows(path: Path) -> np.ndarray:
    rows = [line.split() for line in path.read_text().splitlines() if line.strip()]
    if any(len(r) != 5 for r in rows):
        raise ValueError(f"{path}: every line must be 'class cx cy w h'")
    return np.asarray(rows, dtype=np.float64).reshape(-1, 5)
