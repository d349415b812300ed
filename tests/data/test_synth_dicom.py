"""`meddet synth`: real DICOM MR series that pass dciodvfy and read back to the generator's pixels."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from detector.data.synthetic import make_study
from dicom_node.pixels import read_series
from dicom_node.synth import TRANSFER_SYNTAXES

DCIODVFY = shutil.which("dciodvfy") or "/usr/bin/dciodvfy"
SLICES, SIZE, SEED = 4, 128, 21


def meddet(*args: str) -> subprocess.CompletedProcess:
    """The installed ``meddet`` entry point, as a user runs it."""
    return subprocess.run(
        ["meddet", *args],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "MEDDET_LOG_LEVEL": "warning"},
    )


def synth_in_process(*args: str):
    """The same command in-process (fast: no interpreter start per call)."""
    import dicom_node.cli.data  # noqa: F401  (registers the command)
    from dicom_node.cli import app

    return CliRunner().invoke(app, ["synth", *args])


@pytest.fixture(scope="module")
def synth_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("synth")
    out = {}
    for ts in TRANSFER_SYNTAXES:
        run = synth_in_process(
            "--out",
            str(root / ts),
            "--studies",
            "1",
            "--seed",
            str(SEED),
            "--slices",
            str(SLICES),
            "--size",
            str(SIZE),
            "--transfer-syntax",
            ts,
        )
        assert run.exit_code == 0, run.output
        out[ts] = root / ts
    return out


def dciodvfy_errors(path: Path) -> list[str]:
    run = subprocess.run([DCIODVFY, str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (run.stdout + run.stderr).splitlines() if "Error" in line]


@pytest.mark.parametrize("ts", [t for t in TRANSFER_SYNTAXES if t != "deflate"])
def test_every_file_passes_dciodvfy(synth_dirs, ts):
    files = sorted((synth_dirs[ts] / "SYN0001" / "dicom").glob("*.dcm"))
    assert len(files) == SLICES
    for f in files:
        assert dciodvfy_errors(f) == [], f
        ds = pydicom.dcmread(f)
        assert ds.file_meta.TransferSyntaxUID == TRANSFER_SYNTAXES[ts]
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID


def test_deflated_files_are_valid_after_dcmtk_inflates_them(synth_dirs, tmp_path):
    """dciodvfy cannot read deflate; dcmtk inflates it (proving the deflate stream is valid)."""
    for f in sorted((synth_dirs["deflate"] / "SYN0001" / "dicom").glob("*.dcm")):
        inflated = tmp_path / f.name
        run = subprocess.run(["/usr/bin/dcmconv", "+te", str(f), str(inflated)], capture_output=True, text=True)
        assert run.returncode == 0, run.stderr
        assert dciodvfy_errors(inflated) == []


@pytest.mark.parametrize("ts", list(TRANSFER_SYNTAXES))
def test_read_back_equals_generator(synth_dirs, ts):
    study = make_study(np.random.default_rng([SEED, 0]), n_slices=SLICES, size=SIZE)
    series = read_series(synth_dirs[ts] / "SYN0001" / "dicom")
    vol = np.stack(series.images)
    assert vol.dtype == np.float32
    assert np.array_equal(vol, np.clip(np.rint(study.volume), 0, 65535))  # lossless, in slice order
    gt = json.loads((synth_dirs[ts] / "SYN0001" / "ground_truth.json").read_text())
    assert [s.sop_instance_uid for s in series.slices] == list(gt["instances"])
    assert gt["herniated_levels"] == list(study.herniated_levels)


def test_headers_describe_a_sagittal_t2_cervical_series(synth_dirs):
    files = sorted((synth_dirs["explicit"] / "SYN0001" / "dicom").glob("*.dcm"))
    datasets = [pydicom.dcmread(f) for f in files]
    ds = datasets[0]
    assert ds.SOPClassUID == pydicom.uid.MRImageStorage and ds.Modality == "MR"
    assert [float(v) for v in ds.ImageOrientationPatient] == [0, 1, 0, 0, 0, -1]
    assert ds.BodyPartExamined == "CSPINE" and "T2" in ds.SeriesDescription
    assert ds.ScanningSequence == "SE" and float(ds.EchoTime) >= 80 and float(ds.RepetitionTime) >= 2000
    assert ds.ImagesInAcquisition == SLICES and ds.BitsAllocated == 16
    assert str(ds.PatientName).startswith("SYNTH^")
    xs = [float(d.ImagePositionPatient[0]) for d in datasets]
    assert len(set(xs)) == SLICES and all(d.ImagePositionPatient[1:] == ds.ImagePositionPatient[1:] for d in datasets)
    uids = {d.SOPInstanceUID for d in datasets}
    assert len(uids) == SLICES and all(pydicom.uid.UID(u).is_valid for u in uids)


def test_same_seed_same_uids_and_hard_flag(tmp_path):
    run = meddet("synth", "--out", str(tmp_path / "a"), "--seed", "4", "--slices", "2", "--size", "96", "--hard")
    assert run.returncode == 0 and "SYN0001" in run.stdout
    assert (
        synth_in_process(
            "--out", str(tmp_path / "b"), "--seed", "4", "--slices", "2", "--size", "96", "--hard"
        ).exit_code
        == 0
    )
    a, b = (json.loads((tmp_path / n / "index.json").read_text()) for n in ("a", "b"))
    assert a == b and a["hard"] is True
    gt = json.loads((tmp_path / "a" / "SYN0001" / "ground_truth.json").read_text())
    assert gt["hard"] is True and len(gt["instances"]) == 2


def test_unknown_transfer_syntax_is_refused(tmp_path):
    run = synth_in_process("--out", str(tmp_path), "--transfer-syntax", "mpeg")
    assert run.exit_code == 2 and "mpeg" in run.output
