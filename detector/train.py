"""Training loop: AdamW + warmup/cosine schedule, progress bar, resumable checkpoints.

``train(cfg, train_set, val_set, out_dir)`` writes ``out_dir/last.pt`` every epoch (full state,
resumable), ``out_dir/best.pt`` (best validation AP50) and returns the history. Datasets yield
``(image float32 [H, W], {"boxes": [N, 4], "labels": [N]})`` in raw intensities and pixels.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from detector import checkpoint as ckpt
from detector.config import DetectorConfig
from detector.evaluate import evaluate_model
from detector.inference import pick_device
from detector.models import build_detector
from detector.preprocess import preprocess

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
    """D2's MRI augmentation (``detector.data.augment.Augment``) when enabled and available."""
    if not cfg.train.augment:
        return None
    try:
        from detector.data.augment import Augment
    except ImportError:
        return None
    return Augment()


def seed_everything(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def init_from(model: torch.nn.Module, path: Path | str) -> list[str]:
    """Copy the weights of checkpoint ``path`` into ``model`` where names and shapes match
    (fine-tuning, another input size, or a student gaining an nmODE² head); returns the names
    of ``model``'s tensors left as initialised. Raises ``ValueError`` if nothing matches."""
    src = ckpt.load(Path(path))["model"]
    own = model.state_dict()
    hits = {k: v.to(own[k].dtype) for k, v in src.items() if k in own and own[k].shape == v.shape}
    if not hits:
        raise ValueError(f"init_from: no tensor of {path} fits the model")
    model.load_state_dict(hits, strict=False)
    return sorted(set(own) - set(hits))


def lr_lambda(total: int, warmup: int, floor: float = 0.05) -> Callable[[int], float]:
    """Linear warmup over ``warmup`` iterations, then cosine decay to ``floor`` x lr."""

    def f(it: int) -> float:
        if it < warmup:
            return (it + 1) / warmup
        t = min(1.0, (it - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return f


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
    from tqdm import tqdm

    tc = cfg.train
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    gen = seed_everything(tc.seed)
    dev = pick_device(device)
    out_dir = Path(out_dir)
    model = build_detector(cfg)
    if init is not None:
        fresh = init_from(model, init)
        log(f"initialised from {init}" + (f" ({len(fresh)} tensors left fresh)" if fresh else ""))
    model = model.to(dev)
    prepared = PreparedDataset(train_set, cfg, augment if augment is not None else default_augment(cfg))
    loader = DataLoader(prepared, batch_size=tc.batch_size, shuffle=True, collate_fn=collate, generator=gen, drop_last=len(prepared) > tc.batch_size)
    decay = [p for n, p in model.named_parameters() if p.ndim > 1]
    no_decay = [p for n, p in model.named_parameters() if p.ndim <= 1]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}], lr=tc.lr)
    total = tc.epochs * len(loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(total, min(tc.warmup_iters, total // 2)))
    result = TrainResult(last=out_dir / "last.pt", best=out_dir / "best.pt")
    start_epoch = 0
    if resume and result.last.is_file():
        state = ckpt.load(result.last, map_location=dev)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        gen.set_state(state["rng"]["loader"])
        torch.set_rng_state(state["rng"]["torch"])
        start_epoch = state["epoch"]
        result.history = state.get("history", [])
        result.best_map50 = state.get("best_map50", -1.0)
        log(f"resumed from {result.last} at epoch {start_epoch}")

    for epoch in range(start_epoch, tc.epochs):
        model.train()
        sums: dict[str, float] = {}
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{tc.epochs}", disable=not progress, leave=False)
        for images, targets in bar:
            images = images.to(dev)
            targets = [{k: v.to(dev) for k, v in t.items()} for t in targets]
            losses = model.forward_train(images, targets)
            loss = sum(losses.values())
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
            optimizer.step()
            scheduler.step()
            for k, v in {"loss": loss, **losses}.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        row = {"epoch": epoch + 1, **{k: v / max(1, len(loader)) for k, v in sums.items()}}
        metrics: dict[str, Any] = {}
        if val_set is not None:
            metrics = evaluate_model(model, val_set, cfg.preprocess)
            row.update(map50=metrics["map50"], map=metrics["map"], recall50=metrics["recall50"])
        result.history.append(row)
        log("  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items()))
        is_best = val_set is not None and metrics["map50"] > result.best_map50
        if is_best:
            result.best_map50 = metrics["map50"]
        payload = ckpt.make_payload(
            model, cfg, config_name, epoch=epoch + 1, history=result.history, best_map50=result.best_map50,
            metrics=metrics, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            rng={"loader": gen.get_state(), "torch": torch.get_rng_state()},
        )
        ckpt.save(payload, result.last)
        if is_best or val_set is None:
            ckpt.save(payload, result.best)
    return result
