"""BINARY Segmentation: one segment per herniated disc, its box filled on its key slice.

Segments carry the same tracking identifier and UID as the SR's measurement group of that disc,
so a viewer (and IHE AIR) can link a region in the SR to its segment. A herniation whose level
is unknown gets a label and tracking identifier that name no level, and no anatomic region.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from highdicom.color import CIELabColor
from pydicom import Dataset

from dicom_node.results.codes import (
    HERNIATED_STRUCTURE,
    LEVEL_SITES,
    MORPHOLOGICALLY_ABNORMAL,
)
from dicom_node.results.common import (
    Finding,
    FindingsError,
    ResultContext,
    finish,
)

#: Recommended display colours (sRGB) of segments 1, 2, ...: warm, distinct, red first, as in the
#: demo's key-slice image; without them viewers pick their own (OHIF: red, green, blue...), and a
#: herniation drawn in green reads as "normal" at a glance.
SEGMENT_COLOURS: tuple[tuple[int, int, int], ...] = (
    (255, 60, 60),
    (255, 150, 30),
    (230, 60, 230),
    (255, 220, 40),
    (255, 110, 160),
    (190, 90, 255),
)


def segment_colour(number: int) -> CIELabColor:
    """The recommended display colour of segment ``number`` (1-based), as CIELab."""
    return CIELabColor.from_rgb(*SEGMENT_COLOURS[(number - 1) % len(SEGMENT_COLOURS)])


def segment_label(finding: Finding) -> str:
    """``C5-C6 herniation``; ``herniation, level unknown (1)`` when the level is unknown."""
    if finding.level_known:
        return f"{finding.level} herniation"
    return f"herniation, level unknown ({finding.unknown_index})"


def box_mask(finding: Finding, rows: int, columns: int) -> np.ndarray:
    """Pixels whose centres lie inside the box, shape (rows, columns), bool."""
    x0, y0, x1, y1 = finding.box
    centres_x = np.arange(columns) + 0.5
    centres_y = np.arange(rows) + 0.5
    inside_x = (centres_x >= x0) & (centres_x <= x1)
    inside_y = (centres_y >= y0) & (centres_y <= y1)
    mask = inside_y[:, None] & inside_x[None, :]
    if not mask.any():  # a box thinner than a pixel still marks the pixel it sits in
        mask[min(int(y0), rows - 1), min(int(x0), columns - 1)] = True
    return mask


def _pixel_array(ctx: ResultContext, herniations: tuple[Finding, ...]) -> np.ndarray:
    """Shape (frames, rows, columns, segments), bool; frames follow the source frames."""
    first = ctx.sources[0]
    rows, columns = int(first.Rows), int(first.Columns)
    multiframe = len(ctx.sources) == 1 and int(first.get("NumberOfFrames", 1) or 1) > 1
    n_frames = int(first.NumberOfFrames) if multiframe else len(ctx.sources)
    index = {ds.SOPInstanceUID: i for i, ds in enumerate(ctx.sources)}
    array = np.zeros((n_frames, rows, columns, len(herniations)), dtype=bool)
    for segment, finding in enumerate(herniations):
        frame = finding.frame - 1 if multiframe else index[finding.sop_instance_uid]
        array[frame, :, :, segment] = box_mask(finding, rows, columns)
    return array


def build_seg(ctx: ResultContext) -> Dataset:
    """The SEG of the herniations; raises FindingsError when there are none to segment."""
    herniations = ctx.herniations
    if not herniations:
        raise FindingsError("findings: no herniation to segment (SEG needs at least one segment)")
    if len(ctx.sources) > 1 and any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in ctx.sources):
        raise FindingsError("sources: SEG needs one multi-frame source or single-frame sources, not a mix")
    for i, ds in enumerate(ctx.sources):
        if "FrameOfReferenceUID" not in ds:
            raise FindingsError(f"sources[{i}]: missing FrameOfReferenceUID (needed by SEG)")
    if len({ds.FrameOfReferenceUID for ds in ctx.sources}) > 1:
        raise FindingsError("sources: FrameOfReferenceUID differs between slices (SEG needs one)")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=segment_label(finding),
            segmented_property_category=MORPHOLOGICALLY_ABNORMAL,
            segmented_property_type=HERNIATED_STRUCTURE,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=ctx.algorithm(),
            tracking_uid=ctx.tracking_uid(finding),
            tracking_id=finding.tracking_id,
            # no anatomic region for an unknown level: we do not name a level we do not know
            anatomic_regions=[LEVEL_SITES[finding.level]] if finding.level_known else None,
            display_color=segment_colour(number),
        )
        for number, finding in enumerate(herniations, start=1)
    ]
    try:
        seg = hd.seg.Segmentation(
            source_images=list(ctx.sources),
            pixel_array=_pixel_array(ctx, herniations),
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            **ctx.identity("seg"),
            **ctx.equipment(),
            content_label="HERNIATION",
            content_description="MedDet herniation boxes (AI, not for diagnosis)",
            series_description="MedDet herniations (AI, SEG)",
        )
    except (ValueError, AttributeError, KeyError) as exc:
        raise FindingsError(f"sources: cannot derive a SEG from them: {exc}") from exc
    return finish(seg, ctx, "seg")
