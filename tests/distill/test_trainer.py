"""The distillation trainer's variants on a few tiny images: no cache (teachers every step,
augmentation on), nmODE² in the FPN and in the backbone, sum and concat fusion."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from detector.config import load_config
from detector.data.synthetic import SyntheticSliceDataset
from detector.distill.config import DistillConfig
from detector.distill.trainer import build_student, distill, freeze
from detector.models import build_detector
from detector.models.nmode import NMODE2Block, NMODE2Refiner

torch.set_num_threads(1)


def tiny():
    return load_config("tiny").replace(preprocess={"size": 64}, train={"epochs": 1, "batch_size": 4, "num_threads": 1})


@pytest.mark.parametrize(
    ("dcfg", "wrapped"),
    [
        (DistillConfig(ode="fpn", cache="none", fusion="sum"), "neck"),
        (DistillConfig(ode="backbone", fusion="concat", adversarial=False), "backbone"),
    ],
)
def test_variants_train_one_epoch(tmp_path: Path, dcfg: DistillConfig, wrapped: str) -> None:
    cfg = tiny()
    teachers = [
        freeze(build_detector(cfg.replace(neck={"channels": 16}, head={"feat_channels": 16}))) for _ in range(2)
    ]
    res = distill(
        dcfg,
        cfg.replace(train={"augment": True}),
        teachers,
        SyntheticSliceDataset(8, seed=3, size=128),
        None,
        tmp_path,
        progress=False,
        log=lambda _: None,
    )
    row = res.history[0]
    assert {"det", "mse", "fused_det"} <= set(row) and ("adv_d" in row) == dcfg.adversarial
    assert all(torch.isfinite(torch.tensor(v)) for v in row.values())
    assert isinstance(getattr(res.model, wrapped)[1], NMODE2Block)
    assert (tmp_path / "student.pt").is_file() and (tmp_path / "last.pt").is_file()
    assert not list(tmp_path.glob("teacher-cache-*"))  # memory / no cache: nothing on disk


def test_build_student_head_placement_is_a_plain_checkpoint() -> None:
    model, cfg = build_student(tiny(), "head")
    assert cfg.head.ode == "nmode2" and isinstance(model.head.refine, NMODE2Refiner)
    again = build_detector(cfg)
    again.load_state_dict(model.state_dict())  # rebuilds from the config alone
    none, cfg_none = build_student(tiny(), "none")
    assert cfg_none.head.ode == "none" and not any(isinstance(m, NMODE2Block) for m in none.modules())
