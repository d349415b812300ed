"""Distillation smoke test (CI): a tiny teacher distilled into a tiny student, fixed seed.

Asserts the distillation (feature MSE) and adversarial (discriminator) losses fall and the
distilled student's AP50 beats the same student trained without distillation for the same
steps on the same data. Also drives ``meddet distill`` end to end on the trained teacher.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from detector.data.synthetic import SyntheticSliceDataset
from detector.distill.config import DistillConfig
from detector.distill.trainer import distill, load_teacher
from detector.evaluate import evaluate_model
from detector.train import train
from tests.distill.smoke_setup import TRAIN_IMAGES, student_cfg, teacher_cfg

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def data() -> tuple[SyntheticSliceDataset, SyntheticSliceDataset]:
    return SyntheticSliceDataset(TRAIN_IMAGES, seed=0, hard=False, size=192), SyntheticSliceDataset(
        32, seed=1, hard=False, size=192
    )


@pytest.fixture(scope="module")
def teacher_ckpt(tmp_path_factory: pytest.TempPathFactory, data) -> Path:
    torch.set_num_threads(1)
    res = train(
        teacher_cfg(), data[0], None, tmp_path_factory.mktemp("teacher"), config_name="tiny-teacher", progress=False
    )
    assert res.last is not None
    return res.last


def test_distillation_beats_plain_training(tmp_path: Path, data, teacher_ckpt: Path) -> None:
    train_set, test_set = data
    cfg = student_cfg()
    plain = train(cfg, train_set, None, tmp_path / "plain", config_name="plain", progress=False)
    plain_model, _ = load_teacher(plain.last)  # type: ignore[arg-type]
    teacher, version = load_teacher(teacher_ckpt)
    result = distill(
        DistillConfig(ode="none"),
        cfg,
        [teacher],
        train_set,
        None,
        tmp_path / "distill",
        teacher_versions=[version],
        progress=False,
    )
    h = result.history
    assert h[-1]["mse"] < 0.8 * h[0]["mse"], h
    assert h[-1]["adv_d"] < h[0]["adv_d"], h
    ap_plain = evaluate_model(plain_model, test_set, cfg.preprocess)["map50"]
    ap_distilled = evaluate_model(result.model, test_set, cfg.preprocess)["map50"]
    assert ap_distilled > ap_plain, (ap_distilled, ap_plain)
    # resumable: a finished run resumes to the same weights without training further
    again = distill(
        DistillConfig(ode="none"),
        cfg,
        [teacher],
        train_set,
        None,
        tmp_path / "distill",
        teacher_versions=[version],
        progress=False,
    )
    assert len(again.history) == len(h)
    for a, b in zip(again.model.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)


def test_meddet_distill_cli(tmp_path: Path, teacher_ckpt: Path) -> None:
    from detector.inference import Detector
    from dicom_node.cli import app
    from dicom_node.cli import distill as _  # noqa: F401  (registers the command)

    cfg_path = tmp_path / "tiny.toml"
    cfg_path.write_text(
        '[distill]\nstudent = "tiny"\ncache = "disk"\n[train]\nepochs = 1\nbatch_size = 8\n'
        "train_images = 16\nval_images = 8\nnum_threads = 1\naugment = false\n"
    )
    out = tmp_path / "run"
    args = [
        "distill",
        "--config",
        str(cfg_path),
        "--teachers",
        f"{teacher_ckpt},{teacher_ckpt}",
        "--data",
        "synthetic",
        "--out",
        str(out),
        "--no-progress",
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    assert "exported" in res.output and (out / "model.pt").is_file()
    assert list(out.glob("teacher-cache-*.pt")), "disk cache written"
    det = Detector.from_checkpoint(out / "model.pt", device="cpu")
    assert det.cfg.head.ode == "nmode2"
    assert len(det.predict([SyntheticSliceDataset(1, seed=5)[0][0]])) == 1
    bad = CliRunner().invoke(app, ["distill", "--teachers", str(tmp_path / "missing.pt"), "--out", str(out)])
    assert bad.exit_code != 0 and "not found" in bad.output
