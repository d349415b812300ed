"""Shared setup of the distillation smoke test: tiny teacher and student configs and data."""

from __future__ import annotations

from detector.config import DetectorConfig, load_config

SIZE = 96
TRAIN_IMAGES = 64
TEACHER_EPOCHS = 8
STUDENT_EPOCHS = 4


def student_cfg() -> DetectorConfig:
    return load_config("tiny").replace(
        preprocess={"size": SIZE},
        train={
            "epochs": STUDENT_EPOCHS,
            "batch_size": 8,
            "lr": 4e-3,
            "warmup_iters": 5,
            "augment": False,
            "seed": 0,
            "num_threads": 1,
        },
    )


def teacher_cfg() -> DetectorConfig:
    return student_cfg().replace(
        backbone={"name": "resnet", "depth": 18, "width": 0.25, "out_indices": [1, 2, 3]},
        neck={"channels": 48},
        head={"feat_channels": 48, "stacked_convs": 2},
        train={"epochs": TEACHER_EPOCHS},
    )
