"""DIMSE status codes the node returns, by name (PS3.4 Annex B.2.3 and PS3.7 Annex C)."""

from __future__ import annotations

SUCCESS = 0x0000
#: Warning: the instance was stored, but coerced or with elements out of spec (PS3.4 B.2.3).
WARNING_ELEMENTS_DISCARDED = 0xB006
#: Refused: out of resources (the spool disk is above its watermark).
OUT_OF_RESOURCES = 0xA700
#: Refused: out of resources, for this instance: it exceeds a configured limit
#: (MEDDET_MAX_INSTANCE_BYTES, as received or inflated; MEDDET_MAX_PIXELS). The reason is
#: in the response's Error Comment or the quarantine record.
INSTANCE_TOO_LARGE = 0xA701
#: Error: data set does not match SOP class (missing UIDs, no pixels, zero rows).
DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
#: Error: cannot understand (unparseable data set).
CANNOT_UNDERSTAND = 0xC000
#: Failure: processing failure (an unexpected error while storing; nothing was acknowledged).
PROCESSING_FAILURE = 0x0110
#: Refused: SOP class not supported.
SOP_CLASS_NOT_SUPPORTED = 0x0122


def is_success(status: int) -> bool:
    return status == SUCCESS


def is_warning(status: int) -> bool:
    return status in (0x0001, 0x0107, 0x0116) or (status & 0xF000) == 0xB000


def is_failure(status: int) -> bool:
    return not (is_success(status) or is_warning(status) or status in (0xFF00, 0xFF01))
