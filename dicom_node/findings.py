"""Series + per-slice detections -> the findings dict of DESIGN.md section 3 (pure).

Shared by ``meddet predict`` and the worker pipeline. Boxes are mapped back to the stored
pixels of each source (the detector saw the canonical view of ``dicom_node.pixels``); a
finding on a multi-frame source also names its 1-based ``frame``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from detector.levels import assign_levels
from detector.types import Detection

from dicom_node.pixels import Series

MODEL_NAME = "meddet"


def build_findings(series: Series, detections: Sequence[Sequence[Detection]], version: str,
                   threshold: float = 0.5) -> dict[str, Any]:
    """``{"study_instance_uid", "series_instance_uid", "model", "findings": [...]}``.

    ``detections[k]`` belongs to ``series.slices[k]``; one finding per disc level seen,
    cranial first (``detector.levels.assign_levels``).
    """
    if len(detections) != len(series.slices):
        raise ValueError(f"detections: {len(detections)} lists for {len(series.slices)} slices")
    findings = []
    for f in assign_levels(detections, threshold=threshold):
        s = series.slices[f.slice_index]
        item: dict[str, Any] = {
            "level": f.level,
            "label": f.label,
            "score": round(float(f.score), 4),
            "sop_instance_uid": s.sop_instance_uid,
            "box": [round(v, 2) for v in series.to_source_box(f.slice_index, f.box)],
        }
        if int(s.source.get("NumberOfFrames", 1) or 1) > 1:
            item["frame"] = s.frame
        findings.append(item)
    return {
        "study_instance_uid": series.study_instance_uid,
        "series_instance_uid": series.series_instance_uid,
        "model": {"name": MODEL_NAME, "version": version},
        "findings": findings,
    }
