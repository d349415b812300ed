"""Detector configs as data: dataclasses loaded from TOML files in ``detector/configs/``.

A config names everything needed to rebuild a model (backbone, neck, head), how to feed it
(preprocessing) and how to train it. Checkpoints store ``config.to_dict()`` so a checkpoint is
self-describing. No torch import here.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass(frozen=True)
class BackboneConfig:
    """``name``: "mobilenetv2" or "resnet". ``out_indices``: the stages fed to the FPN.

    MobileNetV2: ``width`` is the width multiplier; stage indices 0-6 are the inverted-residual
    groups and 7 is the final 1x1 conv (1280 channels), as in mmdetection.
    ResNet: ``depth`` in {18, 34, 50, 101, 152} picks block type and layer counts unless
    ``layers`` is given; ``width`` scales the base width 64; stage indices 0-3 are C2-C5.
    """

    name: str = "mobilenetv2"
    width: float = 1.0
    depth: int = 50
    layers: tuple[int, ...] = ()
    out_indices: tuple[int, ...] = (2, 4, 7)
    in_channels: int = 1


@dataclass(frozen=True)
class NeckConfig:
    """FPN: ``channels`` wide, ``num_outs`` levels; extra levels by stride-2 3x3 convs on the
    last output (mmdetection's ``add_extra_convs="on_output"``)."""

    channels: int = 256
    num_outs: int = 5


@dataclass(frozen=True)
class HeadConfig:
    """GFL head: shared towers of ``stacked_convs`` 3x3 convs (GroupNorm) per branch.

    ``ode``: "none" or "nmode2" (the refine hook between the towers and the prediction convs).
    """

    feat_channels: int = 256
    stacked_convs: int = 4
    reg_max: int = 16
    strides: tuple[int, ...] = (8, 16, 32, 64, 128)
    anchor_scale: float = 8.0
    atss_topk: int = 9
    loss_qfl: float = 1.0
    loss_dfl: float = 0.25
    loss_giou: float = 2.0
    ode: str = "none"
    ode_method: str = "rk4"
    ode_steps: int = 4
    score_thr: float = 0.05
    nms_iou: float = 0.6
    nms_pre: int = 1000
    max_per_img: int = 100


@dataclass(frozen=True)
class PreprocessConfig:
    """Per-image percentile intensity window to [0, 1], then letterbox to ``size`` x ``size``."""

    size: int = 512
    p_low: float = 0.5
    p_high: float = 99.5


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 12
    batch_size: int = 8
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_iters: int = 100
    grad_clip: float = 10.0
    train_images: int = 2000
    val_images: int = 200
    hard_fraction: float = 0.5
    augment: bool = True
    # share of training slices drawn with the second stage's variety (a widened field of view
    # and neck geometry, random T2 tissue intensities) and, independently, the share of slices
    # whose look is randomised as the second stage's crops are (``detector.discs.randomize``)
    varied: float = 0.0
    varied_tissues: bool = True  # the varied slices' tissues at random T2 intensities (else the generator's)
    other_generator: float = 0.0  # share of synthetic training slices from ``detector.altgen``
    # share of our generator's slices with every tissue's intensity at random (``random_contrast``,
    # SynthSeg-style): vertebral bodies or facets as bright as a disc, boxed as background
    random_look: float = 0.0
    seed: int = 0
    num_threads: int = 0  # 0 = leave torch's default; 1 on a shared, busy CPU


@dataclass(frozen=True)
class DetectorConfig:
    name: str = "gfl"
    num_classes: int = 2
    backbone: BackboneConfig = field(default_factory=BackboneConfig)
    neck: NeckConfig = field(default_factory=NeckConfig)
    head: HeadConfig = field(default_factory=HeadConfig)
    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DetectorConfig:
        """Build from nested dicts; unknown keys raise ``ValueError`` naming the key."""
        sections = {
            "backbone": BackboneConfig,
            "neck": NeckConfig,
            "head": HeadConfig,
            "preprocess": PreprocessConfig,
            "train": TrainConfig,
        }
        kwargs: dict[str, Any] = {}
        for key, value in data.items():
            if key in sections:
                kwargs[key] = _section(sections[key], value, key)
            elif key in ("name", "num_classes"):
                kwargs[key] = value
            else:
                raise ValueError(f"config: unknown key {key!r}")
        return cls(**kwargs)

    def replace(self, **sections: dict[str, Any]) -> DetectorConfig:
        """A copy with some fields of some sections changed: ``cfg.replace(train={"epochs": 1})``."""
        data = self.to_dict()
        for name, changes in sections.items():
            data[name] = {**data[name], **changes} if isinstance(changes, dict) else changes
        return DetectorConfig.from_dict(data)


def _section(kind: type, value: dict[str, Any], where: str) -> Any:
    names = {f.name: f for f in dataclasses.fields(kind)}
    unknown = set(value) - set(names)
    if unknown:
        raise ValueError(f"config [{where}]: unknown key(s) {sorted(unknown)}")
    fixed = {k: tuple(v) if isinstance(v, list) else v for k, v in value.items()}
    return kind(**fixed)


def available_configs() -> list[str]:
    """Names of the configs shipped in ``detector/configs``."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.toml"))


def read_toml(name_or_path: str | Path) -> dict[str, Any]:
    """The raw TOML of a shipped config (by name, e.g. ``"student"``) or of a file path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = CONFIG_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise FileNotFoundError(f"config {name_or_path!r} not found; shipped: {available_configs()}")
    with path.open("rb") as fh:
        return tomllib.load(fh)


def load_config(name_or_path: str | Path) -> DetectorConfig:
    """Load a detector config by shipped name (``"student"``) or by path to a TOML file."""
    return DetectorConfig.from_dict(read_toml(name_or_path))
