"""The kinds of result object and of SR, defined once (settings, destinations and results use them).

No imports from the rest of the package, so the configuration and ``dicom_node.results`` can
both import this without a cycle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, TypeGuard, get_args

#: A result object the node can write and send (the order is the order they are built in).
ResultKind = Literal["sr", "seg", "gsps", "sc", "kos"]
#: The SR IOD of the report: Enhanced 3D SR (88.34), Comprehensive SR (88.33), Enhanced SR (88.22).
SrKind = Literal["3d", "comprehensive", "enhanced"]

RESULT_KINDS: tuple[ResultKind, ...] = get_args(ResultKind)
SR_KINDS: tuple[SrKind, ...] = get_args(SrKind)


def is_result_kind(value: object) -> TypeGuard[ResultKind]:
    return value in RESULT_KINDS


def result_kinds(values: Sequence[str]) -> list[ResultKind]:
    """``values`` as result kinds, in order; ValueError naming unknown ones and the allowed list."""
    kinds = [v for v in values if is_result_kind(v)]
    unknown = [v for v in values if not is_result_kind(v)]
    if unknown:
        raise ValueError(f"unknown result kinds {', '.join(map(repr, unknown))}; allowed: {', '.join(RESULT_KINDS)}")
    return kinds


def sr_kind(value: str) -> SrKind:
    """``value`` as an SR kind; ValueError with the allowed list."""
    for kind in SR_KINDS:
        if value == kind:
            return kind
    raise ValueError(f"unknown SR kind {value!r}; allowed: {', '.join(SR_KINDS)}")
