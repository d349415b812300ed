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
from tests import certificates
from tests.factories import make_mr_series
from tests.integration.receiving import running_node, start_node

pytestmark = pytest.mark.integration


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    return certificates.self_signed(tmp_path, "node", "localhost")


def test_tls_association_stores_and_plain_tcp_is_refused(
    node_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    cert, key = self_signed(tmp_path)
    with running_node(node_settings, session_factory, tls_cert=cert, tls_key=key) as node:
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


def _ca_and_client(tmp_path: Path, client_cn: str) -> tuple[Path, Path, Path, Path, Path]:
    """A CA, the node's certificate and a client certificate for ``client_cn``, all signed by it."""

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True)

    ca, ca_key = tmp_path / "ca.crt", tmp_path / "ca.key"
    run(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=test CA",
        "-keyout",
        str(ca_key),
        "-out",
        str(ca),
    )
    made = []
    for name, subj, ext in (
        ("node", "/CN=localhost", "subjectAltName=IP:127.0.0.1"),
        ("client", f"/CN={client_cn}", "extendedKeyUsage=clientAuth"),
    ):
        key, csr, crt = tmp_path / f"{name}.key", tmp_path / f"{name}.csr", tmp_path / f"{name}.crt"
        run("req", "-newkey", "rsa:2048", "-nodes", "-subj", subj, "-keyout", str(key), "-out", str(csr))
        (tmp_path / f"{name}.ext").write_text(ext + "\n")
        run(
            "x509",
            "-req",
            "-in",
            str(csr),
            "-CA",
            str(ca),
            "-CAkey",
            str(ca_key),
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            str(tmp_path / f"{name}.ext"),
            "-out",
            str(crt),
        )
        made += [crt, key]
    return ca, made[0], made[1], made[2], made[3]


def test_mutual_tls_ties_the_calling_ae_to_the_client_certificate(
    node_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    from sqlalchemy import select

    from dicom_node.audit.models import Association

    ca, node_crt, node_key, client_crt, client_key = _ca_and_client(tmp_path, "CTSCANNER1")
    with running_node(node_settings, session_factory, tls_cert=node_crt, tls_key=node_key, tls_ca=ca) as node:
        ds = make_mr_series(1, 32, 32)[0]

        def associate(calling: str):  # type: ignore[no-untyped-def]
            client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(ca))
            client.load_cert_chain(client_crt, client_key)
            ae = AE(ae_title=calling)
            ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
            ae.acse_timeout = 5
            return ae.associate("127.0.0.1", node.port, ae_title="MEDDET", tls_args=(client, "127.0.0.1"))

        own = associate("CTSCANNER1")
        assert own.is_established
        assert own.send_c_store(ds).Status == statuses.SUCCESS
        own.release()
        other = associate("PACS")  # a valid certificate, but not PACS's
        assert other.is_rejected and not other.is_established
        node.recorder.flush()
        with session_factory() as session:
            reasons = session.scalars(select(Association.reason).where(Association.outcome == "rejected")).all()
        assert any("not named by the peer's TLS client certificate" in (r or "") for r in reasons)
