"""Storage SCU: send result objects to one destination over one association per attempt.

Presentation contexts are proposed for exactly the SOP classes sent, in each object's transfer
syntax (plus implicit VR little endian for uncompressed ones, the syntax every SCP accepts).
Every C-STORE response is checked: only a success or warning status counts as stored. Objects
not stored because the peer was unreachable, aborted, or out of resources are retried with
exponential backoff on a new association; refusals (SOP class not accepted, a failure status
such as "cannot understand") are final. A ``?tls=1`` destination is reached over TLS, its
certificate verified (``MEDDET_DESTINATION_TLS_CA``, else the system CAs). With a
``session_factory`` every attempt of every object becomes a ``SendAttempt`` row.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pydicom import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import statuses
from dicom_node.destinations import Destination
from dicom_node.logging import get_logger

log = get_logger(__name__)

# Outcomes as recorded in SendAttempt.outcome.
SUCCESS = "success"
WARNING = "warning"
FAILURE = "failure"
UNREACHABLE = "unreachable"
STORED_OUTCOMES = (SUCCESS, WARNING)

#: Out-of-resources statuses (0xA7xx) are transient: the object is retried.
_OUT_OF_RESOURCES_MASK = 0xA700

_KIND_BY_MODALITY = {"SR": "sr", "SEG": "seg", "PR": "gsps", "OT": "sc", "KO": "kos"}
_UNCOMPRESSED = {ExplicitVRLittleEndian, ImplicitVRLittleEndian}


@dataclass(frozen=True)
class ObjectOutcome:
    """What finally happened to one object."""

    sop_instance_uid: str
    kind: str
    outcome: str
    status: int | None = None
    error: str | None = None

    @property
    def stored(self) -> bool:
        return self.outcome in STORED_OUTCOMES


@dataclass(frozen=True)
class SendReport:
    """The result of ``send_objects``: one outcome per object, and the association attempts."""

    destination: str
    outcomes: tuple[ObjectOutcome, ...]
    associations: int = 0
    errors: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        """True when every object was stored (success or warning status)."""
        return all(o.stored for o in self.outcomes)

    @property
    def failed(self) -> tuple[ObjectOutcome, ...]:
        return tuple(o for o in self.outcomes if not o.stored)

    @property
    def summary(self) -> str:
        """One line for logs and the audit trail, e.g. ``2 stored, 1 not: sr failure (...)``."""
        stored = len(self.outcomes) - len(self.failed)
        text = f"{stored} stored, {len(self.failed)} not"
        details = "; ".join(f"{o.kind} {o.outcome} ({o.error})" for o in self.failed)
        return f"{text}: {details}" if details else text


def transfer_syntax(ds: Dataset) -> str:
    """The transfer syntax the object is encoded in (explicit VR little endian if unknown)."""
    meta = getattr(ds, "file_meta", None)
    return str(meta.TransferSyntaxUID) if meta and "TransferSyntaxUID" in meta else ExplicitVRLittleEndian


def requested_contexts(datasets: Sequence[Dataset]) -> dict[str, list[str]]:
    """SOP class -> transfer syntaxes to propose, for exactly the objects sent."""
    contexts: dict[str, list[str]] = {}
    for ds in datasets:
        syntaxes = contexts.setdefault(str(ds.SOPClassUID), [])
        wanted = [transfer_syntax(ds)]
        if wanted[0] in _UNCOMPRESSED:
            wanted.append(ImplicitVRLittleEndian)
        syntaxes.extend(ts for ts in wanted if ts not in syntaxes)
    return contexts


def _kind(item: Dataset | tuple[str, Dataset]) -> tuple[str, Dataset]:
    if isinstance(item, tuple):
        return item
    return _KIND_BY_MODALITY.get(str(item.get("Modality", "")), "other"), item


def _nodelay(event: evt.Event) -> None:
    """Disable Nagle on the association's socket (about 2x faster small PDUs)."""
    sock = event.assoc.dul.socket
    if sock is not None and sock.socket is not None:
        sock.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _outcome_of(status: Dataset) -> tuple[str, int | None, str | None]:
    """Classify one C-STORE response; an empty one means no response (aborted, timed out)."""
    if "Status" not in status:
        return UNREACHABLE, None, "no C-STORE response (association aborted or timed out)"
    code = int(status.Status)
    if statuses.is_success(code):
        return SUCCESS, code, None
    if statuses.is_warning(code):
        return WARNING, code, f"warning status 0x{code:04X}"
    comment = status.get("ErrorComment")
    return FAILURE, code, f"failure status 0x{code:04X}" + (f": {comment}" if comment else "")


def _store_all(assoc: Association, pending: list[tuple[str, Dataset]]) -> list[ObjectOutcome]:
    accepted = {cx.abstract_syntax for cx in assoc.accepted_contexts}
    results = []
    for kind, ds in pending:
        uid = str(ds.SOPInstanceUID)
        if str(ds.SOPClassUID) not in accepted:
            results.append(
                ObjectOutcome(
                    uid,
                    kind,
                    FAILURE,
                    statuses.SOP_CLASS_NOT_SUPPORTED,
                    f"destination did not accept SOP class {ds.SOPClassUID}",
                )
            )
            continue
        if not assoc.is_established:
            results.append(ObjectOutcome(uid, kind, UNREACHABLE, None, "association lost"))
            continue
        try:
            outcome, code, error = _outcome_of(assoc.send_c_store(ds))
        except (ValueError, AttributeError, RuntimeError) as exc:
            outcome, code, error = FAILURE, None, f"cannot send: {exc}"
        results.append(ObjectOutcome(uid, kind, outcome, code, error))
    return results


def _tls_args(destination: Destination) -> tuple[ssl.SSLContext, str] | None:
    """pynetdicom ``tls_args`` for ``destination``: its client context and the name checked."""
    try:
        context = destination.ssl_context()
    except (OSError, ValueError) as exc:
        raise ValueError(f"destination {destination}: cannot load its TLS files: {exc}") from exc
    return None if context is None else (context, destination.host)


def _retriable(outcome: ObjectOutcome) -> bool:
    if outcome.outcome == UNREACHABLE:
        return True
    status = outcome.status
    return outcome.outcome == FAILURE and status is not None and (status & 0xFF00) == _OUT_OF_RESOURCES_MASK


def _record(
    session_factory: sessionmaker[Session] | None,
    job_id: int | None,
    destination: str,
    outcomes: Sequence[ObjectOutcome],
) -> None:
    if session_factory is None:
        return
    from dicom_node.audit.db import transaction
    from dicom_node.audit.models import SendAttempt

    with transaction(session_factory) as session:
        session.add_all(
            SendAttempt(
                job_id=job_id,
                destination=destination,
                sop_instance_uid=o.sop_instance_uid,
                kind=o.kind,
                status=o.status,
                outcome=o.outcome,
                error=o.error,
            )
            for o in outcomes
        )


def send_objects(
    datasets: Sequence[Dataset | tuple[str, Dataset]],
    destination: Destination,
    *,
    calling_ae: str,
    session_factory: sessionmaker[Session] | None = None,
    job_id: int | None = None,
    retries: int = 3,
    backoff: float = 1.0,
    timeout: float = 30.0,
    sleep: Callable[[float], None] = time.sleep,
) -> SendReport:
    """C-STORE ``datasets`` (or ``(kind, dataset)`` pairs) to ``destination``.

    One association per attempt; at most ``retries`` further attempts, waiting
    ``backoff * 2**n`` seconds before attempt n+1, for objects that were not stored because the
    peer was unreachable, aborted or out of resources.
    """
    if not calling_ae or len(calling_ae) > 16:
        raise ValueError(f"calling_ae: {calling_ae!r} must be 1-16 characters")
    if retries < 0 or backoff < 0:
        raise ValueError(f"retries ({retries}) and backoff ({backoff}) must be >= 0")
    where = str(destination)
    tls_args = _tls_args(destination)
    pending = [_kind(item) for item in datasets]
    final: dict[str, ObjectOutcome] = {}
    errors: list[str] = []
    associations = 0
    for attempt in range(retries + 1):
        if attempt:
            sleep(backoff * 2 ** (attempt - 1))
        ae = AE(ae_title=calling_ae)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
        for sop_class, syntaxes in requested_contexts([ds for _, ds in pending]).items():
            ae.add_requested_context(sop_class, syntaxes)
        associations += 1
        assoc = ae.associate(
            destination.host,
            destination.port,
            ae_title=destination.ae_title,
            evt_handlers=[(evt.EVT_CONN_OPEN, _nodelay)],
            tls_args=tls_args,
        )
        if assoc.is_established:
            outcomes = _store_all(assoc, pending)
            assoc.release()
        else:
            reason = "association rejected" if assoc.is_rejected else "destination unreachable or aborted"
            errors.append(reason)
            outcomes = [ObjectOutcome(str(ds.SOPInstanceUID), kind, UNREACHABLE, None, reason) for kind, ds in pending]
        _record(session_factory, job_id, where, outcomes)
        for o in outcomes:
            final[o.sop_instance_uid] = o
            log.info(
                "c-store",
                destination=where,
                sop_instance_uid=o.sop_instance_uid,
                kind=o.kind,
                outcome=o.outcome,
                status=o.status,
                attempt=attempt + 1,
                job_id=job_id,
            )
        retry_uids = {o.sop_instance_uid for o in outcomes if _retriable(o)}
        pending = [(k, ds) for k, ds in pending if str(ds.SOPInstanceUID) in retry_uids]
        if not pending:
            break
    order = [str(ds.SOPInstanceUID) for _, ds in map(_kind, datasets)]
    return SendReport(
        destination=where,
        outcomes=tuple(final[uid] for uid in order),
        associations=associations,
        errors=tuple(errors),
    )
