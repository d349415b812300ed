"""Bad input, policy refusals and crashes: the right status, a record, and the node goes on."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path

import pynetdicom._config
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from dicom_node import statuses
from dicom_node.audit.db import make_engine, make_session_factory
from dicom_node.audit.models import Association, Instance, QuarantineRecord, SeriesState
from dicom_node.config import Settings
from dicom_node.loopback import free_port, wait_for
from tests.conftest import storescu
from tests.factories import make_mr_series, write_series
from tests.integration.receiving import completed, rejected_association, running_node, send, serve, start_node

pytestmark = pytest.mark.integration


def raw_file(tmp_path: Path, ds: Dataset, body: bytes, name: str) -> Path:
    """A file with valid file meta and ``body`` as the data set: sent without decoding."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    data = buffer.getvalue()
    meta_end = 132 + 12 + int.from_bytes(data[140:144], "little")  # preamble+DICM, group length
    path = tmp_path / name
    path.write_bytes(data[:meta_end] + body)
    return path


def send_paths(port: int, paths: list[Path], ae_title: str = "PYSCU") -> list[int]:
    """Send files as raw bytes, undecoded (pynetdicom's chunked mode), like a broken sender."""
    ae = AE(ae_title=ae_title)
    ae.add_requested_context("1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="MEDDET")
    assert assoc.is_established
    try:
        return [int(assoc.send_c_store(path).Status) for path in paths]
    finally:
        assoc.release()


def test_bad_instances_are_quarantined_and_the_next_good_series_is_accepted(
    node_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)
    with running_node(node_settings, session_factory) as node:
        ds = make_mr_series(1, 64, 64)[0]
        buffer = BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        full = buffer.getvalue()
        truncated = tmp_path / "truncated.dcm"
        truncated.write_bytes(full[:-3000])
        garbage = raw_file(tmp_path, ds, b"\xff\x00 this is not DICOM " * 40, "garbage.dcm")
        truncated_status, garbage_status = send_paths(node.port, [truncated, garbage])
        assert truncated_status == statuses.CANNOT_UNDERSTAND
        assert garbage_status in (statuses.CANNOT_UNDERSTAND, statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS)

        no_uid = make_mr_series(1, 64, 64)[0]
        del no_uid.SeriesInstanceUID
        zero_rows = make_mr_series(1, 64, 64)[0]
        zero_rows.Rows = 0
        assert send(node.port, [no_uid, zero_rows]) == [statuses.DATASET_DOES_NOT_MATCH_SOP_CLASS] * 2

        bad_charset = make_mr_series(5, 64, 64)  # 5: the default minimum slice count
        for item in bad_charset:
            item.SpecificCharacterSet = "ISO_IR 999"
        good = make_mr_series(6, 64, 64)
        assert send(node.port, bad_charset + good) == [statuses.SUCCESS] * 11
        for series in (bad_charset, good):
            done = wait_for(lambda s=series: completed(session_factory, s[0].SeriesInstanceUID))
            assert done.state == SeriesState.selected and done.n_instances == len(series)

        node.recorder.flush()
        with session_factory() as session:
            reasons = list(session.scalars(select(QuarantineRecord.reason)))
            failed = session.scalar(select(func.sum(Association.n_failed)))
        assert len(reasons) == 4 and failed == 4
        assert any("truncated" in r for r in reasons) and any("SeriesInstanceUID" in r for r in reasons)
        quarantined = sorted(node_settings.quarantine_dir.glob("*.dcm"))
        assert len(quarantined) == 4 and all(p.with_suffix(".json").exists() for p in quarantined)


def test_unknown_calling_ae_is_rejected_and_recorded(
    node_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with running_node(node_settings, session_factory, allowed_aes=["GOODPACS"]) as node:
        files = write_series(make_mr_series(2, 64, 64), tmp_path / "in")
        refused = storescu(node.port, files, aet="STRANGER")
        assert refused.returncode != 0 and "Rejected" in (refused.stderr + refused.stdout)
        accepted = storescu(node.port, files, aet="GOODPACS")
        assert accepted.returncode == 0, accepted.stderr
        rejected = rejected_association(node, session_factory)
        assert rejected.calling_ae == "STRANGER" and "allow-list" in rejected.reason


def test_spool_disk_above_watermark_refuses_with_out_of_resources(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory, disk_watermark=0.001) as node:
        datasets = make_mr_series(2, 64, 64)
        assert send(node.port, datasets) == [statuses.OUT_OF_RESOURCES] * 2
        assert node.spool.iter_files() == []
    with running_node(node_settings, session_factory) as healthy:  # room again: the same data goes in
        assert send(healthy.port, datasets) == [statuses.SUCCESS] * 2


def test_sigkill_mid_series_loses_nothing_and_the_series_completes_once(tmp_path: Path) -> None:
    port = free_port()
    datasets = make_mr_series(10, 64, 64)
    files = write_series(datasets, tmp_path / "in")
    process = serve(tmp_path, port)
    try:
        assert storescu(port, files[:6]).returncode == 0
    finally:
        process.kill()
    process = serve(tmp_path, port)
    try:
        # The sender does not know what arrived: it sends everything again.
        assert storescu(port, files).returncode == 0
        factory = make_session_factory(make_engine(f"sqlite:///{tmp_path / 'data' / 'meddet.db'}"))
        series = wait_for(lambda: completed(factory, datasets[0].SeriesInstanceUID), timeout=30)
        assert series.state == SeriesState.selected and series.n_instances == 10
        with factory() as session:
            uids = list(session.scalars(select(Instance.sop_instance_uid).where(Instance.series_id == series.id)))
        assert sorted(uids) == sorted(str(ds.SOPInstanceUID) for ds in datasets)  # each exactly once
    finally:
        assert process.stop(timeout=40) == 0
    log = (tmp_path / "serve.log").read_text()
    assert datasets[0].SeriesInstanceUID in log  # logs name UIDs ...
    assert "SYNTH^TEST" not in log and "SYNTH0001" not in log  # ... never the patient


def test_source_address_allow_list(
    node_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    # Only the allow-list holds this documentation address; all traffic stays on loopback.
    with running_node(node_settings, session_factory, allowed_ips=["192.0.2.10"]) as node:
        files = write_series(make_mr_series(1, 64, 64), tmp_path / "in")
        refused = storescu(node.port, files)
        assert refused.returncode != 0 and "Rejected" in refused.stderr
        rejected = rejected_association(node, session_factory)
        assert rejected.address == "127.0.0.1" and "allow-list" in rejected.reason
        assert node.spool.iter_files() == []


def test_associations_beyond_the_maximum_are_rejected(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with running_node(node_settings, session_factory, max_associations=1) as node:
        ae = AE(ae_title="PYSCU")
        ae.add_requested_context("1.2.840.10008.1.1")
        first = ae.associate("127.0.0.1", node.port, ae_title="MEDDET")
        assert first.is_established
        second = ae.associate("127.0.0.1", node.port, ae_title="MEDDET")
        assert second.is_rejected
        first.release()
        rejected = rejected_association(node, session_factory)
        assert rejected.reason == "too many concurrent associations"


def test_shutdown_aborts_a_lingering_association_and_leaves_no_partial_file(
    node_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    node = start_node(node_settings, session_factory)
    datasets = make_mr_series(3, 64, 64)
    ae = AE(ae_title="PYSCU")
    ae.add_requested_context(datasets[0].SOPClassUID, datasets[0].file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", node.port, ae_title="MEDDET")
    assert [assoc.send_c_store(ds).Status for ds in datasets[:2]] == [statuses.SUCCESS] * 2
    node.stop(timeout=0.5)  # the sender never releases: aborted after the grace period
    wait_for(lambda: assoc.is_aborted or not assoc.is_alive())
    assert len(node.spool.iter_files()) == 2  # what was acknowledged is on disk ...
    assert list(node.spool.tmp_dir.iterdir()) == []  # ... and nothing half-written
    with session_factory() as session:
        assert session.scalar(select(func.count(Instance.id))) == 2
