"""Secondary Capture with burned-in boxes and texts: one image per key slice (BurnedInAnnotation YES).

For the oldest viewers, which show neither SR nor presentation states. Pixels are the source
slice windowed to 8 bits (1st..99th percentile), boxes and labels drawn in white with Pillow.
"""

from __future__ import annotations

from collections import defaultdict

import highdicom as hd
import numpy as np
from pydicom import Dataset

from dicom_node.results.codes import (
    MANUFACTURER,
    SERIES_NUMBERS,
)
from dicom_node.results.common import (
    Finding,
    FindingsError,
    ResultContext,
    finish,
)


def burn_in(pixels: np.ndarray, findings: list[Finding]) -> np.ndarray:
    """Window a 2-D slice to uint8 and draw each finding's box and text, shape (rows, columns)."""
    from PIL import Image, ImageDraw

    data = pixels.astype(np.float32)
    low, high = np.percentile(data, [1.0, 99.0])
    scaled = np.clip((data - low) / max(float(high - low), 1e-6), 0.0, 1.0) * 230.0
    image = Image.fromarray(scaled.astype(np.uint8), mode="L")
    draw = ImageDraw.Draw(image)
    for finding in findings:
        x0, y0, x1, y1 = finding.box
        draw.rectangle([x0, y0, x1, y1], outline=255, width=1)
        draw.text((x0, max(y0 - 11.0, 0.0)), finding.text, fill=255)
    return np.asarray(image, dtype=np.uint8)


def _slice_pixels(source: Dataset, frame: int) -> np.ndarray:
    try:
        array = source.pixel_array
    except (AttributeError, ValueError, RuntimeError) as exc:
        raise FindingsError(f"sources: cannot decode pixels of {source.SOPInstanceUID}: {exc}") from exc
    return array[frame - 1] if array.ndim == 3 else array


def build_sc(ctx: ResultContext) -> list[Dataset]:
    """One SC image per key slice with herniations (or the middle slice when there are none)."""
    per_slice: dict[tuple[str, int], list[Finding]] = defaultdict(list)
    for finding in ctx.herniations:
        per_slice[(finding.sop_instance_uid, finding.frame)].append(finding)
    if not per_slice:
        middle = ctx.sources[len(ctx.sources) // 2]
        per_slice[(middle.SOPInstanceUID, 1)] = []
    images = []
    for number, ((sop_uid, frame), findings) in enumerate(sorted(per_slice.items()), start=1):
        source = ctx.source(sop_uid)
        spacing = source.get("PixelSpacing")
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=burn_in(_slice_pixels(source, frame), findings),
            photometric_interpretation=hd.PhotometricInterpretationValues.MONOCHROME2,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=ctx.uid("sc", "series"),
            series_number=SERIES_NUMBERS["sc"],
            sop_instance_uid=ctx.uid("sc", sop_uid, str(frame)),
            instance_number=number,
            manufacturer=MANUFACTURER,
            # highdicom annotates pixel_spacing as tuple[int, int]; it takes (and writes) floats
            pixel_spacing=tuple(float(v) for v in spacing) if spacing else None,  # type: ignore[arg-type]
            patient_orientation=("A", "F"),
            transfer_syntax_uid="1.2.840.10008.1.2.1",
            series_description="MedDet findings (AI, burned in)",
        )
        sc.BurnedInAnnotation = "YES"
        sc.ImageComments = "; ".join(f.text for f in findings) or "no herniation detected"
        sc.DerivationDescription = "MedDet boxes burned into the source slice"
        source_ref = Dataset()
        source_ref.ReferencedSOPClassUID = source.SOPClassUID
        source_ref.ReferencedSOPInstanceUID = source.SOPInstanceUID
        if int(source.get("NumberOfFrames", 1) or 1) > 1:
            source_ref.ReferencedFrameNumber = frame
        sc.SourceImageSequence = [source_ref]
        images.append(finish(sc, ctx, "sc"))
    return images
