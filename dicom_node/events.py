"""The node's events: what the receive path tells the audit recorder (through the group
committer, dicom_node/durability.py, which holds instance events back until they are flushed).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from dicom_node.audit.models import utcnow
from dicom_node.headers import InstanceHeader
from dicom_node.spool import StoredFile


@dataclass(frozen=True)
class AssociationOpened:
    key: int
    calling_ae: str
    called_ae: str
    address: str
    port: int | None
    at: datetime


@dataclass(frozen=True)
class AssociationClosed:
    key: int
    outcome: str  # released / aborted
    n_stored: int
    n_failed: int
    at: datetime


@dataclass(frozen=True)
class AssociationRejected:
    calling_ae: str
    called_ae: str
    address: str
    port: int | None
    reason: str
    at: datetime


@dataclass(frozen=True)
class InstanceStored:
    key: int | None  # association key; None for files found by recovery
    header: InstanceHeader
    stored: StoredFile  # sha256 None from the receive path: the recorder hashes the file
    at: datetime


@dataclass(frozen=True)
class InstanceQuarantined:
    key: int | None
    sop_uid: str | None
    path: Path
    reason: str
    at: datetime


class Barrier:
    """Passes through the pipeline behind everything queued before it; set once all of that
    is flushed (group commit) and committed to the audit DB. Storage Commitment waits on it."""

    __slots__ = ("done", "at")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.at = utcnow()

    def wait(self, timeout: float) -> bool:
        return self.done.wait(timeout)


Event = AssociationOpened | AssociationClosed | AssociationRejected | InstanceStored | InstanceQuarantined | Barrier
