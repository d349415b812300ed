"""A trivial stand-in dataset for detector unit tests (same item format as the real ones).

Each image holds a few flat-shaded objects on noise: class 0 small bright squares, class 1
wide dim bars. Easy to learn, so a tiny model gets well above chance in seconds.
"""

from __future__ import annotations

import numpy as np


class FakeDiscs:
    def __init__(self, n: int, seed: int, size: int = 128) -> None:
        self.n, self.seed, self.size = n, seed, size

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        rng = np.random.default_rng([self.seed, i])
        s = self.size
        img = rng.normal(100.0, 10.0, (s, s)).astype(np.float32)
        boxes, labels = [], []
        for row in range(3):
            y = 20 + row * 36 + int(rng.integers(-4, 5))
            x = int(rng.integers(10, s - 60))
            if rng.random() < 0.5:
                w = h = int(rng.integers(14, 22))
                img[y : y + h, x : x + w] += 150.0
                labels.append(0)
            else:
                w, h = int(rng.integers(36, 50)), int(rng.integers(10, 14))
                img[y : y + h, x : x + w] += 60.0
                labels.append(1)
            boxes.append([x, y, x + w, y + h])
        return img, {"boxes": np.array(boxes, np.float32), "labels": np.array(labels, np.int64)}
