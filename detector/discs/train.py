"""Training of the second stage on crops streamed fresh every epoch (``meddet train-discs``).

Every epoch draws new synthetic patients (``detector.discs.samples``, our own generator only),
randomises the crops' look (``detector.discs.randomize``) and makes one pass over them. The
herniation net learns the call (BCE at ``LABEL_THRESHOLD_MM``) and the protrusion in mm
(smooth L1); the level net the disc level or "not a disc" (cross-entropy); optionally, each
net also learns to read two randomisations of a crop alike (``view_disagreement``). A fixed
validation set from other seeds of the same generator picks the best epoch; the held-out
generator is never used here. ``OUT/last.pt`` resumes; ``OUT/best.pt`` holds the best
``DiscModels`` payload.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from detector.discs.crop_batch import CropBatch
from detector.discs.crops import normalize_crops
from detector.discs.model import DiscModels
from detector.discs.randomize import randomize
from detector.discs.samples import LABEL_THRESHOLD_MM, Detect, Variety, draw_many


@dataclass(frozen=True)
class DiscTrainConfig:
    epochs: int = 20
    patients_per_epoch: int = 500
    val_patients: int = 150
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 1e-4
    mm_loss_weight: float = 0.15
    seed: int = 5150
    nets: tuple[str, ...] = ("herniation", "level")  # which nets learn; the others stay as given
    variety: Variety = Variety()  # what the sampler varies beyond the shipped recipe
    #: the coarsest acquired resolution the herniation crops are randomised to, in crop pixels
    herniation_coarsest: float = 2.5
    #: herniation crops' noise band-limited to their acquired resolution (``randomize``)
    herniation_acquired_noise: bool = False
    #: share of herniation crops given a random texture (``randomize.random_texture``)
    herniation_texture: float = 0.0
    #: weight of each learning net's disagreement between two randomisations of each crop
    #: (``view_disagreement``); 0 = one randomisation, as before
    consistency: float = 0.0


def train_discs(
    cfg: DiscTrainConfig,
    out: Path,
    log: Callable[[str], None] = print,
    resume: bool = True,
    init: DiscModels | None = None,
    detect: Detect | None = None,
) -> Path:
    """Train (or resume) into ``out``; returns the path of ``best.pt``. ``detect``: the
    detector whose boxes the herniation net will see (half the training crops sit on them)."""
    out.mkdir(parents=True, exist_ok=True)
    if not cfg.nets or set(cfg.nets) - {"herniation", "level"}:
        raise ValueError(f"nets: choose from 'herniation' and 'level', got {cfg.nets}")
    models = init or DiscModels.new()
    params = _trained_params(models, cfg)
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs, pct_start=0.15)
    start, best = 0, -1.0
    last = out / "last.pt"
    if resume and last.is_file():
        state = torch.load(last, weights_only=False)
        models = DiscModels.from_payload(state["models"])
        params = _trained_params(models, cfg)
        opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.epochs, pct_start=0.15)
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start, best = state["epoch"] + 1, state["best"]
        log(f"resumed at epoch {start} (best {best:.4f})")
    # validation crops sit where training's do (un-randomised): on the annulus when it anchors
    # there, and beside osteophytes when training draws them (the best epoch must not call them)
    val = draw_many(
        (cfg.seed, 1),
        cfg.val_patients,
        models.herniation_crop,
        models.level_crop,
        augment=False,
        variety=Variety(annulus_anchor=cfg.variety.annulus_anchor, osteophytes=cfg.variety.osteophytes),
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    for epoch in range(start, cfg.epochs):
        t0 = time.perf_counter()
        batch = draw_many(
            (cfg.seed, 2, epoch),
            cfg.patients_per_epoch,
            models.herniation_crop,
            models.level_crop,
            detect=detect,
            variety=cfg.variety,
        )
        t_data = time.perf_counter() - t0
        losses = _epoch(models, batch, opt, cfg, gen)
        sched.step()
        metrics = validate(models, val)
        score = metrics["herniation_auc"] + metrics["level_accuracy"]
        if score > best:
            best = score
            torch.save(models.to_payload(half=False), out / "best.pt")
        torch.save(
            {
                "models": models.to_payload(half=False),
                "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(),
                "epoch": epoch,
                "best": best,
                "config": asdict(cfg),
            },
            last,
        )
        log(
            f"epoch {epoch + 1}/{cfg.epochs}: {len(batch)} discs, loss {losses['herniation']:.3f} "
            f"/ mm {losses['mm']:.3f} / level {losses['level']:.3f}"
            + (f" / views {losses['views']:.4f}" if cfg.consistency > 0 else "")
            + "; val herniation AUC "
            f"{metrics['herniation_auc']:.3f}, mm MAE {metrics['mm_mae']:.2f}, level acc "
            f"{metrics['level_accuracy']:.3f} ({t_data:.0f} s data, {time.perf_counter() - t0:.0f} s total)"
        )
    return out / "best.pt"


def _trained_params(models: DiscModels, cfg: DiscTrainConfig) -> list[torch.nn.Parameter]:
    return [p for name in cfg.nets for p in getattr(models, name).parameters()]


def _epoch(
    models: DiscModels, batch: CropBatch, opt: torch.optim.Optimizer, cfg: DiscTrainConfig, gen: torch.Generator
) -> dict[str, float]:
    models.eval()
    for name in cfg.nets:
        getattr(models, name).train()
    views = 2 if cfg.consistency > 0 else 1

    def herniation_view() -> Tensor:
        return normalize_crops(
            randomize(
                batch.herniation,
                gen,
                coarsest=cfg.herniation_coarsest,
                acquired_noise=cfg.herniation_acquired_noise,
                texture=cfg.herniation_texture,
            )
        )

    hviews = [herniation_view() for _ in range(views)] if "herniation" in cfg.nets else [batch.herniation]
    lviews = (
        [normalize_crops(randomize(batch.level, gen)) for _ in range(views)] if "level" in cfg.nets else [batch.level]
    )
    target = (batch.protrusion_mm >= LABEL_THRESHOLD_MM).float()
    # herniations sit at one disc in ~6: weigh the classes equally
    pos_weight = ((1 - target).sum() / target.sum().clamp_min(1)).clamp(1, 10)
    sums = {"herniation": 0.0, "mm": 0.0, "level": 0.0, "views": 0.0}
    steps = max(1, len(batch.herniation) // cfg.batch_size)
    h_perm = torch.randperm(len(batch.herniation), generator=gen)
    l_perm = torch.randperm(len(batch.level), generator=gen)
    l_size = max(1, len(batch.level) // steps)
    for k in range(steps):
        hi = h_perm[k * cfg.batch_size : (k + 1) * cfg.batch_size]
        li = l_perm[k * l_size : (k + 1) * l_size]
        bce = mm = ce = agree = torch.zeros(())
        if "herniation" in cfg.nets:
            out = models.herniation(torch.cat([v[hi] for v in hviews]))  # the views share one batch
            t, mm_t = target[hi].repeat(views), batch.protrusion_mm[hi].repeat(views)
            bce = F.binary_cross_entropy_with_logits(out[:, 0], t, pos_weight=pos_weight)
            mm = F.smooth_l1_loss(out[:, 1], mm_t)
            if views == 2:
                called = torch.sigmoid(out[:, 0])
                agree = agree + view_disagreement(*torch.stack([called, 1 - called], dim=1).chunk(2))
        if "level" in cfg.nets:
            logits = models.level(torch.cat([v[li] for v in lviews]))
            ce = F.cross_entropy(logits, batch.level_class[li].repeat(views), label_smoothing=0.05)
            if views == 2:
                agree = agree + view_disagreement(*torch.softmax(logits, dim=1).chunk(2))
        loss = bce + cfg.mm_loss_weight * mm + ce + cfg.consistency * agree
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sums["herniation"] += float(bce.detach()) / steps
        sums["mm"] += float(mm.detach()) / steps
        sums["level"] += float(ce.detach()) / steps
        sums["views"] += float(agree.detach()) / steps
    return sums


def view_disagreement(p: Tensor, q: Tensor) -> Tensor:
    """Mean Jensen-Shannon divergence (nats, at most ln 2) between two views' distributions
    [N, K] of the same crops (a call: [yes, no]; a level: the classes): 0 when each crop's two
    views agree. As in AugMix (Hendrycks et al., ICLR 2020), it teaches a net to ignore what
    the randomisation changes (contrast, noise, blur, resolution, artefacts) beyond what the
    labels alone do."""
    dist = torch.stack([p, q]).clamp_min(1e-7)  # [2 views, N, K]
    mean = dist.mean(dim=0, keepdim=True)
    return (dist * (dist.log() - mean.log())).sum(dim=-1).mean()


@torch.inference_mode()
def validate(models: DiscModels, val: CropBatch) -> dict[str, float]:
    """Crop-level herniation AUC and protrusion MAE, and level accuracy, on un-randomised crops."""
    models.eval()
    out = _run(models.herniation, normalize_crops(val.herniation))
    target = (val.protrusion_mm >= LABEL_THRESHOLD_MM).numpy()
    logits = _run(models.level, normalize_crops(val.level))
    return {
        "herniation_auc": auc(out[:, 0].numpy(), target),
        "mm_mae": float((out[:, 1] - val.protrusion_mm).abs().mean()),
        "level_accuracy": float((logits.argmax(1) == val.level_class).float().mean()),
    }


def _run(net: nn.Module, x: Tensor, chunk: int = 256) -> Tensor:
    net.eval()
    return torch.cat([net(x[i : i + chunk]) for i in range(0, len(x), chunk)]) if len(x) else x.new_zeros(0, 2)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by ranks (ties count half); NaN with one class only."""
    scores, labels = np.asarray(scores, float), np.asarray(labels).astype(bool)
    pos, neg = scores[labels], scores[~labels]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum()
    return float(greater / (len(pos) * len(neg)))
