"""TID 1500 Measurement Report: per disc, a planar ROI group (TID 1410) and a measurement group
(TID 1501) that share the disc's tracking identifier and UID.

The planar ROI group holds the box as an Image Region (POLYLINE on the key slice, with its
source image), the qualitative finding (Finding = herniation or normal, with its category), the
finding site, the algorithm (TID 4019, with the operating point as Algorithm Parameters) and a
TEXT Comment with the label a reader sees ("C5-C6 herniation 91%"). The measurement group holds
the same finding, site and algorithm with the numbers: the Certainty of Finding in percent;
calibrated documents add the herniation probability and its threshold (NUM, %), and the
protrusion (NUM, mm) when known. A disc whose level is unknown has no finding site; a second
TEXT Comment says why.

Why two groups: OHIF (cornerstone's SR adapters) loads a planar ROI group as a measurement only
when the group holds no NUM without coordinates of its own, and TID 1410 allows none; a TID 1501
group's NUMs are not drawn. Split this way, OHIF lists one measurement per disc, labelled with the
Comment, and its SR overlay (which merges groups by tracking UID) shows the numbers beside the box
(docs/conformance.md, section 6). The tracking UID is what ties the two, as TID 1500 intends.
The document is PRELIMINARY and UNVERIFIED: an AI result, not a signed report.
"""

from __future__ import annotations

import highdicom as hd
from pydicom import Dataset
from pydicom.sr.codedict import codes

from dicom_node.kinds import SrKind
from dicom_node.results.codes import (
    ANATOMICAL_STRUCTURE,
    CERTAINTY_OF_FINDING,
    COMMENT,
    HERNIATION_PROBABILITY,
    HERNIATION_THRESHOLD,
    LABELS,
    LEVEL_SITES,
    MANUFACTURER,
    MILLIMETER,
    MORPHOLOGICALLY_ABNORMAL,
    MRI_REPORT,
    PERCENT,
    PROTRUSION,
    SERIES_NUMBERS,
)
from dicom_node.results.common import (
    Finding,
    FindingsError,
    ResultContext,
    finish,
)

SR_CLASSES: dict[str, type[hd.sr.Comprehensive3DSR | hd.sr.ComprehensiveSR | hd.sr.EnhancedSR]] = {
    "3d": hd.sr.Comprehensive3DSR,  # 1.2.840.10008.5.1.4.1.1.88.34
    "comprehensive": hd.sr.ComprehensiveSR,  # 1.2.840.10008.5.1.4.1.1.88.33
    "enhanced": hd.sr.EnhancedSR,  # 1.2.840.10008.5.1.4.1.1.88.22
}


def _groups(
    ctx: ResultContext, finding: Finding
) -> list[hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations | hd.sr.MeasurementsAndQualitativeEvaluations]:
    """The disc's planar ROI group (box, finding, site, label) and its measurement group (NUMs)."""
    source = ctx.source(finding.sop_instance_uid)
    frames = [finding.frame] if int(source.get("NumberOfFrames", 1) or 1) > 1 else None
    region = hd.sr.ImageRegion(
        graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
        graphic_data=finding.polyline(),
        source_image=hd.sr.SourceImageForRegion(
            referenced_sop_class_uid=source.SOPClassUID,
            referenced_sop_instance_uid=source.SOPInstanceUID,
            referenced_frame_numbers=frames,
        ),
    )
    common = dict(
        finding_type=LABELS[finding.label],
        finding_category=MORPHOLOGICALLY_ABNORMAL if finding.is_herniation else ANATOMICAL_STRUCTURE,
        # A disc whose level is unknown gets no site: we do not name a level we do not know.
        finding_sites=(
            [hd.sr.FindingSite(anatomic_location=LEVEL_SITES[finding.level])] if finding.level_known else None
        ),
        algorithm_id=ctx.sr_algorithm(),
    )
    roi = hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(ctx, finding), referenced_region=region, **common
    )
    # TID 1410 "$QualType" rows: TEXT answers in the group (CONTAINS). The first is the label
    # viewers show for the region (OHIF takes a group's first Comment as the measurement label).
    comments = [finding.text]
    if not finding.level_known:
        comments.append(f"Disc level unknown: {finding.reason}")
    for text in comments:
        roi[0].ContentSequence.append(
            hd.sr.TextContentItem(name=COMMENT, value=text, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)
        )
    numbers = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=_tracking(ctx, finding), measurements=_measurements(ctx, finding), **common
    )
    return [roi, numbers]


def _tracking(ctx: ResultContext, finding: Finding) -> hd.sr.TrackingIdentifier:
    return hd.sr.TrackingIdentifier(uid=ctx.tracking_uid(finding), identifier=finding.tracking_id)


def _measurements(ctx: ResultContext, finding: Finding) -> list[hd.sr.Measurement]:
    """Certainty of Finding; with calibration the herniation probability and its threshold;
    the protrusion in mm when the document has it."""
    values = [(CERTAINTY_OF_FINDING, finding.certainty * 100.0, PERCENT)]
    if finding.probability is not None:
        values.append((HERNIATION_PROBABILITY, finding.probability * 100.0, PERCENT))
    if ctx.operating_point is not None:
        values.append((HERNIATION_THRESHOLD, ctx.operating_point.threshold * 100.0, PERCENT))
    if finding.protrusion_mm is not None:
        values.append((PROTRUSION, finding.protrusion_mm, MILLIMETER))
    return [hd.sr.Measurement(name=name, value=round(value, 2), unit=unit) for name, value, unit in values]


def build_sr(ctx: ResultContext, sr_kind: SrKind = "3d") -> Dataset:
    """The TID 1500 report as the SR IOD named by ``sr_kind`` (3d, comprehensive, enhanced)."""
    if sr_kind not in SR_CLASSES:
        raise FindingsError(f"sr_kind: {sr_kind!r} not one of {list(SR_CLASSES)}")
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=ctx.uid("device"),
            name=ctx.model_name,
            manufacturer_name=MANUFACTURER,
            model_name=f"{ctx.model_name} {ctx.model_version}",
        ),
    )
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=MRI_REPORT,
        imaging_measurements=[group for f in ctx.findings for group in _groups(ctx, f)] or None,
    )
    evidence = list(ctx.sources)
    sr = SR_CLASSES[sr_kind](
        evidence=evidence,
        content=report,
        series_instance_uid=ctx.uid("sr", "series"),
        series_number=SERIES_NUMBERS["sr"],
        sop_instance_uid=ctx.uid("sr", sr_kind),
        instance_number=1,
        manufacturer=MANUFACTURER,
        is_complete=False,
        is_final=False,
        is_verified=False,
        series_description="MedDet findings (AI, preliminary)",
    )
    return finish(sr, ctx, "sr")
