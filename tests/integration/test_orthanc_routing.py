"""deploy/orthanc on a real Orthanc: the Lua rule routes a stable cervical spine MR series to the
modality MEDDET (here a dcmtk storescp standing in for the node) and nothing else, and Orthanc
accepts result objects sent back by the AE MEDDET. Runs without the node or the detector."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

from dicom_node.loopback import wait_for
from tests.integration.orthanc_netns import NODE_PORT, NetNamespace, Orthanc

pytestmark = pytest.mark.integration

STORESCP = "/usr/bin/storescp"
STORESCU = "/usr/bin/storescu"


def _mr_series(folder: Path, count: int, body_part: str, description: str, study_uid: str) -> list[str]:
    """Write ``count`` small sagittal MR instances of one new series; returns their SOP UIDs."""
    folder.mkdir(parents=True)
    series_uid = generate_uid()
    uids = []
    for number in range(1, count + 1):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientID, ds.PatientName, ds.StudyID = "ROUTE1", "Routing^Test", "1"
        ds.Modality, ds.BodyPartExamined, ds.SeriesDescription = "MR", body_part, description
        ds.SeriesNumber, ds.InstanceNumber = 1, number
        ds.ImageOrientationPatient = [0, 1, 0, 0, 0, -1]
        ds.ImagePositionPatient = [float(number), 0, 0]
        ds.Rows = ds.Columns = 32
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = np.full((32, 32), number, dtype=np.uint16).tobytes()
        ds.save_as(folder / f"{number:03d}.dcm", enforce_file_format=True)
        uids.append(ds.SOPInstanceUID)
    return uids


def test_lua_rule_routes_only_the_cervical_series(namespace: NetNamespace, tmp_path: Path) -> None:
    received = tmp_path / "received"
    received.mkdir()
    env = {**os.environ, "TCP_NODELAY": "1"}
    namespace.popen([STORESCP, "-aet", "MEDDET", "-od", str(received), str(NODE_PORT)], tmp_path / "scp.log", env)
    orthanc = Orthanc(namespace, tmp_path / "orthanc", node_port=NODE_PORT, stable_age=1)
    orthanc.start()

    study_uid = generate_uid()
    cervical = _mr_series(tmp_path / "cervical", 3, "CSPINE", "Sag T2", study_uid)
    lumbar = _mr_series(tmp_path / "lumbar", 2, "LSPINE", "Sag T2 lumbar", study_uid)
    orthanc.upload([*(tmp_path / "cervical").iterdir(), *(tmp_path / "lumbar").iterdir()])

    def routed() -> set[str]:
        return {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in received.iterdir()}

    wait_for(lambda: routed() == set(cervical), 60, lambda: f"the cervical series\n{orthanc.log_text()}")
    wait_for(lambda: all(s["IsStable"] for s in orthanc.series_of_study(study_uid)), 30, "both series stable")
    assert routed() == set(cervical) and not routed() & set(lumbar)
    assert "meddet-autoroute: sending series" in orthanc.log_text()


def test_orthanc_accepts_results_from_the_node_ae(namespace: NetNamespace, tmp_path: Path) -> None:
    orthanc = Orthanc(namespace, tmp_path / "orthanc", stable_age=1)
    orthanc.start()
    study_uid = generate_uid()
    _mr_series(tmp_path / "result", 1, "CSPINE", "MedDet stand-in", study_uid)
    sent = namespace.run(
        [
            STORESCU,
            "-aet",
            "MEDDET",
            "-aec",
            orthanc.aet,
            "127.0.0.1",
            str(orthanc.dicom_port),
            str(tmp_path / "result" / "001.dcm"),
        ],
        env={**os.environ, "TCP_NODELAY": "1"},
    )
    assert sent.returncode == 0, sent.stderr
    [series] = orthanc.series_of_study(study_uid)
    assert series["MainDicomTags"]["SeriesDescription"] == "MedDet stand-in"
    instance = orthanc.get(f"/series/{series['ID']}/instances")[0]
    assert orthanc.get_bytes(f"/instances/{instance['ID']}/metadata/RemoteAET") == b"MEDDET"
