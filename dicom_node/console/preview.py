"""Key-slice previews: the stored source slice with the job's boxes and labels, as a PNG.

Drawn by :func:`dicom_node.demo.render_key_slice` (the picture ``meddet demo`` saves), from
the spooled series and the job's findings.json. Rendered on request, kept in a small cache.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict

from pydicom import dcmread
from sqlalchemy.orm import Session, sessionmaker

from dicom_node.analysis import FINDINGS_FILE
from dicom_node.config import Settings
from dicom_node.console import data

BANNER = "MedDet (AI) - preliminary, not for diagnosis"


class PreviewUnavailable(LookupError):
    """No picture: the job, its findings, or the source slice (gone after retention) is missing."""


#: (job, findings file time, finding index, scale)
PreviewKey = tuple[int, float, int, int]


class PreviewCache:
    """The last ``size`` PNGs by (job, findings file time, finding index)."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._items: OrderedDict[PreviewKey, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: PreviewKey) -> bytes | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key: PreviewKey, png: bytes) -> None:
        with self._lock:
            self._items[key] = png
            while len(self._items) > self.size:
                self._items.popitem(last=False)


def render(
    sessions: sessionmaker[Session],
    settings: Settings,
    job_id: int,
    finding: int | None,
    cache: PreviewCache | None = None,
    scale: int = 2,
) -> bytes:
    """PNG of the slice of finding number ``finding`` (default: the first preview slice)."""
    from dicom_node.demo import render_key_slice

    with sessions() as session:
        where = data.job_series(session, job_id)
        found = data.results(session, settings, job_id) if where else None
        if where is None or found is None or not found.findings or not found.findings.get("findings"):
            raise PreviewUnavailable(f"job {job_id} has no findings to show")
        findings = found.findings["findings"]
        index = data.preview_slices(findings)[0] if finding is None else finding
        if not 0 <= index < len(findings):
            raise PreviewUnavailable(f"job {job_id} has no finding {index}")
        chosen = findings[index]
        path = data.source_file(session, where[0], chosen["sop_instance_uid"])
    stamp = (found.folder / FINDINGS_FILE).stat().st_mtime
    key = (job_id, stamp, index, scale)
    if cache is not None and (png := cache.get(key)) is not None:
        return png
    if path is None or not path.is_file():
        raise PreviewUnavailable(f"the source slice of job {job_id} is no longer in the spool")
    source = dcmread(path)
    image = render_key_slice(source, findings, scale, BANNER, frame=int(chosen.get("frame", 1)))
    out = io.BytesIO()
    image.save(out, format="PNG")
    png = out.getvalue()
    if cache is not None:
        cache.put(key, png)
    return png
