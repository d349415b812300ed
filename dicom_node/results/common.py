"""What every result object shares: the validated findings and sources (``ResultContext``),
the algorithm's identification and the attributes every object carries (``finish``). The
codes, names and UIDs are in ``codes``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import highdicom as hd
import numpy as np
from pydicom import Dataset

from dicom_node.results.codes import (
    ARTIFICIAL_INTELLIGENCE,
    DEVICE_SERIAL_NUMBER,
    LABELS,
    LEVEL_SITES,
    MANUFACTURER,
    SERIES_NUMBERS,
    UNKNOWN_LEVEL,
    derived_uid,
)
from dicom_node.results.sources import prepare_sources

#: Tolerance of the label-vs-threshold check: probabilities may be rounded by the producer.
_THRESHOLD_TOLERANCE = 0.005


class FindingsError(ValueError):
    """The findings dict or the source datasets cannot make a valid result object."""


@dataclass(frozen=True)
class OperatingPoint:
    """The calibrated decision rule: herniation when the probability reaches ``threshold``."""

    threshold: float
    target_sensitivity: float | None = None
    method: str | None = None  # calibration method, e.g. "platt"
    data: str | None = None  # the data it was calibrated on

    def parameters(self) -> dict[str, str]:
        """``name -> value`` as written into Algorithm Parameters (SR TID 4019 and SEG)."""
        out = {"herniation_threshold": f"{self.threshold:g}"}
        if self.target_sensitivity is not None:
            out["target_sensitivity"] = f"{self.target_sensitivity:g}"
        if self.method:
            out["calibration"] = self.method
        if self.data:
            out["calibration_data"] = self.data
        return out


@dataclass(frozen=True)
class Finding:
    """One disc: its level (or ``unknown``), label, certainty and the box on its key slice.

    ``score`` is what the findings document says; ``probability`` the calibrated herniation
    probability when the document has one (then ``score`` equals it). ``unknown_index`` numbers
    the discs whose level is unknown (1, 2... in document order; 0 for a named level).
    """

    level: str
    label: str
    score: float
    sop_instance_uid: str
    box: tuple[float, float, float, float]
    frame: int = 1  # 1-based frame of a multi-frame source
    probability: float | None = None
    protrusion_mm: float | None = None
    reason: str | None = None  # why the level is unknown
    unknown_index: int = 0

    @property
    def is_herniation(self) -> bool:
        return self.label == "herniation"

    @property
    def level_known(self) -> bool:
        return self.level != UNKNOWN_LEVEL

    @property
    def certainty(self) -> float:
        """Certainty (0..1) of the finding as stated: herniation p, normal 1 - p.

        Without a calibrated probability (documents before calibration) the score, which was
        already the certainty of the stated label.
        """
        if self.probability is None:
            return self.score
        return self.probability if self.is_herniation else 1.0 - self.probability

    @property
    def name(self) -> str:
        """``C5-C6``, or ``disc (level unknown)``: never a level we do not know."""
        return self.level if self.level_known else "disc (level unknown)"

    @property
    def tracking_id(self) -> str:
        """Tracking Identifier: ``C5-C6 disc``, ``unknown disc 1``, ``unknown disc 2``..."""
        return f"{self.level} disc" if self.level_known else f"unknown disc {self.unknown_index}"

    @property
    def tracking_key(self) -> str:
        """What the tracking UID is derived from: the level, or ``unknown-<n>``."""
        return self.level if self.level_known else f"{UNKNOWN_LEVEL}-{self.unknown_index}"

    @property
    def text(self) -> str:
        """What a viewer shows beside the box: ``C5-C6 herniation 91%``,
        ``disc (level unknown) herniation 91%``."""
        label = "herniation" if self.is_herniation else "normal"
        return f"{self.name} {label} {round(self.certainty * 100)}%"

    def polyline(self) -> np.ndarray:
        """The box as a closed POLYLINE of (column, row) points, shape (5, 2)."""
        x0, y0, x1, y1 = self.box
        return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1], [x0, y0]], dtype=np.float32)


@dataclass(frozen=True)
class ResultContext:
    """Validated input of every builder: findings, the source datasets, the model, the UIDs."""

    study_instance_uid: str
    series_instance_uid: str
    model_name: str
    model_version: str
    findings: tuple[Finding, ...]
    sources: tuple[Dataset, ...]
    operating_point: OperatingPoint | None = None

    @classmethod
    def create(cls, findings: Mapping[str, Any], sources: Sequence[Dataset]) -> ResultContext:
        """Validate ``findings`` (DESIGN.md section 3) against ``sources``; errors name the field."""
        if not sources:
            raise FindingsError("sources: at least one source dataset is required")
        for key in ("study_instance_uid", "series_instance_uid", "model", "findings"):
            if key not in findings:
                raise FindingsError(f"findings: missing key {key!r}")
        model = findings["model"]
        if not isinstance(model, Mapping) or not model.get("name") or not model.get("version"):
            raise FindingsError("findings['model']: needs 'name' and 'version'")
        for i, ds in enumerate(sources):
            for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "Rows", "Columns"):
                if keyword not in ds:
                    raise FindingsError(f"sources[{i}]: missing required attribute {keyword}")
            if ds.StudyInstanceUID != findings["study_instance_uid"]:
                raise FindingsError(
                    f"sources[{i}]: StudyInstanceUID {ds.StudyInstanceUID} differs from "
                    f"findings['study_instance_uid'] {findings['study_instance_uid']}"
                )
        operating_point = _parse_operating_point(findings.get("operating_point"))
        levels_info = findings.get("levels")
        if levels_info is not None and not isinstance(levels_info, Mapping):
            raise FindingsError("findings['levels']: must be a mapping")
        default_reason = (levels_info or {}).get("reason") or "disc level unknown"
        sources = prepare_sources(sources)
        by_uid = {ds.SOPInstanceUID: ds for ds in sources}
        if not isinstance(findings["findings"], Sequence):
            raise FindingsError("findings['findings']: must be a list")
        parsed_list = []
        n_unknown = 0
        for i, item in enumerate(findings["findings"]):
            finding = _parse_finding(i, item, by_uid, operating_point, str(default_reason))
            if not finding.level_known:
                n_unknown += 1
                finding = replace(finding, unknown_index=n_unknown)
            parsed_list.append(finding)
        parsed = tuple(parsed_list)
        levels = [f.level for f in parsed if f.level_known]
        if len(set(levels)) != len(levels):
            raise FindingsError(f"findings['findings']: a level appears twice in {levels}")
        return cls(
            study_instance_uid=str(findings["study_instance_uid"]),
            series_instance_uid=str(findings["series_instance_uid"]),
            model_name=str(model["name"]),
            model_version=str(model["version"]),
            findings=parsed,
            sources=tuple(sources),
            operating_point=operating_point,
        )

    def uid(self, kind: str, *extra: str) -> str:
        """Deterministic UID of (source series, model version, kind, extra...)."""
        return derived_uid(self.series_instance_uid, self.model_version, kind, *extra)

    def identity(self, kind: str) -> dict[str, Any]:
        """highdicom keyword arguments of a one-instance object of ``kind`` in its new series."""
        return {
            "series_instance_uid": self.uid(kind, "series"),
            "series_number": SERIES_NUMBERS[kind],
            "sop_instance_uid": self.uid(kind),
            "instance_number": 1,
            "manufacturer": MANUFACTURER,
        }

    def equipment(self) -> dict[str, Any]:
        """highdicom keyword arguments of the Enhanced General Equipment module."""
        return {
            "manufacturer_model_name": self.model_name[:64],
            "software_versions": self.software_version[:64],
            "device_serial_number": DEVICE_SERIAL_NUMBER,
        }

    def tracking_uid(self, finding: Finding | str) -> str:
        """The tracking UID of one disc (its level, or ``unknown-<n>``); SR groups, SEG segments
        and GSPS graphics share it."""
        key = finding.tracking_key if isinstance(finding, Finding) else finding
        return self.uid("tracking", key)

    def source(self, sop_instance_uid: str) -> Dataset:
        for ds in self.sources:
            if ds.SOPInstanceUID == sop_instance_uid:
                return ds
        raise KeyError(sop_instance_uid)

    @property
    def herniations(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.is_herniation)

    @property
    def software_version(self) -> str:
        from importlib.metadata import PackageNotFoundError, version

        try:
            node = version("meddet-node")
        except PackageNotFoundError:
            node = "0"
        return f"meddet-node {node}; {self.model_name} {self.model_version}"

    @property
    def algorithm_parameters(self) -> dict[str, str] | None:
        """The operating point as ``name -> value``; None for documents without one."""
        return self.operating_point.parameters() if self.operating_point else None

    def algorithm(self) -> hd.AlgorithmIdentificationSequence:
        """Algorithm identification for SEG segments (family: Artificial Intelligence), with the
        operating point as Algorithm Parameters when there is one."""
        return hd.AlgorithmIdentificationSequence(
            name=self.model_name,
            family=ARTIFICIAL_INTELLIGENCE,
            version=self.model_version,
            parameters=self.algorithm_parameters,
        )

    def sr_algorithm(self) -> hd.sr.AlgorithmIdentification:
        """Algorithm identification (TID 4019) for SR measurement groups; the operating point
        becomes Algorithm Parameters (111002, DCM) items ``herniation_threshold=0.31``..."""
        params = self.algorithm_parameters
        return hd.sr.AlgorithmIdentification(
            name=self.model_name,
            version=self.model_version,
            family=ARTIFICIAL_INTELLIGENCE,
            manufacturer=MANUFACTURER,
            parameters=[f"{k}={v}" for k, v in params.items()] if params else None,
        )


def _fraction(where: str, value: Any) -> float:
    """A number within [0, 1], or FindingsError naming ``where``."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise FindingsError(f"{where}: {value!r} is not a number") from None
    if not 0.0 <= number <= 1.0:  # also rejects NaN
        raise FindingsError(f"{where}: {number} is not within [0, 1]")
    return number


def _parse_operating_point(item: Any) -> OperatingPoint | None:
    """``findings['operating_point']`` (absent or null in documents before calibration)."""
    if item is None:
        return None
    where = "findings['operating_point']"
    if not isinstance(item, Mapping):
        raise FindingsError(f"{where}: must be a mapping")
    if item.get("threshold") is None:
        raise FindingsError(f"{where}: missing key 'threshold'")
    sensitivity = item.get("target_sensitivity")
    return OperatingPoint(
        threshold=_fraction(f"{where}['threshold']", item["threshold"]),
        target_sensitivity=(None if sensitivity is None else _fraction(f"{where}['target_sensitivity']", sensitivity)),
        method=str(item["method"]) if item.get("method") else None,
        data=str(item["data"]) if item.get("data") else None,
    )


def _parse_finding(
    i: int,
    item: Any,
    by_uid: Mapping[str, Dataset],
    operating_point: OperatingPoint | None = None,
    default_reason: str = "disc level unknown",
) -> Finding:
    where = f"findings['findings'][{i}]"
    if not isinstance(item, Mapping):
        raise FindingsError(f"{where}: must be a mapping")
    for key in ("level", "label", "sop_instance_uid", "box"):
        if key not in item:
            raise FindingsError(f"{where}: missing key {key!r}")
    if item.get("score") is None and item.get("probability") is None:
        raise FindingsError(f"{where}: missing key 'score' (or 'probability')")
    if item["level"] not in LEVEL_SITES and item["level"] != UNKNOWN_LEVEL:
        raise FindingsError(f"{where}['level']: {item['level']!r} not one of {[*LEVEL_SITES, UNKNOWN_LEVEL]}")
    if item["label"] not in LABELS:
        raise FindingsError(f"{where}['label']: {item['label']!r} not one of {list(LABELS)}")
    label = "herniation" if item["label"] == "herniation" else "normal_disc"
    probability = None
    if item.get("probability") is not None:
        probability = _fraction(f"{where}['probability']", item["probability"])
    # New documents: score == probability (kept for old readers); old ones have score only.
    if item.get("score") is not None:
        score = _fraction(f"{where}['score']", item["score"])
    else:
        score = probability if probability is not None else 0.0  # one of them is present
    if probability is not None and operating_point is not None:
        # The label is the call at the operating point; a contradiction would make the SR
        # say "herniation" beside a probability below the threshold that defines it.
        t = operating_point.threshold
        if (label == "herniation" and probability < t - _THRESHOLD_TOLERANCE) or (
            label == "normal_disc" and probability >= t + _THRESHOLD_TOLERANCE
        ):
            raise FindingsError(
                f"{where}['label']: {item['label']!r} contradicts probability {probability} "
                f"at the operating point threshold {t}"
            )
    protrusion = item.get("protrusion_mm")
    if protrusion is not None:
        try:
            protrusion = float(protrusion)
        except (TypeError, ValueError):
            raise FindingsError(f"{where}['protrusion_mm']: {protrusion!r} is not a number") from None
        if not math.isfinite(protrusion) or protrusion < 0:
            raise FindingsError(f"{where}['protrusion_mm']: {protrusion} is not a distance >= 0")
    reason = None
    if item["level"] == UNKNOWN_LEVEL:
        reason = str(item.get("reason") or default_reason)
    source = by_uid.get(item["sop_instance_uid"])
    if source is None:
        raise FindingsError(f"{where}['sop_instance_uid']: {item['sop_instance_uid']} is not among the sources")
    box = tuple(float(v) for v in item["box"])
    if len(box) != 4 or not (box[0] < box[2] and box[1] < box[3]):
        raise FindingsError(f"{where}['box']: {item['box']} is not [x0, y0, x1, y1] with x0<x1, y0<y1")
    if box[0] < 0 or box[1] < 0 or box[2] > source.Columns or box[3] > source.Rows:
        raise FindingsError(f"{where}['box']: {item['box']} lies outside the {source.Columns}x{source.Rows} image")
    n_frames = int(source.get("NumberOfFrames", 1) or 1)
    frame = int(item.get("frame", 1))
    if n_frames > 1 and "frame" not in item:
        raise FindingsError(
            f"{where}['frame']: source {source.SOPInstanceUID} has {n_frames} frames; name the 1-based frame of the box"
        )
    if not 1 <= frame <= n_frames:
        raise FindingsError(f"{where}['frame']: {frame} not within 1..{n_frames}")
    return Finding(
        level=str(item["level"]),
        label=label,
        score=score,
        sop_instance_uid=str(item["sop_instance_uid"]),
        box=box,  # four floats: narrowed by the len() check above
        frame=frame,
        probability=probability,
        protrusion_mm=protrusion,
        reason=reason,
    )


def finish(ds: Dataset, ctx: ResultContext, kind: str) -> Dataset:
    """Attributes every result object carries, after highdicom built it."""
    charset = ctx.sources[0].get("SpecificCharacterSet")  # made safe by prepare_sources
    if charset is not None:
        ds.SpecificCharacterSet = charset
    elif "SpecificCharacterSet" in ds:
        del ds.SpecificCharacterSet
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = ctx.model_name[:64]
    ds.SoftwareVersions = ctx.software_version[:64]
    if "DeviceSerialNumber" not in ds:
        ds.DeviceSerialNumber = DEVICE_SERIAL_NUMBER
    if kind in ("seg", "gsps", "sc"):  # General Series; SR Document Series has no body part
        # Our findings are cervical disc levels, so the body part is known even when the
        # source omits it (dciodvfy then wants Laterality on SC images).
        ds.BodyPartExamined = ctx.sources[0].get("BodyPartExamined") or "CSPINE"
    if "SeriesDescription" not in ds:
        ds.SeriesDescription = f"MedDet {kind.upper()} (not for diagnosis)"
    return ds
