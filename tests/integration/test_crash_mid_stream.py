"""SIGKILL in the middle of a stream of C-STOREs (issue 14): after a restart, every instance is
either absent and was never acknowledged, or present, complete and recorded."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import MRImageStorage
from sqlalchemy import select

from dicom_node import statuses
from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.audit.models import Instance
from dicom_node.headers import inspect_instance
from dicom_node.loopback import free_port
from tests.factories import make_mr_series
from tests.integration.receiving import serve

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


@pytest.mark.parametrize("durability", ["group", "per-instance"])
def test_sigkill_mid_stream_loses_no_acknowledged_instance(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, durability: str
) -> None:
    monkeypatch.setenv("MEDDET_DURABILITY", durability)
    port = free_port()
    datasets = make_mr_series(400, 128, 128, images_in_acquisition=False)
    acknowledged: list[str] = []
    process = serve(tmp_path, port)

    def sender() -> None:
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context(MRImageStorage, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", port, ae_title="MEDDET")
        for ds in datasets:
            if not assoc.is_established:
                return
            status = assoc.send_c_store(ds)
            if getattr(status, "Status", None) == statuses.SUCCESS:
                acknowledged.append(str(ds.SOPInstanceUID))
        assoc.release()

    thread = threading.Thread(target=sender)
    thread.start()
    try:
        deadline = time.monotonic() + 60
        while len(acknowledged) < 80 and time.monotonic() < deadline:
            time.sleep(0.005)
        process.kill()  # mid-association, most likely mid-data set
        killed_after = len(acknowledged)
        thread.join(60)
    finally:
        process.kill()
    assert 80 <= killed_after < len(datasets), "the kill did not land mid-stream"

    process = serve(tmp_path, port)  # recovery runs before it listens
    try:
        factory = make_session_factory(make_engine(f"sqlite:///{tmp_path / 'data' / 'meddet.db'}"))
        with factory() as session:
            recorded = {
                uid: path for uid, path in session.execute(select(Instance.sop_instance_uid, Instance.spool_path))
            }
        spool = tmp_path / "data" / "spool"
        present = {p.stem: p for p in spool.glob("*/*/*.dcm")}
        for uid in acknowledged:  # acknowledged: present and recorded
            assert uid in present and uid in recorded, uid
        for uid, path in present.items():  # present: complete and recorded
            assert uid in recorded
            assert inspect_instance(path.read_bytes()).sop_uid == uid
        assert not list((tmp_path / "data" / "tmp").glob("*.part"))  # partial writes cleaned
        # Nothing else was invented: every recorded instance is one that was sent.
        assert set(recorded) <= {str(ds.SOPInstanceUID) for ds in datasets}
    finally:
        assert process.stop(timeout=40) == 0
