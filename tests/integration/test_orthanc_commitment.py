"""Orthanc as the Storage Commitment SCU: it stores a study on the node through its REST API
with ``"StorageCommitment": true``, sends N-ACTION, and gets the node's N-EVENT-REPORT on a
new association to its own DICOM port (Orthanc releases right after N-ACTION). Runs in a
network namespace holding only loopback (tests/integration/orthanc_netns.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from pydicom.uid import generate_uid

from dicom_node.loopback import MEDDET, wait_for
from tests.factories import make_mr_series, write_series
from tests.integration.orthanc_netns import NODE_PORT, NetNamespace, Orthanc

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


def test_orthanc_storage_commitment_is_confirmed_by_the_node(namespace: NetNamespace, tmp_path: Path) -> None:
    orthanc = Orthanc(namespace, tmp_path / "orthanc", node_port=NODE_PORT, stable_age=60)
    (tmp_path / "model.pt").write_bytes(b"stand-in checkpoint: only its version is read here")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDDET_")} | {
        "MEDDET_DATA_DIR": str(tmp_path / "node"),
        "MEDDET_PORT": str(NODE_PORT),
        "MEDDET_BROKER_URL": "redis://127.0.0.1:1/0",  # nobody there: jobs wait, no model runs
        "MEDDET_CHECKPOINT": str(tmp_path / "model.pt"),
        "MEDDET_CONSOLE_PORT": "0",
        "MEDDET_COMMITMENT_PEERS": f"{orthanc.aet}@127.0.0.1:{orthanc.dicom_port}",
        "OMP_NUM_THREADS": "1",
    }
    node_log = tmp_path / "node.log"
    namespace.popen([*MEDDET, "serve"], node_log, env=env)
    orthanc.start()
    study_uid = generate_uid()
    datasets = make_mr_series(3, 64, 64, study_uid=study_uid, body_part="LSPINE")  # not auto-routed
    orthanc.upload(write_series(datasets, tmp_path / "study"))
    study_id = next(i["ID"] for i in orthanc.post("/tools/lookup", study_uid) if i["Type"] == "Study")

    wait_for(orthanc.echo, 60, lambda: f"the node\n{node_log.read_text()[-3000:]}")
    job = orthanc.post(
        "/modalities/MEDDET/store",
        json.dumps({"Resources": [study_id], "StorageCommitment": True, "Synchronous": True}),
    )
    transaction = job["StorageCommitmentTransactionUID"]

    def report() -> dict | None:
        status = orthanc.get(f"/storage-commitment/{transaction}")
        return status if status.get("Status") != "Pending" else None

    result = wait_for(report, 60, lambda: f"the report\n{orthanc.log_text()[-3000:]}\n{node_log.read_text()[-3000:]}")
    assert result["Status"] == "Success", result
    assert {item["SOPInstanceUID"] for item in result["Success"]} == {str(ds.SOPInstanceUID) for ds in datasets}
    assert result["Failures"] == []

    # Orthanc has the report before the node hears its N-EVENT-REPORT-RSP and logs delivery
    def delivered() -> str | None:
        text = node_log.read_text()
        return text if "storage commitment report delivered" in text else None

    log = wait_for(delivered, 30, lambda: f"the node logging the delivery\n{node_log.read_text()[-3000:]}")
    assert "route=new" in log
