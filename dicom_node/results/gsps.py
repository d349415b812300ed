"""Grayscale Softcopy Presentation State: the boxes and "C5-C6 herniation 91%" as annotations
("disc (level unknown) herniation 91%" where the level could not be named).

For viewers that do not render SR. The presentation state references every source image, so
it applies to the whole series; each key slice gets its boxes and texts on one graphic layer.
"""

from __future__ import annotations

from collections import defaultdict

import highdicom as hd
from pydicom import Dataset

from dicom_node.results.common import (
    Finding,
    ResultContext,
    finish,
)

LAYER = "MEDDET"


def _text(finding: Finding, columns: int, rows: int) -> hd.pr.TextObject:
    """The label above the box (below it when the box touches the top), clipped to the image."""
    x0, y0, x1, y1 = finding.box
    top = y0 - 8.0 if y0 >= 8.0 else y1
    bottom = min(top + 8.0, float(rows))
    top = min(top, bottom - 1.0)
    return hd.pr.TextObject(
        text_value=finding.text,
        units=hd.pr.AnnotationUnitsValues.PIXEL,
        bounding_box=(max(x0, 0.0), top, min(max(x1, x0 + 48.0), float(columns)), bottom),
        text_justification=hd.pr.TextJustificationValues.LEFT,
    )


def build_gsps(ctx: ResultContext, include_normal: bool = False) -> Dataset:
    """The presentation state (BodyPartExamined copied); herniations only unless ``include_normal``."""
    layer = hd.pr.GraphicLayer(layer_name=LAYER, order=1, description="MedDet AI findings")
    shown = [f for f in ctx.findings if include_normal or f.is_herniation]
    per_image: dict[tuple[str, int], list[Finding]] = defaultdict(list)
    for finding in shown:
        per_image[(finding.sop_instance_uid, finding.frame)].append(finding)
    annotations = []
    for (sop_uid, frame), findings in per_image.items():
        source = ctx.source(sop_uid)
        multiframe = int(source.get("NumberOfFrames", 1) or 1) > 1
        annotations.append(
            hd.pr.GraphicAnnotation(
                referenced_images=[source],
                graphic_layer=layer,
                referenced_frame_number=frame if multiframe else None,
                graphic_objects=[
                    hd.pr.GraphicObject(
                        graphic_type=hd.pr.GraphicTypeValues.POLYLINE,
                        graphic_data=f.polyline(),
                        units=hd.pr.AnnotationUnitsValues.PIXEL,
                        tracking_id=f.tracking_id,
                        tracking_uid=ctx.tracking_uid(f),
                    )
                    for f in findings
                ],
                text_objects=[_text(f, int(source.Columns), int(source.Rows)) for f in findings],
            )
        )
    gsps = hd.pr.GrayscaleSoftcopyPresentationState(
        referenced_images=list(ctx.sources),
        **ctx.identity("gsps"),
        **ctx.equipment(),
        content_label="MEDDET",
        content_description="MedDet AI findings (not for diagnosis)",
        graphic_annotations=annotations or None,
        graphic_layers=[layer] if annotations else None,
        series_description="MedDet findings (AI, GSPS)",
    )
    return finish(gsps, ctx, "gsps")
