"""Smoke training of the tiny config on an easy fake dataset, then checkpoint -> Detector."""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from detector import analysis_version, checkpoint, checkpoint_version
from detector.config import load_config
from detector.inference import Detector
from detector.train import train
from detector.types import CLASS_NAMES, Detection
from tests.detector.fake_data import FakeDiscs


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("tiny")
    cfg = load_config("tiny").replace(train={"epochs": 3})
    result = train(
        cfg, FakeDiscs(128, seed=0), FakeDiscs(40, seed=1), out, config_name="tiny", progress=False, log=lambda s: None
    )
    return out, result


def test_loss_falls_and_ap50_beats_a_floor(trained: tuple[Path, object]) -> None:
    _, result = trained
    history = result.history  # type: ignore[attr-defined]
    assert len(history) == 3
    assert history[-1]["loss"] < 0.6 * history[0]["loss"]
    assert history[-1]["map50"] >= 0.8  # chance on this data is ~0
    assert result.best_map50 == max(h["map50"] for h in history)  # type: ignore[attr-defined]


def test_checkpoint_holds_config_classes_preprocessing_and_version(trained: tuple[Path, object]) -> None:
    out, _ = trained
    payload = checkpoint.load(out / "last.pt")
    assert payload["config"]["backbone"]["width"] == 0.25
    assert payload["class_names"] == list(CLASS_NAMES)
    assert payload["preprocess"]["size"] == 128
    assert payload["epoch"] == 3 and "optimizer" in payload
    assert checkpoint_version(out / "last.pt") == payload["version"]


def test_resume_continues_from_the_last_epoch(trained: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = trained
    (tmp_path / "last.pt").write_bytes((out / "last.pt").read_bytes())
    cfg = load_config("tiny").replace(train={"epochs": 4})
    lines: list[str] = []
    result = train(cfg, FakeDiscs(16, seed=0), None, tmp_path, config_name="tiny", progress=False, log=lines.append)
    assert "resumed" in lines[0] and "epoch 3" in lines[0]
    assert [h["epoch"] for h in result.history] == [1, 2, 3, 4]


def test_exported_detector_predicts_in_original_pixels(trained: tuple[Path, object], tmp_path: Path) -> None:
    out, _ = trained
    exported = checkpoint.export(out / "best.pt", tmp_path / "model.pt")
    assert "optimizer" not in exported
    assert (tmp_path / "model.pt").stat().st_size < (out / "best.pt").stat().st_size
    det = Detector.from_checkpoint(tmp_path / "model.pt", device="cpu")
    assert det.version == checkpoint_version(tmp_path / "model.pt")
    ds = FakeDiscs(3, seed=7, size=256)  # twice the model input: boxes must come back scaled
    images = [ds[i][0] for i in range(3)]
    results = det.predict(images, batch_size=2)
    assert len(results) == 3
    for dets, (_, target) in zip(results, (ds[i] for i in range(3))):
        assert all(isinstance(d, Detection) and d.label in CLASS_NAMES for d in dets)
        assert [d.score for d in dets] == sorted((d.score for d in dets), reverse=True)
        best = [d for d in dets if d.score > 0.3]
        assert best, "the trained model should find the objects"
        centers = np.array([[(d.box[0] + d.box[2]) / 2, (d.box[1] + d.box[3]) / 2] for d in best])
        gt = (target["boxes"][:, :2] + target["boxes"][:, 2:]) / 2
        nearest = np.linalg.norm(centers[:, None] - gt[None], axis=-1).min(1)
        assert np.median(nearest) < 12


def test_model_version_does_not_import_torch(trained: tuple[Path, object]) -> None:
    out, _ = trained
    code = (
        "import sys, detector; v = detector.model_version(sys.argv[1]); "
        "assert 'torch' not in sys.modules, 'torch imported'; print(v)"
    )
    done = subprocess.run(
        [sys.executable, "-c", code, str(out / "last.pt")], capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == analysis_version(checkpoint.load(out / "last.pt")["version"])
