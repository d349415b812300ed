"""Detector training slices from the second training generator (``detector.altgen``).

Our generator draws one neck and one look; a detector trained on it alone boxes the discs of
necks drawn otherwise less often. ``train.other_generator`` of the synthetic training slices
come from ``detector.altgen`` (another anatomy model and renderer, written independently of
``detector.data``) instead: one slice of a fresh patient at a lateral position where its
discs show, each disc boxed as that generator draws it, ``herniation`` where the slice shows
a protrusion of at least ``LABEL_THRESHOLD_MM`` (1.0 mm, as our own generator's detector
slices). The held-out generator is not this one and never trains.
"""

from __future__ import annotations

import numpy as np

from detector.altgen import DISCS_SHOW_MM, TRAINING_SEEDS, make_study
from detector.data.anatomy import HERNIATION, LABEL_THRESHOLD_MM, NORMAL_DISC


class OtherGeneratorSlices:
    """``n`` independent ``detector.altgen`` slices; item = (image float32 [H, W], {boxes,
    labels}) as ``SyntheticSliceDataset``'s. Item ``i`` is a function of (``seed``, ``i``)."""

    def __init__(self, n: int, seed: int, hard: bool = False) -> None:
        self.n, self.seed, self.hard = n, seed, hard

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        if not 0 <= i < self.n:
            raise IndexError(i)
        rng = np.random.default_rng([self.seed, i, 0xA17])
        d = float(rng.uniform(-DISCS_SHOW_MM, DISCS_SHOW_MM))
        study = make_study(int(rng.integers(TRAINING_SEEDS)), self.hard, positions=(d,))
        shown = [disc for disc in study.discs if 0 in disc.boxes]
        boxes = np.array([disc.boxes[0] for disc in shown], np.float32).reshape(-1, 4)
        labels = np.array(
            [HERNIATION if disc.protrusion_by_slice[0] >= LABEL_THRESHOLD_MM else NORMAL_DISC for disc in shown],
            np.int64,
        )
        return study.volume[0].astype(np.float32), {"boxes": boxes, "labels": labels}
