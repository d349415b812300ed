"""The event-driven reactors (dicom_node/reactor.py) under pynetdicom's normal flows.

Real associations on 127.0.0.1: C-ECHO, many C-STOREs (pynetdicom and dcmtk senders),
release, abort by the peer, rejection; and an idle association must not burn CPU.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.sop_class import MRImageStorage, Verification
from pynetdicom.transport import ThreadedAssociationServer

from dicom_node import statuses
from dicom_node.reactor import EventDrivenAssociation, start_server, supported
from dicom_node.reactor_dul import MAX_WAIT
from tests.conftest import storescu
from tests.factories import make_mr_series, write_series

pytestmark = pytest.mark.integration


@dataclass
class Seen:
    """What the server's handlers observed, filled from the association threads."""

    stored: dict[str, bytes] = field(default_factory=dict)
    classes: set[type] = field(default_factory=set)
    threads: list[tuple[int, int]] = field(default_factory=list)  # (assoc, DUL) native ids
    events: list[str] = field(default_factory=list)
    closed: threading.Event = field(default_factory=threading.Event)


def serve(require_calling_aet: list[str] | None = None, event_driven: bool = True):  # type: ignore[no-untyped-def]
    seen = Seen()
    ae = AE(ae_title="MEDDET")
    ae.add_supported_context(Verification)
    ae.add_supported_context(MRImageStorage)
    if require_calling_aet:
        ae.require_calling_aet = require_calling_aet

    def on_accepted(event: evt.Event) -> None:
        seen.classes.add(type(event.assoc))
        seen.threads.append((event.assoc.native_id, event.assoc.dul.native_id))

    def on_store(event: evt.Event) -> int:
        seen.stored[str(event.request.AffectedSOPInstanceUID)] = event.encoded_dataset()
        return statuses.SUCCESS

    def on_closed(event: evt.Event) -> None:
        seen.events.append(event.event.name)
        seen.closed.set()

    handlers = [
        (evt.EVT_ACCEPTED, on_accepted),
        (evt.EVT_C_ECHO, lambda event: statuses.SUCCESS),
        (evt.EVT_C_STORE, on_store),
        (evt.EVT_RELEASED, on_closed),
        (evt.EVT_ABORTED, on_closed),
    ]
    server = start_server(ae, ("127.0.0.1", 0), evt_handlers=handlers, event_driven=event_driven)
    return ae, server, seen


@pytest.fixture
def scp() -> Iterator[tuple[ThreadedAssociationServer, Seen]]:
    ae, server, seen = serve()
    yield server, seen
    ae.shutdown()


def requestor() -> AE:
    ae = AE(ae_title="SENDER")
    ae.add_requested_context(Verification)
    ae.add_requested_context(MRImageStorage)
    return ae


def port(server: ThreadedAssociationServer) -> int:
    return int(server.server_address[1])


def test_this_pynetdicom_is_supported() -> None:
    assert supported()


def test_echo_and_release(scp) -> None:  # type: ignore[no-untyped-def]
    server, seen = scp
    assoc = requestor().associate("127.0.0.1", port(server), ae_title="MEDDET")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == statuses.SUCCESS
    assoc.release()
    assert assoc.is_released
    assert seen.closed.wait(5) and seen.events == ["EVT_RELEASED"]
    assert seen.classes == {EventDrivenAssociation}


def test_many_stores_from_pynetdicom_arrive_intact(scp) -> None:  # type: ignore[no-untyped-def]
    server, seen = scp
    series = make_mr_series(40, 64, 64)
    assoc = requestor().associate("127.0.0.1", port(server), ae_title="MEDDET")
    assert assoc.is_established
    answers = [assoc.send_c_store(ds).Status for ds in series]
    assoc.release()
    assert answers == [statuses.SUCCESS] * len(series)
    assert set(seen.stored) == {str(ds.SOPInstanceUID) for ds in series}
    first = series[0]
    assert first.PixelData in seen.stored[str(first.SOPInstanceUID)]


def test_many_stores_from_dcmtk_on_several_associations(scp, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    server, seen = scp
    files = write_series(make_mr_series(30, 64, 64), tmp_path)
    results = []
    senders = [
        threading.Thread(target=lambda part=part: results.append(storescu(port(server), part)))
        for part in (files[:15], files[15:])
    ]
    for sender in senders:
        sender.start()
    for sender in senders:
        sender.join()
    assert [r.returncode for r in results] == [0, 0], [r.stderr[-500:] for r in results]
    assert len(seen.stored) == 30
    for path in files:
        assert seen.stored[path.stem].endswith(dataset_of(path.read_bytes()))  # byte for byte


def dataset_of(file_bytes: bytes) -> bytes:
    """A DICOM file's data set: what follows the file meta group (its length is at 140)."""
    group_length = int.from_bytes(file_bytes[140:144], "little")
    return file_bytes[144 + group_length :]


def test_abort_by_peer_ends_the_association(scp) -> None:  # type: ignore[no-untyped-def]
    server, seen = scp
    assoc = requestor().associate("127.0.0.1", port(server), ae_title="MEDDET")
    assert assoc.is_established
    assoc.abort()
    assert seen.closed.wait(5) and seen.events == ["EVT_ABORTED"]
    deadline = time.monotonic() + 5
    while server.active_associations and time.monotonic() < deadline:
        time.sleep(0.02)
    assert server.active_associations == []


def test_rejected_association() -> None:
    ae, server, seen = serve(require_calling_aet=["SOMEONE"])
    try:
        assoc = requestor().associate("127.0.0.1", port(server), ae_title="MEDDET")
        assert assoc.is_rejected and not assoc.is_established
        # the server keeps serving: the next association (allowed AE) works
        ae.require_calling_aet = ["SENDER"]
        again = requestor().associate("127.0.0.1", port(server), ae_title="MEDDET")
        assert again.is_established and again.send_c_echo().Status == statuses.SUCCESS
        again.release()
    finally:
        ae.shutdown()


def test_stock_reactors_when_asked() -> None:
    ae, server, seen = serve(event_driven=False)
    try:
        assoc = requestor().associate("127.0.0.1", port(server), ae_title="MEDDET")
        assert assoc.send_c_echo().Status == statuses.SUCCESS
        assoc.release()
        assert seen.classes == {Association}
    finally:
        ae.shutdown()


def test_an_idle_association_blocks_instead_of_polling(scp) -> None:  # type: ignore[no-untyped-def]
    """Behaviour, not speed: while nothing arrives, the acceptor's two loops block.

    Each loop counts the times it comes back from a wait. Blocking waits return at most every
    MAX_WAIT (0.1 s), i.e. ~10 times a second per loop; stock pynetdicom's 1 ms sleeps would
    come back ~1,000 times. Counting wake-ups, not CPU seconds, keeps a loaded machine from
    failing the test (CPU time per wake-up moves by 2-3x there; the count does not).
    """
    server, seen = scp
    assoc = requestor().associate("127.0.0.1", port(server), ae_title="MEDDET")
    assert assoc.is_established
    assert assoc.send_c_echo().Status == statuses.SUCCESS  # the acceptor now drives its DUL
    (acceptor,) = server.active_associations
    assert isinstance(acceptor, EventDrivenAssociation)
    time.sleep(0.2)
    before = acceptor.wakeups + acceptor.dul.wakeups
    idle_for = 1.0
    time.sleep(idle_for)
    woke = acceptor.wakeups + acceptor.dul.wakeups - before
    assert assoc.send_c_echo().Status == statuses.SUCCESS  # still alive and answering
    assoc.release()
    ceiling = 2 * idle_for / MAX_WAIT  # two loops, one wake-up per MAX_WAIT each at most
    assert 0 < woke <= ceiling * 1.5, f"idle association woke {woke} times in {idle_for} s"


def test_abort_from_another_thread_while_the_association_drives_its_dul(scp) -> None:  # type: ignore[no-untyped-def]
    """What Node.stop() does to an association that outlives the shutdown grace period."""
    server, seen = scp
    assoc = requestor().associate("127.0.0.1", port(server), ae_title="MEDDET")
    assert assoc.send_c_echo().Status == statuses.SUCCESS  # the acceptor now drives its DUL
    (acceptor,) = server.active_associations
    acceptor.abort()  # from this (the test's) thread
    deadline = time.monotonic() + 5
    while not assoc.is_aborted and time.monotonic() < deadline:
        time.sleep(0.02)
    assert assoc.is_aborted
    acceptor.join(5)
    assert not acceptor.is_alive()
