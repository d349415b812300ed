"""Make source datasets fit to derive from, without touching the caller's datasets.

Real series are imperfect: a declared SpecificCharacterSet nobody knows, Type 2 patient/study
attributes left out, an empty SliceThickness. highdicom (rightly) refuses such sources, so we
derive from copies with those gaps filled in the least inventive way: a charset we can encode
(UTF-8), empty values for Type 2 attributes, the slice thickness from the slice positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from copy import copy as shallow_copy

import numpy as np
from highdicom.enum import SpecificCharacterSetValues
from pydicom import Dataset

from dicom_node.logging import get_logger

log = get_logger(__name__)

UTF8 = "ISO_IR 192"
_KNOWN_CHARSETS = {v.value for v in SpecificCharacterSetValues}

#: Type 2 attributes of the Patient and General Study modules that our objects copy.
TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)

_OTHER_COPIED_TEXT = ("StudyDescription", "InstitutionName", "IssuerOfPatientID")


def safe_charset(ds: Dataset) -> str | list[str] | None:
    """``ds``'s SpecificCharacterSet when every term is a known one, else UTF-8 (ISO_IR 192).

    No declared charset (the default repertoire) stays undeclared unless the copied text is not
    ASCII, which only UTF-8 can then carry.
    """
    value = ds.get("SpecificCharacterSet")
    if value is None:
        texts = (str(ds.get(k) or "") for k in (*TYPE2_PATIENT_STUDY, *_OTHER_COPIED_TEXT))
        return None if all(t.isascii() for t in texts) else UTF8
    terms = [value] if isinstance(value, str) else list(value)
    if terms and all(t.strip() in _KNOWN_CHARSETS for t in terms if t):
        return value if isinstance(value, str) else terms
    return UTF8


def _slice_gap(sources: Sequence[Dataset]) -> float | None:
    """The distance between the first two slice positions, or None."""
    if len(sources) < 2 or not all("ImagePositionPatient" in ds for ds in sources[:2]):
        return None
    a, b = (np.asarray(ds.ImagePositionPatient, dtype=float) for ds in sources[:2])
    gap = float(np.linalg.norm(b - a))
    return round(gap, 4) if gap > 0 else None


def _needs_copy(ds: Dataset, charset: str | list[str] | None) -> bool:
    return (
        ds.get("SpecificCharacterSet") != charset
        or any(k not in ds for k in TYPE2_PATIENT_STUDY)
        or ("SliceThickness" in ds and ds.SliceThickness in (None, ""))
        or ("NumberOfFrames" not in ds and "SliceThickness" not in ds)
    )


def prepare_sources(sources: Sequence[Dataset]) -> tuple[Dataset, ...]:
    """The sources, or header copies of them with the gaps above filled (pixels are shared)."""
    charset = safe_charset(sources[0]) if sources else None
    gap = _slice_gap(sources)
    out = []
    for ds in sources:
        if not _needs_copy(ds, charset):
            out.append(ds)
            continue
        # Iterating decodes text values with the declared charset (pydicom falls back to its
        # default for unknown ones), so the copy holds str values we can re-encode. Elements
        # are copied (values shared), so setting one leaves the caller's dataset alone.
        copy = Dataset({elem.tag: shallow_copy(elem) for elem in ds})
        if hasattr(ds, "file_meta"):
            copy.file_meta = ds.file_meta
        if charset is not None and ds.get("SpecificCharacterSet") != charset:
            log.warning(
                "unknown SpecificCharacterSet; writing results as UTF-8",
                sop_instance_uid=ds.get("SOPInstanceUID"),
                declared=str(ds.get("SpecificCharacterSet")),
            )
            copy.SpecificCharacterSet = charset
        for keyword in TYPE2_PATIENT_STUDY:
            if keyword not in copy:
                setattr(copy, keyword, None)
        if "NumberOfFrames" not in copy and copy.get("SliceThickness") in (None, "") and gap:
            copy.SliceThickness = gap
        out.append(copy)
    return tuple(out)
