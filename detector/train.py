"""Detector training: AdamW + warmup/cosine schedule, resumable checkpoints (``detector.loop``).

``train(cfg, train_set, val_set, out_dir)`` writes ``out_dir/last.pt`` every epoch (full state,
resumable), ``out_dir/best.pt`` (best validation AP50) and returns the history. Datasets yield
``(image float32 [H, W], {"boxes": [N, 4], "labels": [N]})`` in raw intensities and pixels.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, cast

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from detector import checkpoint as ckpt
from detector import loop
from detector.config import DetectorConfig
from detector.evaluate import evaluate_model
from detector.inference import pick_device
from detector.loop import lr_lambda, seed_everything
from detector.models import build_detector
from detector.preprocess import preprocess

__all__ = [
    "Augmentation",
    "PreparedDataset",
    "TrainResult",
    "collate",
    "default_augment",
    "init_from",
    "lr_lambda",
    "seed_everything",
    "train",
]

Augmentation = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


class PreparedDataset(Dataset):
    """Preprocesses every item once (in memory); augments on every access."""

    def __init__(self, dataset: Any, cfg: DetectorConfig, augment: Augmentation | None = None) -> None:
        self.items = []
        for i in range(len(dataset)):
            image, target = dataset[i]
            tensor, meta = preprocess(np.asarray(image, dtype=np.float32), cfg.preprocess)
            boxes = torch.from_numpy(meta.to_input(np.asarray(target["boxes"]).reshape(-1, 4)))
            self.items.append((tensor, boxes, torch.as_tensor(np.asarray(target["labels"]), dtype=torch.long)))
        self.augment = augment

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        image, boxes, labels = self.items[i]
        if self.augment is not None:
            image, boxes = self.augment(image.clone(), boxes.clone())
        return image, {"boxes": boxes, "labels": labels}


def collate(batch: list[tuple[Tensor, dict[str, Tensor]]]) -> tuple[Tensor, list[dict[str, Tensor]]]:
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch]


def default_augment(cfg: DetectorConfig) -> Augmentation | None:
    """D2's MRI augmentation (``detector.data.augment.Augment``) when enabled and available,
    randomising the look of ``train.varied`` of the slices."""
    if not cfg.train.augment:
        return None
    try:
        from detector.data.augment import Augment
    except ImportError:
        return None
    return Augment(look=cfg.train.varied)


class Init(NamedTuple):
    """What ``init_from`` did: ``fresh``, the model's tensors left as initialised; ``unused``,
    the checkpoint's tensors the model has no place for (e.g. an nmODE² head that the
    config lacks: fine-tuning from it drops that block)."""

    fresh: list[str]
    unused: list[str]

    def describe(self, path: Path | str) -> str:
        """One log line: where from, and what was left fresh or dropped."""
        notes = [f"{len(self.fresh)} tensors left fresh"] if self.fresh else []
        if self.unused:
            blocks = sorted({".".join(k.split(".")[:2]) for k in self.unused})
            notes.append(f"{len(self.unused)} of its tensors unused, the model has no {', '.join(blocks)}")
        return f"initialised from {path}" + (f" ({'; '.join(notes)})" if notes else "")


def init_from(model: torch.nn.Module, path: Path | str) -> Init:
    """Copy the weights of checkpoint ``path`` into ``model`` where names and shapes match
    (fine-tuning, another input size, or a student gaining an nmODE² head). Raises
    ``ValueError`` if nothing matches."""
    src = ckpt.load(Path(path))["model"]
    own = model.state_dict()
    hits = {k: v.to(own[k].dtype) for k, v in src.items() if k in own and own[k].shape == v.shape}
    if not hits:
        raise ValueError(f"init_from: no tensor of {path} fits the model")
    model.load_state_dict(hits, strict=False)
    return Init(sorted(set(own) - set(hits)), sorted(set(src) - set(hits)))


@dataclass
class TrainResult:
    history: list[dict[str, float]] = field(default_factory=list)
    best_map50: float = -1.0
    last: Path | None = None
    best: Path | None = None


def train(
    cfg: DetectorConfig,
    train_set: Any,
    val_set: Any | None,
    out_dir: Path,
    config_name: str = "custom",
    resume: bool = True,
    device: str | None = None,
    progress: bool = True,
    augment: Augmentation | None = None,
    log: Callable[[str], None] = print,
    init: Path | str | None = None,
) -> TrainResult:
    """Train ``cfg`` on ``train_set``; validate on ``val_set`` each epoch (AP50 picks ``best.pt``).
    ``init``: a checkpoint whose matching weights start the run (ignored when resuming)."""
    tc = cfg.train
    gen = loop.start(tc)
    dev = pick_device(device)
    out_dir = Path(out_dir)
    model = build_detector(cfg)
    if init is not None:
        log(init_from(model, init).describe(init))
    model = model.to(dev)
    prepared = PreparedDataset(train_set, cfg, augment if augment is not None else default_augment(cfg))
    loader = loop.make_loader(prepared, tc, collate, gen)
    optimizer = loop.adamw(model.parameters(), tc)
    scheduler = loop.warmup_cosine(optimizer, tc, len(loader))
    last, best = out_dir / "last.pt", out_dir / "best.pt"
    result = TrainResult(last=last, best=best)
    start_epoch = 0
    state = loop.resume(last, scheduler, gen, log, map_location=dev) if resume else None
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        start_epoch = state["epoch"]
        result.history = state.get("history", [])
        result.best_map50 = state.get("best_map50", -1.0)

    def step(batch: tuple[Tensor, list[dict[str, Tensor]]]) -> tuple[Tensor, dict[str, float]]:
        images, targets = batch
        losses = model.forward_train(images.to(dev), [{k: v.to(dev) for k, v in t.items()} for t in targets])
        loss = cast(Tensor, sum(losses.values()))
        return loss, {k: float(v.detach()) for k, v in {"loss": loss, **losses}.items()}

    def save(epoch: int, metrics: dict[str, Any]) -> None:
        is_best = val_set is not None and metrics["map50"] > result.best_map50
        if is_best:
            result.best_map50 = metrics["map50"]
        payload = ckpt.make_payload(
            model,
            cfg,
            config_name,
            epoch=epoch,
            history=result.history,
            best_map50=result.best_map50,
            metrics=metrics,
            optimizer=optimizer.state_dict(),
            **loop.loop_state(scheduler, gen),
        )
        ckpt.save(payload, last)
        if is_best or val_set is None:
            ckpt.save(payload, best)

    loop.fit(
        step,
        loader,
        optimizer=optimizer,
        scheduler=scheduler,
        modules=[model],
        clip=model.parameters(),
        grad_clip=tc.grad_clip,
        epochs=tc.epochs,
        history=result.history,
        start_epoch=start_epoch,
        validate=None if val_set is None else lambda: evaluate_model(model, val_set, cfg.preprocess),
        save=save,
        log=log,
        progress=progress,
    )
    return result
