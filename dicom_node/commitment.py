"""Storage Commitment Push Model SCP (PS3.4 Annex J): the node's promise of safekeeping.

A sender that wants to know its instances are safe asks with N-ACTION-RQ (Action Type ID 1,
"Request Storage Commitment", PS3.4 J.3.2) on the well-known SOP Instance
1.2.840.10008.1.20.1.1, with a Transaction UID (0008,1195) and a Referenced SOP Sequence
(0008,1199) of Referenced SOP Class / Instance UIDs. The handler checks the request, answers
N-ACTION-RSP at once and puts a :class:`~dicom_node.events.Barrier` behind everything the
receive path has queued. When the barrier has passed the group committer and the audit
recorder, every instance acknowledged before the request is flushed and recorded, or was
never received; the worker then looks each reference up in the audit DB (and its file on
disk) and sends N-EVENT-REPORT-RQ (PS3.4 J.3.3): Event Type ID 1 when all succeeded, 2 when
some failed, with a Referenced SOP Sequence and a Failed SOP Sequence whose items carry a
Failure Reason (0008,1197):

- 0x0112 no such object instance (not received, refused, or no longer in the spool);
- 0x0119 class / instance conflict (received under another SOP Class);
- 0x0122 referenced SOP Class not supported (not an image storage class we accept);
- 0x0110 processing failure (not flushed and recorded within ``commitment_timeout``, e.g.
  while the audit DB is down: the sender may ask again).

The report goes on the requesting association while it is open
(``MEDDET_COMMITMENT_ASSOCIATION=same``), else, or always with ``new``, on a new association
to the requesting AE's address in ``MEDDET_COMMITMENT_PEERS``, proposing the SCP role for the
Storage Commitment Push Model SOP Class (role selection, PS3.7 D.3.3.4). Every accepted
request is written to disk (dicom_node/commitment_store.py) before N-ACTION-RSP success and
removed once its report is delivered (or has nowhere to go): a request pending when the node
stops or crashes is answered after the next start, on a new association (recovery has
recorded every acknowledged instance by then). Nothing here logs patient data: UIDs and counts.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role, evt
from pynetdicom.association import Association
from pynetdicom.dimse_primitives import N_ACTION
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.audit.models import Instance
from dicom_node.commitment_store import PendingRequests
from dicom_node.config import Settings
from dicom_node.destinations import Destination
from dicom_node.events import Barrier, Event
from dicom_node.logging import get_logger
from dicom_node.spool import is_valid_uid

log = get_logger(__name__)

STORAGE_COMMITMENT_PUSH = "1.2.840.10008.1.20.1"
WELL_KNOWN_INSTANCE = "1.2.840.10008.1.20.1.1"
#: Failure Reason (0008,1197) values, PS3.4 J.3.3 / C.4.2.1.4.
PROCESSING_FAILURE, NO_SUCH_INSTANCE, CLASS_INSTANCE_CONFLICT, CLASS_NOT_SUPPORTED = 0x0110, 0x0112, 0x0119, 0x0122
#: N-ACTION-RSP statuses (PS3.7 10.1.4.1.10).
SUCCESS, INVALID_ARGUMENT, INVALID_INSTANCE, NO_SUCH_ACTION, RESOURCE_LIMITATION = (
    0x0000,
    0x0115,
    0x0117,
    0x0123,
    0x0213,
)
#: Most references in one request, and requests waiting for their report.
MAX_REFERENCES = 10_000
MAX_PENDING = 256
#: Seconds between attempts to deliver a report on a new association.
DELIVERY_RETRY_S = (1.0, 5.0, 30.0)
_LOOKUP_CHUNK = 500


@dataclass
class Transaction:
    """One N-ACTION request, until its N-EVENT-REPORT is delivered."""

    uid: str
    calling_ae: str
    references: list[tuple[str, str]]  # (SOP Class UID, SOP Instance UID)
    assoc: Association | None
    barrier: Barrier = field(default_factory=Barrier)
    record: Path | None = None  # its file in data_dir/commitment (removed once answered)


@dataclass(frozen=True)
class Report:
    """The outcome of a transaction (PS3.4 J.3.3.1): what is committed, what failed and why."""

    transaction_uid: str
    committed: list[tuple[str, str]]
    failed: list[tuple[str, str, int]]  # (class, instance, Failure Reason)

    @property
    def event_type(self) -> int:
        return 1 if not self.failed else 2

    def dataset(self) -> Dataset:
        """The N-EVENT-REPORT Event Information."""
        ds = Dataset()
        ds.TransactionUID = self.transaction_uid
        if self.committed:
            ds.ReferencedSOPSequence = [_item(c, i) for c, i in self.committed]
        if self.failed:
            ds.FailedSOPSequence = [_item(c, i, reason) for c, i, reason in self.failed]
        return ds


def _item(sop_class: str, sop_instance: str, reason: int | None = None) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = sop_instance
    if reason is not None:
        item.FailureReason = reason
    return item


def parse_request(info: Dataset) -> tuple[str, list[tuple[str, str]]] | str:
    """(Transaction UID, references) of an Action Information, or why it is invalid."""
    transaction_uid = str(info.get("TransactionUID", "") or "")
    if not is_valid_uid(transaction_uid):
        return "missing or invalid Transaction UID"
    items = info.get("ReferencedSOPSequence")
    if not items:
        return "empty or missing Referenced SOP Sequence"
    if len(items) > MAX_REFERENCES:
        return f"more than {MAX_REFERENCES} references"
    references = []
    for item in items:
        sop_class = str(item.get("ReferencedSOPClassUID", "") or "")
        sop_instance = str(item.get("ReferencedSOPInstanceUID", "") or "")
        if not (is_valid_uid(sop_class) and is_valid_uid(sop_instance)):
            return "a reference without valid Referenced SOP Class / Instance UIDs"
        references.append((sop_class, sop_instance))
    return transaction_uid, references


def decide(
    session: Session, references: list[tuple[str, str]], supported: frozenset[str], settled: bool
) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]]]:
    """Committed and failed references, by what the audit DB (and the disk) say.

    ``settled``: the barrier passed (everything acknowledged before the request is recorded);
    otherwise a reference not found is a processing failure, not "no such instance".
    """
    uids = sorted({uid for _, uid in references})
    found: dict[str, list[tuple[str, str]]] = {}
    for start in range(0, len(uids), _LOOKUP_CHUNK):
        chunk = uids[start : start + _LOOKUP_CHUNK]
        rows = session.execute(
            select(Instance.sop_instance_uid, Instance.sop_class_uid, Instance.spool_path).where(
                Instance.sop_instance_uid.in_(chunk)
            )
        )
        for uid, sop_class, path in rows:
            found.setdefault(uid, []).append((sop_class, path))
    committed: list[tuple[str, str]] = []
    failed: list[tuple[str, str, int]] = []
    for sop_class, uid in references:
        held = found.get(uid, [])
        if sop_class not in supported:
            failed.append((sop_class, uid, CLASS_NOT_SUPPORTED))
        elif any(c == sop_class and Path(p).is_file() for c, p in held):
            committed.append((sop_class, uid))
        elif any(Path(p).is_file() for _, p in held):
            failed.append((sop_class, uid, CLASS_INSTANCE_CONFLICT))
        else:
            failed.append((sop_class, uid, NO_SUCH_INSTANCE if settled else PROCESSING_FAILURE))
    return committed, failed


class CommitmentSCP:
    """The N-ACTION handler and the worker thread that sends the reports."""

    def __init__(
        self,
        settings: Settings,
        session_factory: sessionmaker[Session],
        pipeline: Callable[[Event], None],
        supported: frozenset[str],
    ) -> None:
        self.settings = settings
        self._factory = session_factory
        self._pipeline = pipeline  # where barriers go: the group committer, else the recorder
        self._supported = supported
        self._peers = {peer.ae_title: peer for peer in settings.commitment_peers}
        self._queue: queue.Queue[Transaction | None] = queue.Queue(maxsize=MAX_PENDING)
        self.pending = PendingRequests(settings.data_dir / "commitment")
        self._restored: list[Transaction] = []
        self._thread = threading.Thread(target=self._run, name="storage-commitment", daemon=True)
        self._stopping = threading.Event()
        #: Reports delivered (transaction UID -> "same" / "new"), for tests and metrics.
        self.delivered: dict[str, str] = {}

    def bindings(self) -> list[tuple[evt.InterventionEvent, Callable[..., Any]]]:
        return [(evt.EVT_N_ACTION, self.on_n_action)]

    def start(self) -> CommitmentSCP:
        """Answer the requests an earlier run left pending, then the new ones.

        Called after recovery and once the pipeline runs: their barriers pass at once."""
        for request in self.pending.load():
            transaction = Transaction(
                request.transaction_uid, request.calling_ae, request.references, None, record=request.path
            )
            self._pipeline(transaction.barrier)
            self._restored.append(transaction)
        if self._restored:
            log.info("storage commitment requests restored", transactions=len(self._restored))
        self._thread.start()
        return self

    def begin_stop(self) -> None:
        """No more retries of report deliveries (the node is stopping); pending reports that
        the recorder still lets through are decided and sent once."""
        self._stopping.set()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass
        if self._thread.is_alive():
            self._thread.join(timeout)

    # --- the N-ACTION handler (association thread) ----------------------------------------
    def on_n_action(self, event: evt.Event) -> tuple[int, Dataset | None]:
        request: N_ACTION = event.request  # type: ignore[assignment]
        calling = event.assoc.requestor.ae_title.strip()
        if str(request.RequestedSOPInstanceUID) != WELL_KNOWN_INSTANCE:
            return INVALID_INSTANCE, None
        if request.ActionTypeID != 1:
            return NO_SUCH_ACTION, None
        try:
            parsed = parse_request(event.action_information)
        except Exception as exc:  # noqa: BLE001 - an undecodable Action Information
            parsed = f"undecodable Action Information: {type(exc).__name__}"
        if isinstance(parsed, str):
            log.warning("storage commitment request refused", calling_ae=calling, reason=parsed)
            return INVALID_ARGUMENT, None
        if self._queue.full():
            log.warning("storage commitment requests pending at the limit; refused", calling_ae=calling)
            return RESOURCE_LIMITATION, None
        try:  # on disk before the success answer: a restart or a crash does not forget it
            record = self.pending.save(parsed[0], calling, parsed[1])
        except OSError as exc:
            log.error("storage commitment request not written; refused", calling_ae=calling, error=str(exc))
            return PROCESSING_FAILURE, None  # 0x0110 is also N-ACTION-RSP "processing failure"
        transaction = Transaction(parsed[0], calling, parsed[1], event.assoc, record=record)
        try:
            self._queue.put_nowait(transaction)
        except queue.Full:
            self.pending.remove(record)
            log.warning("storage commitment requests pending at the limit; refused", calling_ae=calling)
            return RESOURCE_LIMITATION, None
        self._pipeline(transaction.barrier)  # behind every instance acknowledged so far
        log.info(
            "storage commitment requested",
            calling_ae=calling,
            transaction_uid=transaction.uid,
            references=len(transaction.references),
        )
        return SUCCESS, None

    # --- the worker -----------------------------------------------------------------------
    def _run(self) -> None:
        restored, self._restored = self._restored, []
        for transaction in restored:
            self._answer(transaction)
        while (queued := self._queue.get()) is not None:
            self._answer(queued)

    def _answer(self, transaction: Transaction) -> None:
        """Decide and deliver; forget the request on disk once delivered or undeliverable."""
        try:
            delivered = self.deliver(transaction, self.report(transaction))
        except Exception:  # noqa: BLE001 - one transaction must not end the worker
            log.exception("storage commitment failed", transaction_uid=transaction.uid)
            return  # kept on disk: answered after the next start
        if transaction.record is None:
            return
        if delivered or not self._routable(transaction):
            self.pending.remove(transaction.record)
        else:
            log.warning("storage commitment report kept for the next start", transaction_uid=transaction.uid)

    def _routable(self, transaction: Transaction) -> bool:
        """Could a report still reach the requester (its association, or a peer entry)?"""
        assoc = transaction.assoc
        return transaction.calling_ae in self._peers or (assoc is not None and assoc.is_established)

    def report(self, transaction: Transaction) -> Report:
        """Wait until the request's instances are flushed and recorded, then decide."""
        settled = transaction.barrier.wait(self.settings.commitment_timeout)
        try:
            with self._factory() as session:
                committed, failed = decide(session, transaction.references, self._supported, settled)
        except Exception as exc:  # noqa: BLE001 - the DB is down: nothing can be confirmed
            log.error("storage commitment: audit DB unavailable", transaction_uid=transaction.uid, error=str(exc)[:200])
            committed, failed = [], [(c, i, PROCESSING_FAILURE) for c, i in transaction.references]
        report = Report(transaction.uid, committed, failed)
        log.info(
            "storage commitment decided",
            transaction_uid=transaction.uid,
            committed=len(committed),
            failed=len(failed),
            settled=settled,
        )
        return report

    def deliver(self, transaction: Transaction, report: Report) -> bool:
        """Send the N-EVENT-REPORT: the same association or a new one, as configured."""
        same_first = self.settings.commitment_association == "same"
        routes = ("same", "new") if same_first else ("new", "same")
        for route in routes:
            if route == "same" and self._on_same(transaction, report):
                self.delivered[transaction.uid] = "same"
                return True
            if route == "new" and transaction.calling_ae in self._peers and self._on_new(transaction, report):
                self.delivered[transaction.uid] = "new"
                return True
        log.error(
            "storage commitment report not delivered: requesting association closed and "
            "no MEDDET_COMMITMENT_PEERS entry reached",
            calling_ae=transaction.calling_ae,
            transaction_uid=transaction.uid,
        )
        return False

    def _on_same(self, transaction: Transaction, report: Report) -> bool:
        assoc = transaction.assoc
        if assoc is None or not assoc.is_established:
            return False
        try:
            status, _ = assoc.send_n_event_report(
                report.dataset(), report.event_type, STORAGE_COMMITMENT_PUSH, WELL_KNOWN_INSTANCE
            )
        except (RuntimeError, ValueError) as exc:  # released or aborted meanwhile
            log.warning("storage commitment report not sent on the same association", error=str(exc))
            return False
        return _accepted(status, transaction, "same")

    def _on_new(self, transaction: Transaction, report: Report) -> bool:
        peer = self._peers[transaction.calling_ae]
        for attempt, delay in enumerate((0.0, *DELIVERY_RETRY_S)):
            if delay and self._stopping.wait(delay):
                return False
            if self._send_new(peer, report, transaction):
                return True
            log.warning("storage commitment report: peer not reached", peer=str(peer), attempt=attempt + 1)
        return False

    def _send_new(self, peer: Destination, report: Report, transaction: Transaction) -> bool:
        ae = AE(ae_title=self.settings.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.settings.acse_timeout
        ae.add_requested_context(STORAGE_COMMITMENT_PUSH)
        role = build_role(STORAGE_COMMITMENT_PUSH, scu_role=False, scp_role=True)
        tls = peer.ssl_context()
        assoc = ae.associate(
            peer.host,
            peer.port,
            ae_title=peer.ae_title,
            ext_neg=[role],
            tls_args=(tls, peer.host) if tls is not None else None,
        )
        if not assoc.is_established:
            return False
        try:
            status, _ = assoc.send_n_event_report(
                report.dataset(), report.event_type, STORAGE_COMMITMENT_PUSH, WELL_KNOWN_INSTANCE
            )
            return _accepted(status, transaction, "new")
        finally:
            if assoc.is_established:
                assoc.release()
            ae.shutdown()


def _accepted(status: Dataset, transaction: Transaction, route: str) -> bool:
    code = getattr(status, "Status", None)
    if code is None or code != 0x0000:
        log.warning(
            "storage commitment report refused or unanswered",
            route=route,
            transaction_uid=transaction.uid,
            status=None if code is None else f"0x{code:04X}",
        )
        return False
    log.info("storage commitment report delivered", route=route, transaction_uid=transaction.uid)
    return True
