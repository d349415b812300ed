"""Distillation settings as data (``detector/configs/distill_*.toml``). No torch import.

A distill file has a ``[distill]`` section (this dataclass) and may override the student's
``[train]`` section:

    [distill]
    student = "student"                       # config name or TOML path
    teachers = ["teacher_r152", "teacher_r101", "teacher_r50"]
    alpha = 1.0
    [train]
    epochs = 12
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.config import DetectorConfig, load_config, read_toml


@dataclass(frozen=True)
class DistillConfig:
    """``teachers``: teacher config names (the CLI's ``--teachers`` checkpoints replace them).
    ``fusion``: "lwff" | "sum" | "concat". ``ode``: where the student's nmODE² goes: "none",
    "head" (the default, MedDet), "fpn" or "backbone". ``cache``: teacher features kept
    "memory" (float16), on "disk" (in the output folder) or "none" (teachers run every step,
    which allows augmentation). ``alpha``/``beta``: weights of the feature MSE and of the
    adversarial (generator) loss; ``gamma``: weight of the detection loss of the student's
    head on the fused teacher feature (trains AFA and LWFF); ``adversarial`` false drops
    AATM's discriminator."""

    student: str = "student"
    teachers: tuple[str, ...] = ()
    alpha: float = 1.0
    beta: float = 0.1
    gamma: float = 0.5
    fusion: str = "lwff"
    adversarial: bool = True
    normalize: bool = True
    ode: str = "head"
    d_lr: float = 2e-4
    cache: str = "memory"

    def __post_init__(self) -> None:
        if self.fusion not in ("lwff", "sum", "concat"):
            raise ValueError(f"fusion: expected lwff, sum or concat, got {self.fusion!r}")
        if self.ode not in ("none", "head", "fpn", "backbone"):
            raise ValueError(f"ode: expected none, head, fpn or backbone, got {self.ode!r}")
        if self.cache not in ("none", "memory", "disk"):
            raise ValueError(f"cache: expected none, memory or disk, got {self.cache!r}")
        if min(self.alpha, self.beta, self.gamma) < 0:
            raise ValueError("alpha, beta and gamma must be >= 0")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> DistillConfig:
        return dataclasses.replace(self, **changes)


def parse_distill(data: dict[str, Any]) -> tuple[DistillConfig, dict[str, Any]]:
    """A distill TOML as a dict -> (DistillConfig, the student's train overrides)."""
    unknown = set(data) - {"distill", "train"}
    if unknown:
        raise ValueError(f"distill config: unknown section(s) {sorted(unknown)}")
    section = dict(data.get("distill", {}))
    names = {f.name for f in dataclasses.fields(DistillConfig)}
    bad = set(section) - names
    if bad:
        raise ValueError(f"distill config [distill]: unknown key(s) {sorted(bad)}")
    if "teachers" in section:
        section["teachers"] = tuple(section["teachers"])
    return DistillConfig(**section), dict(data.get("train", {}))


def load_distill(name_or_path: str | Path) -> tuple[DistillConfig, DetectorConfig]:
    """Load a distill config (shipped name like ``"distill_small"`` or a path) and its student
    config with the train overrides applied."""
    dcfg, train = parse_distill(read_toml(name_or_path))
    student = load_config(dcfg.student)
    return dcfg, student.replace(train=train) if train else student
