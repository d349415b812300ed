"""Atomic file writes: a temp file beside the target, fsynced, renamed into place.

The one writer of results (``dicom_node.analysis.write_results``: ``meddet predict``, the
worker, the demo); the spool shares its fsync helpers.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Callable
from pathlib import Path


def fsync_file(path: Path) -> None:
    """Flush ``path``'s data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_atomic(path: Path, write: Callable[[Path], object], *, durable: bool = True) -> None:
    """``write`` a temp file unique to this process, thread and call, then rename it to ``path``.

    Readers see the old file or the whole new one, never a part; two writers of one path
    never share a temp file. ``durable``: the file is fsynced before the rename and its
    folder after it. No temp file is left behind, also when ``write`` raises.
    """
    unique = f"{os.getpid()}-{threading.get_ident()}-{uuid.uuid4().hex[:8]}"
    tmp = path.with_name(f".{path.name}.{unique}.tmp")
    try:
        write(tmp)
        if durable:
            fsync_file(tmp)
        os.replace(tmp, path)
        if durable:
            fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
