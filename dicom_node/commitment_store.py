"""Storage Commitment requests on disk: accepted N-ACTIONs survive a restart or a crash.

Each accepted request is one small JSON file under ``data_dir/commitment/``, written with
:func:`dicom_node.atomic.write_atomic` (temp file, fsync, rename, fsync of the folder) before
N-ACTION-RSP success is sent, and removed once its N-EVENT-REPORT is delivered (or can never
be). At start-up the node loads what is left and answers it (dicom_node/commitment.py).
File names sort by acceptance time: ``<time ns>-<Transaction UID>.json``.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

from dicom_node.atomic import fsync_dir, write_atomic
from dicom_node.logging import get_logger
from dicom_node.spool import is_valid_uid

log = get_logger(__name__)

#: A pending request older than this at start-up is dropped (its SCU gave up long ago).
MAX_AGE_S = 24 * 3600.0


@dataclass(frozen=True)
class PendingRequest:
    """An accepted N-ACTION whose report is owed, as read back from disk."""

    path: Path
    transaction_uid: str
    calling_ae: str
    references: list[tuple[str, str]]  # (SOP Class UID, SOP Instance UID)


class PendingRequests:
    """The folder of accepted, not yet answered Storage Commitment requests."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _ensure_folder(self) -> None:
        if not self.folder.is_dir():
            self.folder.mkdir(parents=True, exist_ok=True)
            fsync_dir(self.folder.parent)  # the new folder's own entry

    def save(self, transaction_uid: str, calling_ae: str, references: list[tuple[str, str]]) -> Path:
        """Write one request durably; returns its file. Raises OSError when it cannot."""
        self._ensure_folder()
        path = self.folder / f"{time.time_ns():020d}-{transaction_uid}.json"
        body = json.dumps(
            {
                "transaction_uid": transaction_uid,
                "calling_ae": calling_ae,
                "references": [list(ref) for ref in references],
            }
        )
        write_atomic(path, lambda tmp: tmp.write_text(body, encoding="ascii"))
        return path

    def remove(self, path: Path) -> None:
        """The report is delivered (or never can be): forget the request."""
        try:
            path.unlink(missing_ok=True)
            fsync_dir(path.parent)
        except OSError as exc:  # answered again after a restart: harmless for the SCU
            log.warning("could not remove an answered storage commitment request", path=str(path), error=str(exc))

    def load(self, max_age_s: float = MAX_AGE_S) -> list[PendingRequest]:
        """Requests left by an earlier run, oldest first; unreadable or stale files are removed."""
        if not self.folder.is_dir():
            return []
        found: list[PendingRequest] = []
        now = time.time()
        for path in sorted(self.folder.glob("*.json")):
            if path.name.startswith("."):
                continue
            try:
                if now - os.stat(path).st_mtime > max_age_s:
                    log.warning("stale storage commitment request dropped", path=str(path))
                    self.remove(path)
                    continue
                found.append(_parse(path))
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.error("unreadable storage commitment request dropped", path=str(path), error=str(exc))
                self.remove(path)
        for leftover in self.folder.glob(".*.tmp"):  # a write cut short: never acknowledged
            leftover.unlink(missing_ok=True)
        return found


def _parse(path: Path) -> PendingRequest:
    data = json.loads(path.read_text(encoding="ascii"))
    uid, calling = str(data["transaction_uid"]), str(data["calling_ae"])
    references = [(str(c), str(i)) for c, i in data["references"]]
    if not is_valid_uid(uid) or not references or not all(is_valid_uid(c) and is_valid_uid(i) for c, i in references):
        raise ValueError("invalid Transaction UID or references")
    return PendingRequest(path, uid, calling, references)
