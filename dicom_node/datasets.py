"""Training data from DICOM series with a box file (real scans, or ``meddet synth`` output).

Layout: any folder tree where each series sits in (or below) the folder of its box file::

    root/
      patient-a/
        boxes.json            # or ground_truth.json (what ``meddet synth`` writes)
        *.dcm                 # the series, in any sub-folders, any transfer syntax
      patient-b/ ...

Box file (JSON; boxes in the stored pixels of that instance, as a viewer shows the file)::

    {"series_instance_uid": "1.2...",            # optional: which series of the folder
     "instances": {
        "<SOPInstanceUID>": {"boxes": [[x0, y0, x1, y1], ...],
                             "labels": ["herniation" | "normal_disc" | 0 | 1, ...]},
        "<SOPInstanceUID>#<frame>": {...}        # one frame (1-based) of an Enhanced MR
     }}

An instance listed with no boxes is a negative; instances not listed are skipped unless
``include_unlisted``. Items match the detector's datasets: (image float32 [H, W] in modality
values, canonical sagittal view, {"boxes": float32 [N, 4], "labels": int64 [N]}). Pixels are
decoded lazily, at item access. torch is not needed (a DataLoader takes any such sequence).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from detector.data.common import class_index, make_target
from dicom_node.pixels import SeriesError, dataset_slices

BOX_FILES = ("boxes.json", "ground_truth.json")


@dataclass(frozen=True)
class _Item:
    path: Path
    frame: int  # 1-based
    boxes: list[list[float]]
    labels: list[int]


class DicomBoxDataset:
    """Annotated slices of every series under ``root`` that has a box file."""

    def __init__(self, root: str | Path, include_unlisted: bool = False) -> None:
        self.root = Path(root)
        box_files = sorted(p for name in BOX_FILES for p in self.root.rglob(name))
        if not box_files:
            raise FileNotFoundError(f"{self.root}: no {' or '.join(BOX_FILES)} found")
        self.items: list[_Item] = []
        for bf in box_files:
            self.items += _index(bf, include_unlisted)

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        item = self.items[i]
        ds = dcmread(item.path)
        sl = dataset_slices(ds, canonical=True)[item.frame - 1]
        shape = (int(ds.Rows), int(ds.Columns))
        boxes = [sl.view.from_source_box(b, shape) for b in item.boxes]
        return sl.image, make_target(boxes, item.labels, sl.image.shape, where=f"{item.path}#{item.frame}")


def _index(box_file: Path, include_unlisted: bool) -> list[_Item]:
    spec: dict[str, Any] = json.loads(box_file.read_text())
    if "instances" not in spec:
        raise ValueError(f"{box_file}: missing 'instances'")
    listed = {}
    for key, entry in spec["instances"].items():
        uid, _, frame = key.partition("#")
        labels = [lab if isinstance(lab, int) else class_index(str(lab)) for lab in entry.get("labels", [])]
        boxes = entry.get("boxes", [])
        if len(boxes) != len(labels):
            raise ValueError(f"{box_file}: instance {key} has {len(boxes)} boxes but {len(labels)} labels")
        listed[(uid, int(frame or 1))] = (boxes, labels)
    want_series = spec.get("series_instance_uid")
    items, seen = [], set()
    for path in sorted(p for p in box_file.parent.rglob("*") if p.is_file() and p.name not in BOX_FILES):
        try:
            ds = dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError):
            continue
        if "SOPInstanceUID" not in ds or (want_series and ds.get("SeriesInstanceUID") != want_series):
            continue
        for frame in range(1, int(ds.get("NumberOfFrames", 1) or 1) + 1):
            key = (str(ds.SOPInstanceUID), frame)
            if key in listed or include_unlisted:
                boxes, labels = listed.get(key, ([], []))
                items.append(_Item(path, frame, boxes, labels))
                seen.add(key)
    missing = set(listed) - seen
    if missing:
        raise SeriesError(
            f"{box_file}: {len(missing)} listed instances not found below "
            f"{box_file.parent}, e.g. {sorted(missing)[0][0]}"
        )
    return items
