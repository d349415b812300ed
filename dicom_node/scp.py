"""The Storage SCP: small pynetdicom event handlers that spool and hand off.

Handlers do little: check policy, parse the header, write the file atomically, put an event on
the audit recorder's queue and return a named status. DB writes, series assembly and job
creation happen on other threads.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from threading import Lock

from pynetdicom import (
    AE,
    ALL_TRANSFER_SYNTAXES,
    PYNETDICOM_IMPLEMENTATION_UID,
    PYNETDICOM_IMPLEMENTATION_VERSION,
    evt,
)
from pynetdicom.sop_class import _STORAGE_CLASSES, Verification  # type: ignore[attr-defined]

from dicom_node import statuses
from dicom_node.audit.models import utcnow
from dicom_node.config import Settings
from dicom_node.headers import Rejected, encode_file_meta, inspect_dataset
from dicom_node.logging import get_logger
from dicom_node.recorder import (
    AssociationClosed,
    AssociationOpened,
    AssociationRejected,
    Event,
    InstanceQuarantined,
    InstanceStored,
)
from dicom_node.spool import Spool, SpoolError

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
    return {
        name: uid
        for name, uid in _STORAGE_CLASSES.items()
        if "Image" in name and "PresentationState" not in name
    }


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

    def bindings(self) -> list[tuple[evt.InterventionEvent | evt.NotificationEvent, Callable]]:
        return [
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_REJECTED, self.on_rejected),
            (evt.EVT_ACCEPTED, self.on_accepted),
            (evt.EVT_RELEASED, self.on_closed),
            (evt.EVT_ABORTED, self.on_closed),
            (evt.EVT_C_ECHO, self.on_c_echo),
            (evt.EVT_C_STORE, self.on_c_store),
        ]

    # --- association policy -------------------------------------------------------------
    # Calling AE titles are checked by pynetdicom itself (``ae.require_calling_aet``, set in
    # build_ae), which rejects with "calling AE title not recognised"; source addresses here.
    def refusal(self, calling_ae: str, address: str) -> str | None:
        """Why an association from ``calling_ae`` at ``address`` is refused, or None."""
        if self.settings.allowed_aes and calling_ae not in self.settings.allowed_aes:
            return f"calling AE {calling_ae!r} is not in the allow-list"
        if self.settings.allowed_ips and address not in self.settings.allowed_ips:
            return f"address {address} is not in the allow-list"
        return None

    def on_requested(self, event: evt.Event) -> None:
        assoc = event.assoc
        address = assoc.requestor.address
        if self.settings.allowed_ips and address not in self.settings.allowed_ips:
            assoc.acse.send_reject(0x01, 0x01, 0x01)  # rejected-permanent, user, no reason given
            self._record_rejection(event, f"address {address} is not in the allow-list")
            assoc.kill()  # as pynetdicom's ACSE does after its own rejections

    def on_rejected(self, event: evt.Event) -> None:
        calling = event.assoc.requestor.primitive.calling_ae_title.strip()
        reason = self.refusal(calling, event.assoc.requestor.address)
        self._record_rejection(event, reason or "too many concurrent associations")

    def _record_rejection(self, event: evt.Event, reason: str) -> None:
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = primitive.calling_ae_title.strip()
        log.warning("association refused", calling_ae=calling, address=assoc.requestor.address, reason=reason)
        self.record(
            AssociationRejected(
                calling_ae=calling[:16],
                called_ae=primitive.called_ae_title.strip()[:16],
                address=assoc.requestor.address,
                port=assoc.requestor.port,
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

    def on_c_store(self, event: evt.Event) -> int:
        status = self._store(event)
        self.count("success" if status == statuses.SUCCESS else f"0x{status:04X}")
        stats = self._stats.get(id(event.assoc))
        if stats is not None:
            if status == statuses.SUCCESS:
                stats.stored += 1
            else:
                stats.failed += 1
        return status

    def _store(self, event: evt.Event) -> int:
        key = id(event.assoc)
        sop_uid = str(event.request.AffectedSOPInstanceUID or "")
        if self.spool.disk_used_percent() >= self.settings.disk_watermark:
            log.error("spool disk above watermark; refusing", sop_uid=sop_uid)
            return statuses.OUT_OF_RESOURCES
        dataset = event.request.DataSet.getvalue()
        data = file_meta(event) + dataset  # == event.encoded_dataset(include_meta=True)
        try:
            header = inspect_dataset(dataset, str(event.context.transfer_syntax), sop_uid or None)
        except Rejected as rejected:
            path = self.spool.quarantine(data, rejected.reason, sop_instance_uid=sop_uid or None)
            self.record(InstanceQuarantined(key, sop_uid or None, path, rejected.reason, utcnow()))
            log.warning("instance quarantined", sop_uid=sop_uid, reason=rejected.reason, path=str(path))
            return rejected.status
        try:
            stored = self.spool.store(data, header.study_uid, header.series_uid, header.sop_uid)
        except SpoolError as exc:
            log.error("spool write failed", sop_uid=sop_uid, error=str(exc))
            return statuses.OUT_OF_RESOURCES
        self.record(InstanceStored(key, header, stored, utcnow()))
        return statuses.SUCCESS


def file_meta(event: evt.Event) -> bytes:
    """Preamble and file meta of a C-STORE's instance, as ``event.encoded_dataset()`` has.

    Built by our own encoder: pynetdicom's builds and validates a pydicom dataset per
    instance, which cost about as much as the rest of the handler together.
    """
    request = event.request
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
    ae.maximum_pdu_size = 0  # no limit: fewer, larger P-DATA PDUs
    ae.network_timeout = 60
    ae.acse_timeout = 30
    ae.dimse_timeout = 60
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for uid in image_storage_classes().values():
        ae.add_supported_context(uid, TRANSFER_SYNTAXES)
    return ae


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
