"""Series + its analysis -> the findings dict of DESIGN.md section 3 (pure).

Shared by ``meddet predict`` and the worker pipeline. Boxes are mapped back to the stored
pixels of each source (the detector saw the canonical view of ``dicom_node.pixels``); a
finding on a multi-frame source also names its 1-based ``frame``. Each finding carries the
calibrated herniation ``probability`` (``score`` repeats it for older readers), the estimated
``protrusion_mm``, and, when its level could not be named, level ``unknown`` with a
``reason`` in words and its ``cause`` (``detector.naming.UNNAMED_CAUSES``: no_disc, no_anchor,
margin, veto) for programs; the document states the ``operating_point`` the calls were made at.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dicom_node.pixels import Series

if TYPE_CHECKING:
    from detector.analysis import SeriesAnalysis

MODEL_NAME = "meddet"


def build_findings(
    series: Series, analysis: SeriesAnalysis, version: str, threshold: float | None = None
) -> dict[str, Any]:
    """``{"study_instance_uid", "series_instance_uid", "model", "operating_point", "levels",
    "findings": [...]}``; ``threshold`` overrides the stored operating point."""
    if len(analysis.detections) != len(series.slices):
        raise ValueError(f"analysis: {len(analysis.detections)} slices analysed, series has {len(series.slices)}")
    point = analysis.calibration.summary()
    if threshold is not None:
        point = {
            **point,
            "threshold": threshold,
            "target_sensitivity": None,
            "method": f"{point['method']} (threshold set by user)",
        }
    findings = []
    for f in analysis.findings:
        s = series.slices[f.slice_index]
        herniated = f.probability >= point["threshold"]
        item: dict[str, Any] = {
            "level": f.level,
            "label": "herniation" if herniated else "normal_disc",
            "score": round(f.probability, 4),
            "probability": round(f.probability, 4),
            "protrusion_mm": round(f.protrusion_mm, 1),
            "sop_instance_uid": s.sop_instance_uid,
            "box": [round(v, 2) for v in series.to_source_box(f.slice_index, f.box)],
        }
        if f.reason:
            item["reason"] = f.reason
        if f.cause:
            item["cause"] = f.cause
        if int(s.source.get("NumberOfFrames", 1) or 1) > 1:
            item["frame"] = s.frame
        findings.append(item)
    return {
        "study_instance_uid": series.study_instance_uid,
        "series_instance_uid": series.series_instance_uid,
        "model": {"name": MODEL_NAME, "version": version},
        "operating_point": point,
        "levels": {
            "anchor": "found" if analysis.naming.status == "found" else "not_found",
            "reason": analysis.naming.reason,
            "cause": analysis.naming.cause,
        },
        "findings": findings,
    }
