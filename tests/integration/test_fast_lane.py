"""The fast lane (dicom_node/fastlane.py) against real senders, every accepted transfer syntax.

C-STOREs from pynetdicom and dcmtk storescu are streamed to disk by the lane, never reaching
pynetdicom's handler; the spooled file is byte for byte what the pynetdicom path wrote
(``event.encoded_dataset()``: our file meta + the data set as received); other messages
(C-ECHO, N-ACTION) still reach pynetdicom on the same association; a large instance is never
held in memory.
"""

from __future__ import annotations

import struct
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID
from pynetdicom import AE, PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import MRImageStorage, Verification
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import statuses
from dicom_node.config import Settings
from dicom_node.headers import encode_file_meta
from dicom_node.loopback import wait_for
from dicom_node.node import Node
from dicom_node.scp import TRANSFER_SYNTAXES
from tests.conftest import storescu
from tests.factories import make_mr_series, write_series
from tests.integration.receiving import running_node

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


def instance_in(syntax: str, seed: int = 0, rows: int = 64) -> Dataset:
    """An MR instance in ``syntax``; compressed syntaxes get stand-in encapsulated frames
    (the node stores pixel data as sent and never decodes it while receiving)."""
    ds = make_mr_series(1, rows, rows, seed=seed)[0]
    ds.file_meta.TransferSyntaxUID = syntax
    if not UID(syntax).is_compressed:
        return ds
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    ds.PixelData = encapsulate([b"\xff\xd8" + bytes(range(256)) * 4 + b"\xff\xd9"])
    ds["PixelData"].VR = "OB"
    return ds


def expected_file(ds: Dataset, syntax: str) -> bytes:
    """What pynetdicom's ``event.encoded_dataset()`` gives for this instance, as received."""
    uid = UID(syntax)
    meta = encode_file_meta(
        str(ds.SOPClassUID),
        str(ds.SOPInstanceUID),
        syntax,
        PYNETDICOM_IMPLEMENTATION_UID,
        PYNETDICOM_IMPLEMENTATION_VERSION,
    )
    body = encode(ds, uid.is_implicit_VR, uid.is_little_endian, uid.is_deflated)
    assert body is not None
    return meta + body


def spooled(node: Node, ds: Dataset) -> Path:
    return node.spool.series_dir(ds.StudyInstanceUID, ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm"


@pytest.fixture
def node(node_settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Node]:
    with running_node(node_settings, session_factory, max_pdu=16384) as running:
        yield running


def test_every_transfer_syntax_from_pynetdicom_is_streamed_byte_exact(node: Node) -> None:
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(Verification)
    for syntax in TRANSFER_SYNTAXES:
        ae.add_requested_context(MRImageStorage, syntax)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDDET")
    assert assoc.is_established
    datasets = {syntax: instance_in(syntax, seed=i, rows=128) for i, syntax in enumerate(TRANSFER_SYNTAXES)}
    try:
        for syntax, ds in datasets.items():
            assert assoc.send_c_store(ds).Status == statuses.SUCCESS, syntax
            assert assoc.send_c_echo().Status == statuses.SUCCESS  # pynetdicom's, in between
    finally:
        assoc.release()
    for syntax, ds in datasets.items():
        assert spooled(node, ds).read_bytes() == expected_file(ds, syntax), syntax
    assert node.handlers.handler_stores == 0  # all through the lane
    assert list(node.spool.tmp_dir.iterdir()) == []


#: storescu's option proposing each transfer syntax (JPEG Lossless Process 14, .57, has none:
#: pynetdicom covers it above).
DCMTK_PROPOSE = {
    "1.2.840.10008.1.2.1": "-xe",
    "1.2.840.10008.1.2": "-xi",
    "1.2.840.10008.1.2.1.99": "-xd",
    "1.2.840.10008.1.2.4.50": "-xy",
    "1.2.840.10008.1.2.4.51": "-xx",
    "1.2.840.10008.1.2.4.70": "-xs",
    "1.2.840.10008.1.2.4.80": "-xt",
    "1.2.840.10008.1.2.4.81": "-xu",
    "1.2.840.10008.1.2.4.90": "-xv",
    "1.2.840.10008.1.2.4.91": "-xw",
    "1.2.840.10008.1.2.5": "-xr",
}


def test_every_transfer_syntax_from_dcmtk_is_streamed_byte_exact(node: Node, tmp_path: Path) -> None:
    datasets = [instance_in(syntax, seed=i, rows=128) for i, syntax in enumerate(DCMTK_PROPOSE)]
    files = write_series(datasets, tmp_path / "in")
    for ds, path in zip(datasets, files):  # one association each, proposing the file's syntax
        result = storescu(node.port, [path], "-R", DCMTK_PROPOSE[str(ds.file_meta.TransferSyntaxUID)])
        assert result.returncode == 0, result.stderr
    for ds, path in zip(datasets, files):
        data = path.read_bytes()
        meta_end = 132 + 12 + struct.unpack("<L", data[140:144])[0]
        got = spooled(node, ds).read_bytes()
        syntax = str(ds.file_meta.TransferSyntaxUID)
        meta = encode_file_meta(
            str(ds.SOPClassUID),
            str(ds.SOPInstanceUID),
            syntax,
            PYNETDICOM_IMPLEMENTATION_UID,
            PYNETDICOM_IMPLEMENTATION_VERSION,
        )
        assert got == meta + data[meta_end:], syntax  # dcmtk sends the data set as stored
    assert node.handlers.handler_stores == 0


def test_a_large_instance_is_streamed_not_held(node: Node, tmp_path: Path) -> None:
    """32 MiB of pixels from storescu (another process) in 16 KiB PDUs: the node's Python
    allocations stay a small fraction of it."""
    ds = make_mr_series(1, 8, 8)[0]
    ds.Rows = ds.Columns = 4096
    ds.PixelData = np.random.default_rng(0).integers(0, 4095, (4096, 4096), np.uint16).tobytes()
    (path,) = write_series([ds], tmp_path / "big")
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        result = storescu(node.port, [path])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert result.returncode == 0, result.stderr
    assert spooled(node, ds).stat().st_size > 32 << 20
    assert peak < 4 << 20, f"peak Python allocations {peak / 2**20:.1f} MiB while receiving 32 MiB"
    node.recorder.flush()
    assert node.handlers.handler_stores == 0


def test_stock_handler_path_gives_the_same_file(
    node_settings: Settings, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without the lane (pynetdicom's handler, e.g. with DEBUG logging) the spool is the same."""
    from dicom_node import fastlane

    monkeypatch.setattr(fastlane, "attach", lambda *args: False)
    with running_node(node_settings, session_factory) as node:
        ds = instance_in("1.2.840.10008.1.2.1")
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context(MRImageStorage, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDDET")
        assert assoc.send_c_store(ds).Status == statuses.SUCCESS
        assoc.release()
        assert spooled(node, ds).read_bytes() == expected_file(ds, "1.2.840.10008.1.2.1")
        assert node.handlers.handler_stores == 1
        wait_for(lambda: node.recorder.flush() is None)


def test_pdus_that_split_a_command_or_carry_a_whole_message_are_read_alike(
    node: Node, monkeypatch: pytest.MonkeyPatch
) -> None:
    """PS3.8 9.3.5 lets a sender put several PDVs in one P-DATA-TF and split a command set
    over PDUs. The sender here sends each C-STORE-RQ as: the first half of the command set in
    one PDU, then the rest of the command and every data set fragment in a second PDU."""
    from pynetdicom.dimse_messages import C_STORE_RQ
    from pynetdicom.pdu_primitives import P_DATA

    stock = C_STORE_RQ.encode_msg

    def regrouped(self, context_id: int, max_pdu_length: int):  # type: ignore[no-untyped-def]
        values = [v for p in stock(self, context_id, 0) for v in p.presentation_data_value_list]
        (cx, command), rest = values[0], values[1:]
        body = command[1:]
        first, second = P_DATA(), P_DATA()
        first.presentation_data_value_list.append((cx, b"\x01" + body[:40]))  # not the last fragment
        second.presentation_data_value_list.append((cx, b"\x03" + body[40:]))
        second.presentation_data_value_list.extend(rest)
        yield first
        yield second

    monkeypatch.setattr(C_STORE_RQ, "encode_msg", regrouped)
    datasets = [instance_in("1.2.840.10008.1.2.1", seed=i) for i in range(3)]
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(MRImageStorage, "1.2.840.10008.1.2.1")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDDET")
    assert assoc.is_established
    try:
        assert [assoc.send_c_store(ds).Status for ds in datasets] == [statuses.SUCCESS] * 3
        assert assoc.send_c_echo().Status == statuses.SUCCESS
    finally:
        assoc.release()
    for ds in datasets:
        assert spooled(node, ds).read_bytes() == expected_file(ds, "1.2.840.10008.1.2.1")
    assert node.handlers.handler_stores == 0
