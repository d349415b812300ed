"""A real PACS (Orthanc, in a loopback-only network namespace) accepts every result object
our sender stores, each kind in its own new series of the source study."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from dicom_node.analysis import write_result_objects
from tests.integration.orthanc_netns import NetNamespace, Orthanc
from tests.results.make_sources import STUDY_UID, calibrated_findings_for, findings_for, mr_series

pytestmark = pytest.mark.integration

# Runs inside the namespace (Orthanc is reachable only there).
_SEND = r"""
import sys, pydicom
from dicom_node.destinations import Destination
from dicom_node.sender import send_objects
report = send_objects([pydicom.dcmread(p) for p in sys.argv[2:]], Destination.parse(sys.argv[1]),
                      calling_ae="MEDDET", retries=1, backoff=0.5)
print(report.summary)
sys.exit(0 if report.ok else 1)
"""


@pytest.fixture()
def orthanc(namespace: NetNamespace, tmp_path: Path) -> Orthanc:
    return Orthanc(namespace, tmp_path / "orthanc", stable_age=1).start()


@pytest.mark.parametrize("document", [findings_for, calibrated_findings_for], ids=["plain", "calibrated"])
def test_orthanc_stores_sr_seg_gsps_sc_kos(orthanc: Orthanc, tmp_path: Path, document) -> None:
    sources = mr_series()
    kinds = ("sr", "seg", "gsps", "sc", "kos")
    paths = write_result_objects(document(sources), sources, tmp_path / "out", kinds)
    sent = orthanc.ns.run(
        [sys.executable, "-c", _SEND, orthanc.destination, *map(str, paths)],
        cwd=Path(__file__).resolve().parents[2],
    )
    assert sent.returncode == 0, sent.stdout.decode() + sent.stderr.decode()[-3000:]
    series = orthanc.series_of_study(STUDY_UID)
    modalities = sorted(s["MainDicomTags"].get("Modality") for s in series)
    assert modalities == ["KO", "OT", "PR", "SEG", "SR"]
    assert sum(len(s["Instances"]) for s in series) == len(paths)  # SC: one per key slice
