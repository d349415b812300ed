"""Optional TLS on the SCP (pynetdicom ``ssl_context``), with a self-signed loopback cert."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest
from pynetdicom import AE
from pynetdicom.sop_class import Verification
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import statuses
from dicom_node.config import Settings
from tests.factories import make_mr_series
from tests.integration.test_receive import start_node

pytestmark = pytest.mark.integration


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    cert, key = tmp_path / "node.crt", tmp_path / "node.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )
    return cert, key


def test_tls_association_stores_and_plain_tcp_is_refused(
    node_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    node = start_node(node_settings.model_copy(update={"tls_cert": cert, "tls_key": key}), session_factory)
    try:
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ds = make_mr_series(1, 32, 32)[0]
        ae = AE(ae_title="TLSSCU")
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
        assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDDET", tls_args=(client, "127.0.0.1"))
        assert assoc.is_established
        assert assoc.send_c_store(ds).Status == statuses.SUCCESS
        assoc.release()

        plain = AE(ae_title="PLAIN")
        plain.add_requested_context(ds.SOPClassUID)
        plain.acse_timeout = 3
        refused = plain.associate("127.0.0.1", node.port, ae_title="MEDDET")
        assert not refused.is_established
    finally:
        node.stop(timeout=5)


def test_a_silent_tcp_connection_does_not_stop_tls_associations(
    node_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Issue 12 item 3: the TLS handshake must not run on the single accept thread."""
    cert, key = self_signed(tmp_path)
    node = start_node(node_settings.model_copy(update={"tls_cert": cert, "tls_key": key}), session_factory)
    silent = socket.create_connection(("127.0.0.1", node.port))  # connects, never says a word
    try:
        time.sleep(0.3)  # the node has accepted it by now
        client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(cert))
        ae = AE(ae_title="TLSSCU")
        ae.add_requested_context(Verification)
        ae.connection_timeout = ae.acse_timeout = 5  # before the fix the handshake hangs here
        started = time.monotonic()
        assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDDET", tls_args=(client, "127.0.0.1"))
        assert assoc.is_established
        assert assoc.send_c_echo().Status == statuses.SUCCESS
        assoc.release()
        assert time.monotonic() - started < 4
    finally:
        silent.close()
        node.stop(timeout=5)
