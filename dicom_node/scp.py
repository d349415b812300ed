"""The Storage SCP: small pynetdicom event handlers that spool and hand off.

Handlers do little: check policy, hand the data set to dicom_node/intake.py (header, atomic
write, an event for the recorder) and return a named status. With the event-driven reactors
C-STOREs do not even reach pynetdicom's handler: the fast lane (dicom_node/fastlane.py)
streams them to the same intake. DB writes, series assembly and job creation happen on other
threads.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from threading import Lock
from typing import Any, cast

from pydicom.dataset import Dataset
from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    evt,
)
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    _STORAGE_CLASSES,
    StorageCommitmentPushModel,
    Verification,
)

from dicom_node import statuses
from dicom_node.allowlist import is_allowed
from dicom_node.audit.models import utcnow
from dicom_node.config import Settings
from dicom_node.events import AssociationClosed, AssociationOpened, AssociationRejected, Event
from dicom_node.guards import DiscardedDataSet
from dicom_node.headers import encode_file_meta
from dicom_node.intake import DataSetSink, Intake, Outcome
from dicom_node.logging import get_logger
from dicom_node.spool import Spool

log = get_logger(__name__)

#: DESIGN.md section 4: native, deflated, JPEG baseline/extended/lossless, JPEG-LS, JPEG 2000, RLE.
TRANSFER_SYNTAXES = [
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline (Process 1)
    "1.2.840.10008.1.2.4.51",  # JPEG Extended (Process 2 & 4)
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless (Process 14)
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
]
assert set(TRANSFER_SYNTAXES) <= set(ALL_TRANSFER_SYNTAXES)


def image_storage_classes() -> dict[str, str]:
    """Every image storage SOP class pynetdicom knows (name -> UID); others are refused."""
    return {name: uid for name, uid in _STORAGE_CLASSES.items() if "Image" in name and "PresentationState" not in name}


@dataclass
class _AssocStats:
    key: int
    stored: int = 0
    failed: int = 0


@dataclass
class StoreHandlers:
    """The node's pynetdicom handlers, bound to ``evt.EVT_*`` by :meth:`bindings`."""

    settings: Settings
    spool: Spool
    record: Callable[[Event], None]
    count: Callable[[str], None] = lambda outcome: None  # metrics hook: success/failure/refused
    _stats: dict[int, _AssocStats] = field(default_factory=dict)
    _lock: Lock = field(default_factory=Lock)
    intake: Intake = field(init=False)
    #: C-STOREs that came through pynetdicom's handler instead of the fast lane.
    handler_stores: int = 0

    def __post_init__(self) -> None:
        self.intake = Intake(self.settings, self.spool, self.record)

    def bindings(self) -> list[tuple[evt.InterventionEvent | evt.NotificationEvent, Callable[..., Any]]]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_RELEASED, self.on_closed),
            (evt.EVT_ABORTED, self.on_closed),
            (evt.EVT_C_ECHO, self.on_c_echo),
            (evt.EVT_C_STORE, self.on_c_store),
        ]

    # --- the fast lane's entry points (dicom_node/fastlane.py) ---------------------------
    def open_sink(self, file_meta: bytes) -> DataSetSink:
        return self.intake.open(file_meta)

    def finish_store(self, key: int, sink: DataSetSink, sop_uid: str, transfer_syntax: str) -> Outcome:
        """Decide a streamed C-STORE (see :meth:`Intake.finish`) and count it."""
        status, comment = self.intake.finish(key, sink, sop_uid, transfer_syntax)
        self._count(key, status)
        return status, comment

    # --- association policy -------------------------------------------------------------
    # Source addresses are checked when the connection is accepted, before any PDU is read
    # (:meth:`screen`, called by guards.GuardedServer). Calling and called AE titles are
    # checked by pynetdicom itself (``ae.require_calling_aet`` / ``require_called_aet``, set
    # in build_ae), which rejects with "calling (called) AE title not recognised".
    def screen(self, address: str, port: int) -> str | None:
        """Why a connection from ``address`` is refused (and recorded), or None."""
        if is_allowed(address, self.settings.allowed_ips):
            return None
        reason = f"address {address} is not in the allow-list"
        self._record_rejection("", "", address, port, reason)
        return reason

    def on_requested(self, event: evt.Event) -> None:
        """Mutual TLS ties the calling AE to the client certificate (``tls_bind_ae``): an AE
        title the certificate does not name is rejected (A-ASSOCIATE-RJ, rejected-permanent,
        service-user, calling AE title not recognised; PS3.8 9.3.4) and recorded."""
        if self.settings.tls_ca is None or not self.settings.tls_bind_ae:
            return
        assoc = event.assoc
        primitive = association_request(assoc)
        calling = primitive.calling_ae_title.strip()
        sock = getattr(assoc.dul.socket, "socket", None)
        peer = sock.getpeercert() if isinstance(sock, ssl.SSLSocket) else None
        if calling in certificate_names(peer):
            return
        reason = f"calling AE {calling!r} is not named by the peer's TLS client certificate"
        self._record_rejection(
            calling, primitive.called_ae_title.strip(), assoc.requestor.address, assoc.requestor.port, reason
        )
        assoc.acse.send_reject(0x01, 0x01, 0x03)
        assoc.kill()  # as pynetdicom after its own rejections: returns once the RJ is sent

    def on_rejected(self, event: evt.Event) -> None:
        assoc = event.assoc
        primitive = association_request(assoc)
        calling = primitive.calling_ae_title.strip()
        called = primitive.called_ae_title.strip()
        if self.settings.allowed_aes and calling not in self.settings.allowed_aes:
            reason = f"calling AE {calling!r} is not in the allow-list"
        elif not self.settings.accept_any_called_ae and called != self.settings.ae_title:
            reason = f"called AE {called!r} is not ours ({self.settings.ae_title!r})"
        else:
            reason = "too many concurrent associations"
        self._record_rejection(calling, called, assoc.requestor.address, assoc.requestor.port, reason)

    def _record_rejection(self, calling: str, called: str, address: str, port: int | None, reason: str) -> None:
        log.warning("association refused", calling_ae=calling, address=address, reason=reason)
        self.record(
            AssociationRejected(
                calling_ae=calling[:16],
                called_ae=called[:16],
                address=address,
                port=port,
                reason=reason,
                at=utcnow(),
            )
        )

    def on_accepted(self, event: evt.Event) -> None:
        assoc = event.assoc
        key = id(assoc)
        with self._lock:
            self._stats[key] = _AssocStats(key)
        self.record(
            AssociationOpened(
                key=key,
                calling_ae=assoc.requestor.ae_title.strip()[:16],
                called_ae=assoc.acceptor.ae_title.strip()[:16],
                address=assoc.requestor.address,
                port=assoc.requestor.port,
                at=utcnow(),
            )
        )
        log.info("association accepted", calling_ae=assoc.requestor.ae_title, address=assoc.requestor.address)

    def on_closed(self, event: evt.Event) -> None:
        with self._lock:
            stats = self._stats.pop(id(event.assoc), None)
        if stats is None:
            return
        outcome = "released" if event.event is evt.EVT_RELEASED else "aborted"
        self.record(AssociationClosed(stats.key, outcome, stats.stored, stats.failed, utcnow()))
        log.info("association closed", outcome=outcome, stored=stats.stored, failed=stats.failed)

    # --- services -----------------------------------------------------------------------
    def on_c_echo(self, event: evt.Event) -> int:
        return statuses.SUCCESS

    def on_c_store(self, event: evt.Event) -> int | Dataset:
        """pynetdicom's C-STORE handler (stock reactors; the fast lane bypasses it)."""
        self.handler_stores += 1
        request = store_request(event)
        sink = self.intake.open(file_meta(event))
        received = request.DataSet
        if isinstance(received, DiscardedDataSet):  # guards.GuardedDIMSE kept none of it
            sink.skip(received.received)
        else:
            assert received is not None, "a C-STORE request without a data set"
            with received.getbuffer() as view:
                sink.write(view)
                sink.flush()  # the sink keeps a reference until then
        key = id(event.assoc)
        sop_uid = str(request.AffectedSOPInstanceUID or "")
        status, comment = self.finish_store(key, sink, sop_uid, str(event.context.transfer_syntax))
        return status if comment is None else with_comment(status, comment)

    def _count(self, key: int, code: int) -> None:
        self.count("success" if code == statuses.SUCCESS else f"0x{code:04X}")
        stats = self._stats.get(key)
        if stats is not None:
            if code == statuses.SUCCESS:
                stats.stored += 1
            else:
                stats.failed += 1


def association_request(assoc: Association) -> A_ASSOCIATE:
    """The peer's A-ASSOCIATE-RQ, which pynetdicom has set by EVT_REQUESTED and EVT_REJECTED."""
    primitive = assoc.requestor.primitive
    assert primitive is not None, "no A-ASSOCIATE-RQ yet"
    return primitive


def store_request(event: evt.Event) -> C_STORE:
    """An EVT_C_STORE event's request (pynetdicom types ``Event.request`` as any DIMSE request)."""
    return cast(C_STORE, event.request)


def with_comment(status: int, comment: str) -> Dataset:
    """A C-STORE response status with an Error Comment (at most 64 characters, LO)."""
    response = Dataset()
    response.Status = status
    response.ErrorComment = comment[:64]
    return response


def file_meta(event: evt.Event) -> bytes:
    """Preamble and file meta of a C-STORE's instance, as ``event.encoded_dataset()`` has.

    Built by our own encoder: pynetdicom's builds and validates a pydicom dataset per
    instance, which cost about as much as the rest of the handler together.
    """
    request = store_request(event)
    return encode_file_meta(
        str(request.AffectedSOPClassUID or ""),
        str(request.AffectedSOPInstanceUID or ""),
        str(event.context.transfer_syntax),
        PYNETDICOM_IMPLEMENTATION_UID,
        PYNETDICOM_IMPLEMENTATION_VERSION,
    )


def build_ae(settings: Settings) -> AE:
    """An AE that accepts Verification and every image storage class over our syntaxes."""
    ae = AE(ae_title=settings.ae_title)
    ae.maximum_associations = settings.max_associations
    ae.require_calling_aet = settings.allowed_aes
    ae.require_called_aet = not settings.accept_any_called_ae
    ae.maximum_pdu_size = settings.max_pdu  # announced; guards.GuardedDUL enforces it
    ae.network_timeout = settings.network_timeout
    ae.acse_timeout = settings.acse_timeout
    ae.dimse_timeout = settings.network_timeout
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(StorageCommitmentPushModel)  # dicom_node/commitment.py (PS3.4 J)
    for uid in image_storage_classes().values():
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    return ae


def certificate_names(cert: dict[str, Any] | None) -> set[str]:
    """The names a verified peer certificate (``SSLSocket.getpeercert()``) gives its holder:
    subject commonName and DNS subjectAltNames."""
    if not cert:
        return set()
    names = {value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"}
    return names | {value for key, value in cert.get("subjectAltName", ()) if key == "DNS"}


def tls_context(settings: Settings) -> ssl.SSLContext | None:
    """Server TLS context from the settings, or None when TLS is off."""
    if settings.tls_cert is None or settings.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(settings.tls_cert, settings.tls_key)
    if settings.tls_ca is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(settings.tls_ca)
    return context
