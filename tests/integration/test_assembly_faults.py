"""One instance whose header cannot be decoded must not stop the node completing series.

Found by the fault suite's header fuzz (benchmarks/faults.py): a byte flipped in an element's
VR ("DS" -> "DY" in ImageOrientationPatient) passes the receive-time checks, which convert only
what they need, but the selection rules read that element later. The exception escaped the
assembler's pass, so the same series failed first in every pass and no series completed again.
"""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pynetdicom._config
import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import statuses
from dicom_node.audit.models import Series, SeriesState
from dicom_node.config import Settings
from dicom_node.loopback import wait_for
from tests.factories import make_mr_series
from tests.integration.receiving import running_node, send
from tests.integration.test_receive_faults import send_paths

pytestmark = pytest.mark.integration


def unknown_vr_instance(folder: Path) -> tuple[Path, str]:
    """A one-instance series whose ImageOrientationPatient has the VR "DY"; its series UID."""
    (ds,) = make_mr_series(1, 16, 16)
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    tag = b"\x20\x00\x37\x00DS"  # (0020,0037) DS, explicit VR little endian
    assert data.count(tag) == 1
    path = folder / "unknown-vr.dcm"
    path.write_bytes(data.replace(tag, b"\x20\x00\x37\x00DY"))
    return path, str(ds.SeriesInstanceUID)


def test_an_undecodable_header_skips_its_series_and_the_others_complete(
    node_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with running_node(node_settings, session_factory) as node:
        path, bad_uid = unknown_vr_instance(tmp_path)
        monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
        assert send_paths(node.port, [path]) == [statuses.SUCCESS]
        monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", False)
        good = make_mr_series(5, 32, 32)
        assert send(node.port, good) == [statuses.SUCCESS] * 5

        def states() -> dict[str, Series] | None:
            with session_factory() as session:
                rows = {s.series_instance_uid: s for s in session.scalars(select(Series))}
            done = all(s.state != SeriesState.receiving for s in rows.values())
            return rows if len(rows) == 2 and done else None

        rows = wait_for(states, timeout=15)
        assert rows is not None, "a series stayed receiving"
    assert rows[str(good[0].SeriesInstanceUID)].state == SeriesState.selected
    bad = rows[bad_uid]
    assert bad.state == SeriesState.skipped and bad.failed_rule == "unreadable_header"
    assert "DY" in (bad.selection_detail or "")
