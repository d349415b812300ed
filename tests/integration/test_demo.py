"""``meddet demo`` end to end: a fresh folder in, a findings table, the result objects in the
built-in test PACS and a PNG of the key slice out (the command a newcomer runs first)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from PIL import Image

from tests.integration.model import checkpoint_with_findings

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_demo_runs_the_whole_loop(tmp_path: Path) -> None:
    """Seed 7: a phantom with two herniated levels, so every result kind is written."""
    checkpoint, _ = checkpoint_with_findings(tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDDET_")}
    env |= {"MEDDET_CHECKPOINT": str(checkpoint), "MEDDET_DEVICE": "cpu", "OMP_NUM_THREADS": "1",
            "COLUMNS": "120"}
    out = tmp_path / "demo"
    result = subprocess.run(
        [sys.executable, "-c", "from dicom_node.cli import main; main()", "demo", "--out", str(out), "--seed", "7"],
        env=env, capture_output=True, text=True, timeout=400,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    assert "MedDet findings" in result.stdout and "ground truth" in result.stdout
    for modality in ("SR ", "SEG", "PR "):
        assert f"in the test PACS: {modality}" in result.stdout

    stored = [pydicom.dcmread(p) for p in sorted((out / "pacs").glob("*.dcm"))]
    assert sorted(ds.Modality for ds in stored) == ["PR", "SEG", "SR"]
    [sr] = [ds for ds in stored if ds.Modality == "SR"]
    groups = hd.sr.Comprehensive3DSR.from_dataset(sr).content.get_planar_roi_measurement_groups()
    assert len(groups) >= 1

    png = Image.open(out / "key-slice.png").convert("RGB")
    pixels = np.asarray(png)
    red = (pixels[..., 0] > 200) & (pixels[..., 1] < 100) & (pixels[..., 2] < 100)
    assert red.sum() > 100  # a herniation box was drawn on the grayscale slice
    assert "key slice" in result.stdout and str(out / "key-slice.png") in result.stdout.replace("\n", "")
