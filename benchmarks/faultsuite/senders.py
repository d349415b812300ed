"""Storage SCUs for the fault suite: pynetdicom and dcmtk ``storescu``, retrying until every
instance of a series is acknowledged, and a ledger of what was sent and acknowledged."""

from __future__ import annotations

import logging
import re
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from benchmarks.faultsuite.generator import SeriesFiles, is_dcmtk
from tests.conftest import dcmtk, dcmtk_env

SUCCESS = 0x0000
_SENDING = re.compile(r"Sending file: (?P<path>.+)$")
_RESPONSE = re.compile(r"Received Store Response \((?P<status>[^)]*)\)")

logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)  # refused connections are expected


class Ledger:
    """Thread-safe: every SOP Instance UID sent, every one acknowledged, refusals by status."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.sent: set[str] = set()
        self.acked: set[str] = set()
        self.refusals: Counter[str] = Counter()
        self.associations = 0
        self.failed_associations = 0
        self._watchers: list[Callable[[int], None]] = []

    def watch(self, callback: Callable[[int], None]) -> None:
        """Call ``callback(acked count)`` after every acknowledgement (from the sender's thread)."""
        self._watchers.append(callback)

    def attempt(self, uids: Sequence[str]) -> None:
        with self._lock:
            self.sent.update(uids)
            self.associations += 1

    def no_association(self) -> None:
        with self._lock:
            self.failed_associations += 1

    def ack(self, uid: str) -> None:
        with self._lock:
            self.acked.add(uid)
            count = len(self.acked)
        for callback in self._watchers:
            callback(count)

    def refuse(self, status: str) -> None:
        with self._lock:
            self.refusals[status] += 1


@dataclass(eq=False)
class Sender:
    """One SCU sending its series one after another, each until acknowledged (or ``deadline``)."""

    name: str  # its calling AE title
    port: int  # the node's, on loopback
    ledger: Ledger
    retry_delay: float = 0.3

    def send_once(self, series: SeriesFiles, files: Sequence[Path]) -> None:
        raise NotImplementedError

    def pending(self, series: SeriesFiles) -> list[Path]:
        return [f for f, uid in zip(series.files, series.sop_uids) if uid not in self.ledger.acked]

    def send(self, series: SeriesFiles, deadline: float) -> bool:
        """Send until every instance is acknowledged; False when ``deadline`` passed first."""
        while files := self.pending(series):
            if time.monotonic() > deadline:
                return False
            uids = [uid for f, uid in zip(series.files, series.sop_uids) if f in files]
            self.ledger.attempt(uids)
            self.send_once(series, files)
            if self.pending(series):
                time.sleep(self.retry_delay)
        return True

    def run(self, plan: Sequence[SeriesFiles], deadline: float, pace: float = 0.0) -> list[str]:
        """Send ``plan`` in order; the series UIDs not fully acknowledged by ``deadline``."""
        missed = []
        for series in plan:
            if not self.send(series, deadline):
                missed.append(series.series_uid)
            time.sleep(pace)
        return missed


class PynetdicomSender(Sender):
    """pynetdicom SCU: one association per attempt, a context per transfer syntax it sends."""

    def __init__(self, name: str, port: int, ledger: Ledger, retry_delay: float = 0.3) -> None:
        from pydicom.uid import MRImageStorage
        from pynetdicom import AE

        from benchmarks.faultsuite.generator import SCU_SYNTAXES
        from dicom_node.synth import TRANSFER_SYNTAXES

        super().__init__(name, port, ledger, retry_delay)
        self.ae = AE(ae_title=name)
        for syntax in SCU_SYNTAXES:
            self.ae.add_requested_context(MRImageStorage, TRANSFER_SYNTAXES[syntax])

    def send_once(self, series: SeriesFiles, files: Sequence[Path]) -> None:
        from pydicom import dcmread

        assoc = self.ae.associate("127.0.0.1", self.port, ae_title="MEDDET")
        if not assoc.is_established:
            self.ledger.no_association()
            return
        try:
            for path in files:
                ds = dcmread(path)
                response = assoc.send_c_store(ds)
                status = getattr(response, "Status", None)
                if status is None:  # aborted, or no answer
                    self.ledger.refuse("no response")
                    break
                if int(status) == SUCCESS:
                    self.ledger.ack(str(ds.SOPInstanceUID))
                else:
                    self.ledger.refuse(f"0x{int(status):04X}")
        finally:
            if assoc.is_established:
                assoc.release()


class StorescuSender(Sender):
    """dcmtk ``storescu -v``: one process per attempt; acknowledgements read from its log."""

    def send_once(self, series: SeriesFiles, files: Sequence[Path]) -> None:
        by_path = dict(zip(map(str, series.files), series.sop_uids))
        cli = subprocess.run(
            [
                dcmtk("storescu"),
                "-v",
                "-aet",
                self.name,
                "-aec",
                "MEDDET",
                "127.0.0.1",
                str(self.port),
                *map(str, files),
            ],
            env=dcmtk_env(),
            capture_output=True,
            text=True,
            timeout=120,
        )
        current = None
        for line in (cli.stdout + cli.stderr).splitlines():
            if sending := _SENDING.search(line):
                current = by_path.get(sending["path"].strip())
            elif (response := _RESPONSE.search(line)) and current is not None:
                if response["status"] == "Success":
                    self.ledger.ack(current)
                else:
                    self.ledger.refuse(response["status"])
                current = None
        if "Association Request Failed" in cli.stderr + cli.stdout:
            self.ledger.no_association()


def make_sender(index: int, senders: int, port: int, ledger: Ledger) -> Sender:
    """Sender ``index`` of ``senders``: dcmtk where :func:`is_dcmtk` says so, else pynetdicom."""
    if is_dcmtk(index, senders):
        return StorescuSender(f"STORESCU{index}", port, ledger)
    return PynetdicomSender(f"PYSCU{index}", port, ledger)


class Traffic:
    """Every sender on its own thread, sending its plan; ``join()`` gives what was missed."""

    def __init__(
        self, plan: Sequence[Sequence[SeriesFiles]], port: int, ledger: Ledger, timeout: float, pace: float = 0.0
    ) -> None:
        self.total = sum(len(s.files) for series in plan for s in series)
        self._missed: list[str] = []
        self._deadline = time.monotonic() + timeout
        self._threads = [
            threading.Thread(
                target=self._run,
                args=(make_sender(i, len(plan), port, ledger), series, pace),
                name=f"sender-{i}",
                daemon=True,
            )
            for i, series in enumerate(plan)
        ]

    def _run(self, sender: Sender, plan: Sequence[SeriesFiles], pace: float) -> None:
        self._missed.extend(sender.run(plan, self._deadline, pace))

    def start(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def join(self) -> list[str]:
        for thread in self._threads:
            thread.join(max(0.0, self._deadline - time.monotonic()) + 30)
        return list(self._missed)
