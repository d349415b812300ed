"""Issue 12 item 11 (a): results go to a ``?tls=1`` destination over TLS, its certificate
verified, with a client certificate for mutual TLS; never in the clear."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from pydicom import Dataset
from pynetdicom import AE, evt
from pynetdicom.sop_class import MRImageStorage

from dicom_node import statuses
from dicom_node.config import Settings
from dicom_node.destinations import Destination
from dicom_node.sender import send_objects
from tests.certificates import self_signed
from tests.factories import make_mr_series

pytestmark = pytest.mark.integration


@pytest.fixture
def certs(tmp_path: Path) -> dict[str, Path]:
    server_cert, server_key = self_signed(tmp_path, "pacs")
    client_cert, client_key = self_signed(tmp_path, "meddet")
    return {"server_cert": server_cert, "server_key": server_key, "client_cert": client_cert, "client_key": client_key}


@pytest.fixture
def tls_scp(certs: dict[str, Path]) -> Iterator[Callable[[bool], tuple[int, list[Dataset]]]]:
    """Start a pynetdicom TLS Storage SCP (AE PACS); ``mutual``: it requires our client cert."""
    servers = []

    def start(mutual: bool) -> tuple[int, list[Dataset]]:
        received: list[Dataset] = []

        def on_store(event: evt.Event) -> int:
            received.append(event.dataset)
            return statuses.SUCCESS

        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(certs["server_cert"], certs["server_key"])
        if mutual:
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(certs["client_cert"])
        ae = AE(ae_title="PACS")
        ae.add_supported_context(MRImageStorage)
        server = ae.start_server(
            ("127.0.0.1", 0), block=False, ssl_context=context, evt_handlers=[(evt.EVT_C_STORE, on_store)]
        )
        servers.append(server)
        return int(server.server_address[1]), received

    yield start
    for server in servers:
        server.shutdown()


def settings_for(tmp_path: Path, destination: str, **tls: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", destinations=destination, **tls)


def test_destination_tls_option_parses_and_prints() -> None:
    destination = Destination.parse("PACS@[::1]:2762?tls=1&objects=sr+gsps")
    assert destination.tls and destination.objects == ("sr", "gsps")
    assert Destination.parse(str(destination)) == destination
    assert not Destination.parse("PACS@h:104?tls=0").tls
    with pytest.raises(ValueError, match="tls=1 or tls=0"):
        Destination.parse("PACS@h:104?tls=maybe")


def test_results_are_sent_over_mutual_tls(tmp_path: Path, certs: dict[str, Path], tls_scp) -> None:
    port, received = tls_scp(True)
    settings = settings_for(
        tmp_path,
        f"PACS@127.0.0.1:{port}?tls=1",
        destination_tls_ca=certs["server_cert"],
        destination_tls_cert=certs["client_cert"],
        destination_tls_key=certs["client_key"],
    )
    datasets = make_mr_series(2, 32, 32)
    report = send_objects(datasets, settings.destinations[0], calling_ae="MEDDET", retries=0)
    assert report.ok, report.summary
    assert sorted(ds.SOPInstanceUID for ds in received) == sorted(ds.SOPInstanceUID for ds in datasets)


def test_an_unverified_destination_gets_nothing(tmp_path: Path, tls_scp) -> None:
    """No CA given: the self-signed certificate is not trusted, nothing is sent."""
    port, received = tls_scp(False)
    settings = settings_for(tmp_path, f"PACS@127.0.0.1:{port}?tls=1")
    report = send_objects(make_mr_series(1, 32, 32), settings.destinations[0], calling_ae="MEDDET", retries=0)
    assert not report.ok and report.failed[0].outcome == "unreachable"
    assert received == []


def test_mutual_tls_without_our_certificate_sends_nothing(tmp_path: Path, certs: dict[str, Path], tls_scp) -> None:
    port, received = tls_scp(True)
    settings = settings_for(tmp_path, f"PACS@127.0.0.1:{port}?tls=1", destination_tls_ca=certs["server_cert"])
    report = send_objects(make_mr_series(1, 32, 32), settings.destinations[0], calling_ae="MEDDET", retries=0)
    assert not report.ok and received == []


def test_destination_tls_cert_needs_its_key(tmp_path: Path, certs: dict[str, Path]) -> None:
    with pytest.raises(ValueError, match="destination_tls_cert and destination_tls_key"):
        settings_for(tmp_path, "PACS@127.0.0.1:104?tls=1", destination_tls_cert=certs["client_cert"])
