"""Starting a run from a checkpoint (``--init-from``): matching weights are copied, and a
student that gains an nmODE² head starts (nearly) where the plain checkpoint was."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detector import checkpoint as ckpt
from detector.config import load_config
from detector.data.synthetic import SyntheticSliceDataset
from detector.distill.config import DistillConfig
from detector.distill.trainer import absorb_nmode_offset, build_student, distill, freeze
from detector.models import build_detector
from detector.train import init_from

torch.set_num_threads(1)


def tiny():
    return load_config("tiny").replace(preprocess={"size": 64}, train={"epochs": 1, "batch_size": 4, "num_threads": 1})


@pytest.fixture()
def plain(tmp_path: Path) -> tuple[Path, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_detector(tiny())
    with torch.no_grad():  # prediction convs with weights of a trained size, so offsets matter
        for conv in (model.head.gfl_cls, model.head.gfl_reg):
            conv.weight.normal_(std=0.05)
    path = tmp_path / "plain.pt"
    ckpt.save(ckpt.make_payload(model, tiny(), "tiny"), path)
    return path, model.eval()


def test_init_from_copies_matching_weights_and_names_the_rest(plain: tuple[Path, torch.nn.Module]) -> None:
    path, model = plain
    student, _ = build_student(tiny(), "head")
    done = init_from(student, path)
    assert done.fresh and all(k.startswith("head.refine.") for k in done.fresh) and not done.unused
    own = student.state_dict()
    assert all(torch.equal(own[k], v) for k, v in model.state_dict().items())
    with pytest.raises(ValueError, match="no tensor"):
        init_from(torch.nn.Linear(2, 2), path)


def test_init_from_names_what_a_model_without_the_nmode_head_drops(tmp_path: Path) -> None:
    """Fine-tuning an nmODE² checkpoint with a config that has no nmODE² block drops the block:
    the log says so instead of only "initialised from"."""
    student, cfg = build_student(tiny(), "head")
    path = tmp_path / "nmode.pt"
    ckpt.save(ckpt.make_payload(student, cfg, "tiny-nmode"), path)
    done = init_from(build_detector(tiny()), path)
    assert not done.fresh and done.unused and all(k.startswith("head.refine.") for k in done.unused)
    line = done.describe(path)
    assert line.startswith(f"initialised from {path} (") and "unused, the model has no head.refine" in line


def test_absorbed_nmode_head_starts_near_the_plain_model(plain: tuple[Path, torch.nn.Module]) -> None:
    path, model = plain
    student, _ = build_student(tiny(), "head")
    init_from(student, path)
    x = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        want = model.head(model.extract_feats(x))[0][0]
        naive = student.eval().head(student.extract_feats(x))[0][0]
        absorb_nmode_offset(student)
        got = student.head(student.extract_feats(x))[0][0]
    inner = (slice(None), slice(None), slice(1, -1), slice(1, -1))  # the border keeps a small error
    assert torch.allclose(got[inner], want[inner], atol=1e-4)
    assert (naive - want)[inner].abs().mean() > 0.05  # without it, y(1) shifts every logit


def test_distill_starts_the_student_from_init(plain: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    path, model = plain
    cfg = tiny().replace(train={"lr": 0.0, "warmup_iters": 1})
    teacher = freeze(build_detector(cfg.replace(neck={"channels": 16}, head={"feat_channels": 16})))
    lines: list[str] = []
    res = distill(
        DistillConfig(),
        cfg,
        [teacher],
        SyntheticSliceDataset(4, seed=3, size=128),
        None,
        tmp_path / "run",
        progress=False,
        log=lines.append,
        init=path,
    )
    assert any("initialised from" in line for line in lines)
    state = dict(res.model.named_parameters())  # lr 0: still the plain model's weights (BN stats move)
    assert all(torch.equal(state[k], v) for k, v in model.named_parameters() if not k.startswith("head.gfl_"))
    assert ckpt.load(tmp_path / "run" / "student.pt")["init"] == str(path)


def test_train_cli_init_from(plain: tuple[Path, torch.nn.Module], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    import dicom_node.cli.ml  # noqa: F401  (registers the commands)
    from dicom_node.cli import app

    path, _ = plain
    done = CliRunner().invoke(
        app,
        [
            "train",
            "--config",
            "tiny",
            "--out",
            str(tmp_path / "ft"),
            "--epochs",
            "1",
            "--images",
            "8",
            "--threads",
            "1",
            "--no-progress",
            "--init-from",
            str(path),
        ],
    )
    assert done.exit_code == 0, done.output
    assert f"initialised from {path}" in done.output
