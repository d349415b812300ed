"""``meddet demo`` end to end with the shipped model: a fresh folder in; a findings table, the
result objects in the built-in test PACS and a PNG of the key slice out (a newcomer's first run)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDDET_")}
    env |= {"MEDDET_DEVICE": "cpu", "OMP_NUM_THREADS": "1", "COLUMNS": "120"}
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-c", "from dicom_node.cli import main; main()", "demo", "--out", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "MedDet findings" in result.stdout and "ground truth" in result.stdout

    [findings_file] = (out / "node" / "results").glob("*/findings.json")
    findings = json.loads(findings_file.read_text())["findings"]
    herniated = any(f["label"] == "herniation" for f in findings)
    expected = ["PR", "SEG", "SR"] if herniated else ["PR", "SR"]  # a SEG only holds herniations
    stored = [pydicom.dcmread(p) for p in sorted((out / "pacs").glob("*.dcm"))]
    assert sorted(ds.Modality for ds in stored) == expected
    for modality in expected:
        assert f"in the test PACS: {modality:<3}" in result.stdout
    [sr] = [ds for ds in stored if ds.Modality == "SR"]
    groups = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_planar_roi_measurement_groups()
    assert len(groups) == len(findings)
    for f in findings:
        assert f["level"] in result.stdout

    pixels = np.asarray(Image.open(out / "key-slice.png").convert("RGB")).astype(int)
    r, g, b = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    box = (r > 200) & (g < 100) & (b < 100) if herniated else (g > 180) & (r < 120) & (b < 120)
    assert box.sum() > 100  # the key finding's box is drawn on the grayscale slice
    assert "key slice" in result.stdout
