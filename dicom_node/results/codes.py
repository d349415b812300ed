"""The codes, names and UIDs of our result objects (constants and one pure function).

Codes are checked against pydicom's dictionary (``pydicom.sr.codedict.codes``); the two that
pydicom does not carry are SNOMED CT concepts defined here with their SCTID and preferred term.
No private (``99...``) codes: dciodvfy warns about every private coding scheme designator.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping

from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

MANUFACTURER = "MedDet Node"
DEVICE_SERIAL_NUMBER = "meddet-node"

# SNOMED CT concepts not (yet) in pydicom's dictionary.
#: 73589001 |Herniation of intervertebral disc (disorder)|
HERNIATION = Code("73589001", "SCT", "Herniation of intervertebral disc")
#: 414403008 |Herniated structure (morphologic abnormality)|, a child of 49755003.
HERNIATED_STRUCTURE = Code("414403008", "SCT", "Herniated structure")

NORMAL = codes.SCT.Normal  # 17621005
MORPHOLOGICALLY_ABNORMAL = codes.SCT.MorphologicallyAbnormalStructure  # 49755003 (CID 7150)
ANATOMICAL_STRUCTURE = codes.SCT.AnatomicalStructure  # 91723000 (CID 7150)
CERTAINTY_OF_FINDING = codes.DCM.CertaintyOfFinding  # 111012
PERCENT = codes.UCUM.Percent
MRI_REPORT = codes.LN.MRIReport  # LN 25056-3, procedure reported
ARTIFICIAL_INTELLIGENCE = codes.DCM.ArtificialIntelligence  # 123110, algorithm family
KEY_OBJECT_TITLE = codes.DCM.OfInterest  # 113000 (CID 7010)
MILLIMETER = codes.UCUM.Millimeter
COMMENT = codes.DCM.Comment  # 121106, TEXT: why a disc's level is unknown

#: NUM, %, every disc of a calibrated document: the calibrated probability that the disc is
#: herniated (whatever the finding says; Certainty of Finding is about the stated finding).
HERNIATION_PROBABILITY = codes.DCM.Probability  # 122157
#: NUM, %, every disc of a calibrated document: the operating point, the probability at which
#: herniation is called (the whole operating point is also in the Algorithm Parameters).
HERNIATION_THRESHOLD = codes.DCM.ThresholdValue  # 122411
#: NUM, mm: posterior protrusion of the disc beyond the disc margin, estimated by the model.
PROTRUSION = codes.DCM.Distance  # 121206 (CID 7470 Linear Measurements)

#: The level of a disc that could not be named (no C2 anchor, inconsistent chain).
UNKNOWN_LEVEL = "unknown"
#: Finding sites: "Intervertebral disc structure of Nth cervical vertebra" (the disc below it).
LEVEL_SITES: Mapping[str, Code] = {
    "C2-C3": codes.SCT.C2C3Disc,  # 1078209008
    "C3-C4": codes.SCT.C3C4Disc,  # 58820006
    "C4-C5": codes.SCT.C4C5Disc,  # 49400002
    "C5-C6": codes.SCT.C5C6Disc,  # 73959003
    "C6-C7": codes.SCT.C6C7Disc,  # 75095006
    "C7-T1": codes.SCT.C7T1Disc,  # 37414007
}
LABELS: Mapping[str, Code] = {"herniation": HERNIATION, "normal_disc": NORMAL, "normal": NORMAL}

#: Series numbers of our new series, one per kind (a result series has one modality).
SERIES_NUMBERS: Mapping[str, int] = {"sr": 9901, "seg": 9902, "gsps": 9903, "sc": 9904, "kos": 9905}

_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:meddet-node:result-objects")


def derived_uid(*parts: str) -> str:
    """A ``2.25`` UID from a UUID5 of ``parts``: same inputs, same UID (re-runs, re-sends).

    pydicom's ``generate_uid(prefix=None, entropy_srcs=...)`` ignores the entropy and returns a
    random UUID4, so it cannot be used here.
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '|'.join(parts)).int}"
