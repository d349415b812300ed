"""DICOM result objects built with highdicom from the findings dict (DESIGN.md sections 3-4).

``build_result_objects`` is pure (datasets in, datasets out); ``dicom_node.analysis`` writes
them in the one results layout (findings.json, ``NN-<kind>.dcm``, objects.json), as ``meddet
predict`` and the worker do.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydicom import Dataset

from dicom_node.kinds import RESULT_KINDS as KINDS
from dicom_node.kinds import SR_KINDS, ResultKind, SrKind
from dicom_node.logging import get_logger
from dicom_node.results.common import FindingsError, ResultContext

__all__ = ["KINDS", "SR_KINDS", "FindingsError", "build_result_objects"]

log = get_logger(__name__)


def build_result_objects(
    findings: Mapping[str, Any],
    sources: Sequence[Dataset],
    kinds: Sequence[ResultKind] = ("sr", "seg", "gsps"),
    sr_kind: SrKind = "3d",
) -> list[tuple[ResultKind, Dataset]]:
    """Result objects in ``kinds`` order as ``(kind, dataset)``; KOS references the others.

    A SEG is skipped (and logged) when there is no herniation to segment; ``sc`` may give one
    image per key slice. Raises FindingsError naming the bad field or missing attribute.
    """
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise FindingsError(f"kinds: {unknown} not among {list(KINDS)}")
    if sr_kind not in SR_KINDS:
        raise FindingsError(f"sr_kind: {sr_kind!r} not one of {list(SR_KINDS)}")
    from dicom_node.results.gsps import build_gsps
    from dicom_node.results.kos import build_kos
    from dicom_node.results.sc import build_sc
    from dicom_node.results.seg import build_seg
    from dicom_node.results.sr import build_sr

    ctx = ResultContext.create(findings, sources)
    out: list[tuple[ResultKind, Dataset]] = []
    for kind in [k for k in kinds if k != "kos"] + [k for k in kinds if k == "kos"]:
        try:
            if kind == "sr":
                out.append(("sr", build_sr(ctx, sr_kind)))
            elif kind == "seg" and not ctx.herniations:
                log.info("seg skipped: no herniation", series_uid=ctx.series_instance_uid)
            elif kind == "seg":
                out.append(("seg", build_seg(ctx)))
            elif kind == "gsps":
                out.append(("gsps", build_gsps(ctx)))
            elif kind == "sc":
                out.extend(("sc", ds) for ds in build_sc(ctx))
            elif kind == "kos":
                out.append(("kos", build_kos(ctx, [ds for _, ds in out])))
        except (AttributeError, KeyError, TypeError) as exc:  # highdicom on odd sources
            raise FindingsError(f"{kind}: cannot build from these sources: {exc!r}") from exc
    return out
