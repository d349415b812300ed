"""The spool: received instances on disk, one folder per study and series (mercure style).

Layout under ``data_dir``::

    tmp/                                   partial writes (same filesystem, renamed into place)
    spool/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm        first revision
    spool/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.r<N>.dcm   later, different bytes
    quarantine/<timestamp>-<n>.dcm + .json                   what could not be accepted, and why

A write is atomic (temp file, rename), so a file in ``spool/`` is always complete. With
``durable`` (``MEDDET_DURABILITY=per-instance``) the temp file and the folder are fsynced
before a write returns; otherwise (``group``) dicom_node/durability.py flushes written files
in groups before anything records them. The receive path streams each data set into a temp
file as it arrives (dicom_node/intake.py) and hands it to :meth:`Spool.place`.
"""

from __future__ import annotations

import filecmp
import hashlib
import itertools
import json
import os
import re
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from dicom_node.atomic import fsync_dir as _fsync_dir
from dicom_node.atomic import fsync_file as _fsync_file

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_REVISION_RE = re.compile(r"^(?P<sop>[0-9.]+?)(\.r(?P<rev>[0-9]+))?\.dcm$")
#: Bytes read per piece when hashing a spooled file (a typical instance: one piece).
_HASH_PIECE = 1 << 20


class SpoolError(Exception):
    """The instance could not be written (disk error); nothing was stored."""


@dataclass(frozen=True)
class StoredFile:
    path: Path
    revision: int
    #: SHA-256 (hex) of the whole file, file meta included. None: not computed yet; the
    #: receive path (:meth:`Spool.place`) leaves it to the audit recorder, which reads the
    #: file back (:func:`with_sha256`) off the association thread.
    sha256: str | None
    size: int
    duplicate: bool  # same bytes as an existing revision: nothing new was written


def file_sha256(path: Path) -> str:
    """SHA-256 (hex) of a file, read in pieces (hashlib releases the GIL while it hashes)."""
    digest = hashlib.sha256()
    with open(path, "rb", buffering=0) as handle:
        while piece := handle.read(_HASH_PIECE):
            digest.update(piece)
    return digest.hexdigest()


def with_sha256(stored: StoredFile) -> StoredFile:
    """``stored`` with its ``sha256`` (computed from the file when missing; OSError if unreadable)."""
    return stored if stored.sha256 is not None else replace(stored, sha256=file_sha256(stored.path))


def is_valid_uid(uid: str | None) -> bool:
    """A UID as PS3.5 9.1 allows: digits and dots, at most 64 characters."""
    return uid is not None and 0 < len(uid) <= 64 and bool(_UID_RE.match(uid))


def parse_spool_name(name: str) -> tuple[str, int] | None:
    """``1.2.3.dcm`` -> ("1.2.3", 0); ``1.2.3.r2.dcm`` -> ("1.2.3", 2); else None."""
    match = _REVISION_RE.match(name)
    if not match:
        return None
    return match["sop"], int(match["rev"] or 0)


def _check_uids(study_uid: str, series_uid: str, sop_uid: str) -> None:
    for name, uid in (("study", study_uid), ("series", series_uid), ("SOP instance", sop_uid)):
        if not is_valid_uid(uid):
            raise ValueError(f"invalid {name} UID {uid!r}")


def _free_revision(folder: Path, sop_uid: str, size: int, same: Callable[[Path], bool]) -> tuple[Path, int, bool]:
    """The first revision name of ``sop_uid`` in ``folder`` that is free, or the one already
    holding the same bytes (``same``, asked only of files of ``size`` bytes): (path, revision,
    whether it is that duplicate)."""
    base, revision = os.fspath(folder), 0
    while True:
        name = f"{sop_uid}.dcm" if revision == 0 else f"{sop_uid}.r{revision}.dcm"
        try:
            found = os.stat(f"{base}/{name}").st_size
        except (FileNotFoundError, NotADirectoryError):
            return folder / name, revision, False
        if found == size and same(folder / name):
            return folder / name, revision, True
        revision += 1


def _replace(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` into place; a series folder that retention removed meanwhile (this
    process or ``meddet spool gc``) is made again, so a late instance is never refused."""
    try:
        os.replace(tmp, final)
    except FileNotFoundError:
        if final.parent.is_dir() or not tmp.exists():
            raise
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp, final)


class Spool:
    """Atomic, duplicate-aware storage of received instances."""

    def __init__(self, spool_dir: Path, tmp_dir: Path, quarantine_dir: Path, durable: bool = True) -> None:
        self.spool_dir = spool_dir
        self.tmp_dir = tmp_dir
        self.quarantine_dir = quarantine_dir
        for folder in (spool_dir, tmp_dir, quarantine_dir):
            folder.mkdir(parents=True, exist_ok=True)
        self._counter = itertools.count()
        self._lock = threading.Lock()  # serialises revision numbering per process
        self._known_dirs: dict[tuple[str, str], Path] = {}  # series folders made or seen
        #: fsync file and folder before a write returns (``MEDDET_DURABILITY=per-instance``);
        #: off with group commit (dicom_node/durability.py flushes in groups).
        self.durable = durable

    def series_dir(self, study_uid: str, series_uid: str) -> Path:
        return self.spool_dir / study_uid / series_uid

    def temp_path(self) -> Path:
        """A fresh name in ``tmp/`` (same file system as the spool: renamed into place)."""
        return self.tmp_dir / f"{os.getpid()}-{threading.get_ident()}-{next(self._counter)}.part"

    def _series_folder(self, study_uid: str, series_uid: str) -> Path:
        folder = self._known_dirs.get((study_uid, series_uid))
        if folder is None:
            folder = self.series_dir(study_uid, series_uid)
            new = not folder.is_dir()
            folder.mkdir(parents=True, exist_ok=True)
            if new and self.durable:  # the new folders' own entries, too
                _fsync_dir(folder.parent)
                _fsync_dir(self.spool_dir)
            self._known_dirs[study_uid, series_uid] = folder
        return folder

    def _write_atomic(self, data: bytes, final: Path) -> None:
        tmp = self.temp_path()
        try:
            with open(tmp, "wb") as handle:
                handle.write(data)
                handle.flush()
                if self.durable:
                    os.fsync(handle.fileno())
            _replace(tmp, final)
            if self.durable:
                _fsync_dir(final.parent)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SpoolError(f"could not write {final.name}: {exc}") from exc

    def store(self, data: bytes, study_uid: str, series_uid: str, sop_uid: str) -> StoredFile:
        """Write one instance (a complete DICOM file) and return where it went.

        Identical bytes for a SOP Instance UID already spooled are not written again; different
        bytes become the next revision, so nothing already accepted is ever overwritten.
        """
        _check_uids(study_uid, series_uid, sop_uid)
        digest = hashlib.sha256(data).hexdigest()
        folder = self._series_folder(study_uid, series_uid)
        with self._lock:
            path, revision, same = _free_revision(folder, sop_uid, len(data), lambda p: p.read_bytes() == data)
            if same:
                return StoredFile(path, revision, digest, len(data), duplicate=True)
            self._write_atomic(data, path)
        return StoredFile(path, revision, digest, len(data), duplicate=False)

    def place(self, tmp: Path, size: int, study_uid: str, series_uid: str, sop_uid: str) -> StoredFile:
        """Rename a complete temp file (written by the receive path) into the spool, as
        :meth:`store` does with bytes; a duplicate's temp file is removed. Unlike
        :meth:`store` it does not hash: the returned ``sha256`` is None (see :class:`StoredFile`)."""
        _check_uids(study_uid, series_uid, sop_uid)
        try:
            folder = self._series_folder(study_uid, series_uid)
            with self._lock:
                path, revision, same = _free_revision(
                    folder, sop_uid, size, lambda p: filecmp.cmp(p, tmp, shallow=False)
                )
                if same:
                    tmp.unlink(missing_ok=True)
                    return StoredFile(path, revision, None, size, duplicate=True)
                if self.durable:
                    _fsync_file(tmp)
                _replace(tmp, path)
                if self.durable:
                    _fsync_dir(folder)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SpoolError(f"could not store {sop_uid}.dcm: {exc}") from exc
        return StoredFile(path, revision, None, size, duplicate=False)

    def quarantine_file(self, tmp: Path, reason: str, **context: str | None) -> Path:
        """Move a received temp file to ``quarantine/`` with its reason (see :meth:`quarantine`)."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.quarantine_dir / f"{stamp}-{os.getpid()}-{next(self._counter)}.dcm"
        try:
            if self.durable:
                _fsync_file(tmp)
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise SpoolError(f"could not quarantine: {exc}") from exc
        meta = {"reason": reason, "received_at": stamp, **context}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
        return path

    def quarantine(self, data: bytes, reason: str, **context: str | None) -> Path:
        """Keep bytes we could not accept, with a JSON file saying why. Never raises on content."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        path = self.quarantine_dir / f"{stamp}-{os.getpid()}-{next(self._counter)}.dcm"
        self._write_atomic(data, path)
        meta = {"reason": reason, "received_at": stamp, **context}
        path.with_suffix(".json").write_text(json.dumps(meta, indent=2))
        return path

    def disk_used_percent(self) -> float:
        usage = shutil.disk_usage(self.spool_dir)
        return 100.0 * usage.used / usage.total

    def iter_files(self) -> list[Path]:
        """Every spooled instance file (for crash recovery: reconcile disk with the DB)."""
        return sorted(self.spool_dir.glob("*/*/*.dcm"))

    def clean_tmp(self) -> int:
        """Remove partial writes left by a crash; they were never acknowledged."""
        removed = 0
        for part in self.tmp_dir.glob("*.part"):
            part.unlink(missing_ok=True)
            removed += 1
        return removed
