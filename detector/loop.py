"""The training loop that ``train`` and ``distill`` share: ``fit`` runs the epochs, the caller
supplies the step.

Shared here: seeding, the loader, AdamW with weight decay on weights only, the warmup + cosine
schedule, the resumable part of ``last.pt`` (schedule and RNG), and per epoch: train mode,
the steps (backward, gradient clip, optimiser and schedule), the means of the logged numbers,
validation (``map50``, ``map``, ``recall50``), one log line and the caller's checkpoint.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.lr_scheduler import LambdaLR
from torch.utils.data import DataLoader, Dataset

from detector import checkpoint as ckpt
from detector.config import TrainConfig

#: One batch -> the loss to minimise and the numbers to log for it (floats, with "loss").
Step = Callable[[Any], tuple[Tensor, dict[str, float]]]
Log = Callable[[str], None]
History = list[dict[str, float]]


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch; returns the loader's generator (part of the resume state)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def start(tc: TrainConfig) -> torch.Generator:
    """Set the thread count (when configured) and seed everything from ``tc``."""
    if tc.num_threads:
        torch.set_num_threads(tc.num_threads)
    return seed_everything(tc.seed)


def make_loader(
    dataset: Dataset[Any], tc: TrainConfig, collate_fn: Callable[[Any], Any], generator: torch.Generator
) -> DataLoader[Any]:
    """Shuffled batches from ``generator``; drops a last short batch when there is more than one."""
    return DataLoader(
        dataset,
        batch_size=tc.batch_size,
        shuffle=True,
        collate_fn=collate_fn,
        generator=generator,
        drop_last=len(dataset) > tc.batch_size,  # type: ignore[arg-type]
    )


def adamw(params: Iterable[nn.Parameter], tc: TrainConfig) -> torch.optim.AdamW:
    """AdamW with ``tc.weight_decay`` on weights (ndim > 1) and none on biases and norms."""
    params = list(params)
    decay = [p for p in params if p.ndim > 1]
    no_decay = [p for p in params if p.ndim <= 1]
    groups = [{"params": decay, "weight_decay": tc.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=tc.lr)


def lr_lambda(total: int, warmup: int, floor: float = 0.05) -> Callable[[int], float]:
    """Linear warmup over ``warmup`` iterations, then cosine decay to ``floor`` x lr."""

    def f(it: int) -> float:
        if it < warmup:
            return (it + 1) / warmup
        t = min(1.0, (it - warmup) / max(1, total - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))

    return f


def warmup_cosine(optimizer: torch.optim.Optimizer, tc: TrainConfig, steps_per_epoch: int) -> LambdaLR:
    """The schedule over ``tc.epochs`` epochs: warmup of ``tc.warmup_iters`` (at most half)."""
    total = tc.epochs * steps_per_epoch
    return LambdaLR(optimizer, lr_lambda(total, min(tc.warmup_iters, total // 2)))


def loop_state(scheduler: LambdaLR, generator: torch.Generator) -> dict[str, Any]:
    """The schedule and RNG part of ``last.pt`` (the caller adds weights and optimisers)."""
    return {
        "scheduler": scheduler.state_dict(),
        "rng": {"loader": generator.get_state(), "torch": torch.get_rng_state()},
    }


def resume(
    path: Path, scheduler: LambdaLR, generator: torch.Generator, log: Log, map_location: Any = None
) -> dict[str, Any] | None:
    """The state in ``path``, with schedule and RNG restored (the caller loads weights and
    optimisers, and takes ``epoch`` and ``history``); None when there is no such file."""
    if not path.is_file():
        return None
    state = ckpt.load(path, map_location=map_location)
    scheduler.load_state_dict(state["scheduler"])
    generator.set_state(state["rng"]["loader"])
    torch.set_rng_state(state["rng"]["torch"])
    log(f"resumed from {path} at epoch {state['epoch']}")
    return state


def format_row(row: dict[str, Any]) -> str:
    """An epoch's log line: ``epoch 3  loss 0.4210  map50 0.8000``."""
    return "  ".join(f"{k} {v:.4f}" if isinstance(v, float) else f"{k} {v}" for k, v in row.items())


def fit(
    step: Step,
    loader: DataLoader[Any],
    *,
    optimizer: torch.optim.Optimizer,
    scheduler: LambdaLR,
    modules: Sequence[nn.Module],
    clip: Iterable[Tensor],
    grad_clip: float,
    epochs: int,
    history: History,
    start_epoch: int = 0,
    validate: Callable[[], dict[str, Any]] | None = None,
    save: Callable[[int, dict[str, Any]], None] = lambda epoch, metrics: None,
    log: Log = print,
    progress: bool = True,
    desc: str = "epoch",
    postfix: Sequence[str] = ("loss",),
) -> History:
    """Epochs ``start_epoch + 1 .. epochs``: ``modules`` in train mode, ``step`` per batch, then
    zero-grad, backward, clip ``clip`` to ``grad_clip``, optimiser and schedule steps. Each
    epoch appends the means of the logged numbers (and ``validate()``'s map50, map, recall50)
    to ``history``, logs them, and calls ``save(epoch, metrics)``. Returns ``history``."""
    from tqdm import tqdm

    clip = list(clip)
    for epoch in range(start_epoch, epochs):
        for module in modules:
            module.train()
        sums: dict[str, float] = {}
        bar = tqdm(loader, desc=f"{desc} {epoch + 1}/{epochs}", disable=not progress, leave=False)
        for batch in bar:
            loss, logs = step(batch)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(clip, grad_clip)
            optimizer.step()
            scheduler.step()
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix({k: f"{logs[k]:.3f}" for k in postfix})
        row: dict[str, float] = {"epoch": epoch + 1, **{k: v / max(1, len(loader)) for k, v in sums.items()}}
        metrics: dict[str, Any] = {}
        if validate is not None:
            metrics = validate()
            row.update(map50=metrics["map50"], map=metrics["map"], recall50=metrics["recall50"])
        history.append(row)
        log(format_row(row))
        save(epoch + 1, metrics)
    return history
