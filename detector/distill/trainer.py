"""MedDet distillation loop: frozen teachers -> AFA -> LWFF -> (AATM) -> GFL student.

Per step: loss = detection (QFL + DFL + GIoU) + alpha * MSE(generated student feature, fused
teacher feature) + beta * adversarial (generator) + gamma * detection on the fused teacher
feature through the student's head (what trains AFA and LWFF: a learnable target pulled
toward the student by the MSE would collapse onto whatever the student already has); with ``adversarial`` the discriminators
are updated first on (fused teacher = real, generated = fake), then the student side.
Teacher FPN features can be cached once (memory as float16, or on disk), which makes CPU
distillation cost little more than plain training. ``out_dir/last.pt`` holds the full state
(resumable); ``out_dir/student.pt`` the student alone in the shipped checkpoint format.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from detector import checkpoint as ckpt
from detector import loop
from detector.config import DetectorConfig
from detector.distill.aatm import AATM
from detector.distill.afa import AFA
from detector.distill.config import DistillConfig
from detector.distill.losses import discriminator_loss, feature_mse, generator_loss
from detector.distill.lwff import LWFF
from detector.evaluate import evaluate_model
from detector.models import GFL, build_detector
from detector.models.nmode import NMODE2Block, NMODE2Refiner
from detector.train import PreparedDataset, collate, default_augment, init_from


def load_teacher(path: Path | str) -> tuple[GFL, str]:
    """A frozen teacher (eval mode, no grads) and its version from a checkpoint file."""
    payload = ckpt.load(Path(path))
    model = build_detector(DetectorConfig.from_dict(payload["config"]))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in payload["model"].items()})
    return freeze(model), str(payload["version"])


def freeze(model: nn.Module) -> GFL:
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model  # type: ignore[return-value]


def build_student(cfg: DetectorConfig, ode: str) -> tuple[GFL, DetectorConfig]:
    """The student with nmODE² where ``ode`` says: "head" sets ``head.ode = "nmode2"`` (a
    plain checkpoint rebuilds it); "fpn" / "backbone" wrap the neck / backbone outputs (for
    the placement ablation)."""
    cfg = cfg.replace(head={"ode": "nmode2" if ode == "head" else "none"})
    model = build_detector(cfg)
    if ode == "fpn":
        model.neck = nn.Sequential(model.neck, NMODE2Block([cfg.neck.channels] * cfg.neck.num_outs))  # type: ignore[assignment]
    elif ode == "backbone":
        model.backbone = nn.Sequential(model.backbone, NMODE2Block(model.backbone.out_channels))  # type: ignore[assignment]
    return model, cfg


@torch.no_grad()
def absorb_nmode_offset(model: GFL) -> None:
    """Make a freshly added nmODE² head refiner (nearly) transparent, so a student
    initialised from a plain checkpoint starts where that checkpoint was: zero the refiner's
    1x1 convs (u = 0, so y(1) is one constant c everywhere) and subtract c times the
    prediction convs' weight sums from their biases (exact away from the feature map's border)."""
    head = model.head
    refiner = head.refine
    if not isinstance(refiner, NMODE2Refiner):
        return
    for proj in (refiner.cls_proj, refiner.reg_proj):
        assert proj.bias is not None
        proj.weight.zero_()
        proj.bias.zero_()
    zero = head.gfl_cls.weight.new_zeros(1, head.gfl_cls.in_channels, 1, 1)
    c = float(refiner([zero], [zero])[0][0].mean())
    for conv in (head.gfl_cls, head.gfl_reg):
        assert conv.bias is not None
        conv.bias -= c * conv.weight.sum((1, 2, 3))


class DistillModules(nn.Module):
    """Everything learnable besides the student: one AFA per teacher, LWFF, AATM."""

    def __init__(self, teacher_channels: Sequence[int], student_channels: int, levels: int, dcfg: DistillConfig):
        super().__init__()
        self.afa = nn.ModuleList(AFA(c, student_channels, levels) for c in teacher_channels)
        self.fusion = LWFF(len(teacher_channels), student_channels, levels, dcfg.fusion)  # type: ignore[arg-type]
        self.aatm = AATM(student_channels, levels)

    def fused_teacher(self, teacher_feats: Sequence[Sequence[Tensor]], sizes: list[tuple[int, int]]) -> list[Tensor]:
        """teacher_feats[k][l]: [B, C_k, H, W] -> fused per level [B, C_s, H_l, W_l]."""
        return self.fusion([afa([f.float() for f in feats], sizes) for afa, feats in zip(self.afa, teacher_feats)])

    def student_params(self) -> list[nn.Parameter]:
        return [*self.afa.parameters(), *self.fusion.parameters(), *self.aatm.generators.parameters()]


class _Indexed(Dataset):
    """Yields (index, image, target) so cached teacher features line up with the batch."""

    def __init__(self, base: PreparedDataset) -> None:
        self.base = base

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, i: int) -> tuple[int, Tensor, dict[str, Tensor]]:
        return (i, *self.base[i])


def _collate(batch: list[tuple[int, Tensor, dict[str, Tensor]]]) -> tuple[Tensor, Tensor, list[dict[str, Tensor]]]:
    images, targets = collate([(b[1], b[2]) for b in batch])
    return torch.tensor([b[0] for b in batch]), images, targets


@torch.inference_mode()
def teacher_features(
    teachers: Sequence[GFL], data: PreparedDataset, batch_size: int = 8, progress: bool = False
) -> list[list[Tensor]]:
    """Every teacher's FPN features of every image: [k][l] -> float16 [N, C_k, H_l, W_l]."""
    from tqdm import tqdm

    out: list[list[list[Tensor]]] = [[] for _ in teachers]
    starts = range(0, len(data), batch_size)
    for s in tqdm(starts, desc="teacher features", disable=not progress, leave=False):
        images = torch.stack([data[i][0] for i in range(s, min(s + batch_size, len(data)))])
        for k, t in enumerate(teachers):
            out[k].append([f.half() for f in t.extract_feats(images)])
    return [[torch.cat(level) for level in zip(*chunks)] for chunks in out]


def _cache_key(versions: Sequence[str], data: PreparedDataset) -> str:
    h = hashlib.sha256("|".join(versions).encode())
    for image, boxes, _ in data.items:
        h.update(image.numpy().tobytes()[:4096])
        h.update(boxes.numpy().tobytes())
    return h.hexdigest()[:16]


@dataclass
class DistillResult:
    history: list[dict[str, float]] = field(default_factory=list)
    model: GFL | None = None
    student: Path | None = None
    last: Path | None = None
    metrics: dict[str, Any] = field(default_factory=dict)


def distill(
    dcfg: DistillConfig,
    student_cfg: DetectorConfig,
    teachers: Sequence[GFL],
    train_set: Any,
    val_set: Any | None,
    out_dir: Path,
    config_name: str = "meddet-student",
    teacher_versions: Sequence[str] = (),
    resume: bool = True,
    progress: bool = True,
    log: Callable[[str], None] = print,
    init: Path | str | None = None,
) -> DistillResult:
    """Distil ``teachers`` (frozen GFL models) into a student built from ``student_cfg``;
    ``init``: a checkpoint (e.g. the undistilled student) whose matching weights start it
    (a new nmODE² head refiner starts transparent, see ``absorb_nmode_offset``).

    Returns the per-epoch history (det, mse, adv_g, adv_d, and val map50/map/recall50 when
    ``val_set`` is given) and writes ``last.pt`` (resumable) and ``student.pt``.
    """
    tc = student_cfg.train
    gen = loop.start(tc)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    teachers = [freeze(t) for t in teachers]
    student, student_cfg = build_student(student_cfg, dcfg.ode)
    if init is not None:
        done = init_from(student, init)
        if any(k.startswith("head.refine.") for k in done.fresh):
            absorb_nmode_offset(student)
        log(f"student {done.describe(init)}")
    levels = student_cfg.neck.num_outs
    for t in teachers:
        if t.cfg.neck.num_outs != levels:
            raise ValueError(f"teachers: every teacher needs {levels} FPN levels, got {t.cfg.neck.num_outs}")
    mods = DistillModules([t.cfg.neck.channels for t in teachers], student_cfg.neck.channels, levels, dcfg)

    augment = default_augment(student_cfg) if dcfg.cache == "none" and tc.augment else None
    prepared = PreparedDataset(train_set, student_cfg, augment)
    cache: list[list[Tensor]] | None = None
    if dcfg.cache != "none":
        versions = list(teacher_versions) or [f"t{k}" for k in range(len(teachers))]
        path = out_dir / f"teacher-cache-{_cache_key(versions, prepared)}.pt"
        if dcfg.cache == "disk" and path.is_file():
            cache = torch.load(path, weights_only=True)
        else:
            cache = teacher_features(teachers, prepared, tc.batch_size, progress)
            if dcfg.cache == "disk":
                torch.save(cache, path)

    loader = loop.make_loader(_Indexed(prepared), tc, _collate, gen)
    params = [p for p in student.parameters()] + mods.student_params()
    opt = loop.adamw(params, tc)
    opt_d = torch.optim.Adam(mods.aatm.discriminators.parameters(), lr=dcfg.d_lr, betas=(0.5, 0.999))
    sched = loop.warmup_cosine(opt, tc, len(loader))

    last, student_path = out_dir / "last.pt", out_dir / "student.pt"
    result = DistillResult(student=student_path, last=last)
    start = 0
    state = loop.resume(last, sched, gen, log) if resume else None
    if state is not None:
        student.load_state_dict(state["model"])
        mods.load_state_dict(state["distill_modules"])
        opt.load_state_dict(state["optimizer"]["student"])
        opt_d.load_state_dict(state["optimizer"]["discriminator"])
        start, result.history = state["epoch"], state.get("history", [])

    discs = list(mods.aatm.discriminators.parameters())

    def step(batch: tuple[Tensor, Tensor, list[dict[str, Tensor]]]) -> tuple[Tensor, dict[str, float]]:
        """Discriminators first (adversarial), then the student side's loss for ``fit``."""
        idx, images, targets = batch
        if cache is not None:
            t_feats: list[list[Tensor]] = [[lvl[idx] for lvl in teacher] for teacher in cache]
        else:
            with torch.no_grad():
                t_feats = [t.extract_feats(images) for t in teachers]
        s_feats = student.extract_feats(images)
        boxes, labels = [t["boxes"] for t in targets], [t["labels"] for t in targets]
        cls_scores, box_preds = student.head(s_feats)
        det = student.head.loss(cls_scores, box_preds, boxes, labels)
        det_loss = cast(Tensor, sum(det.values()))
        sizes = [tuple(f.shape[-2:]) for f in s_feats]
        fused = mods.fused_teacher(t_feats, sizes)  # type: ignore[arg-type]
        generated = mods.aatm.generate(s_feats)
        # the fused teacher is a fixed target for the student side; AFA/LWFF learn from
        # the student's head detecting on it, so it stays meaningful in the student's space
        mse = feature_mse(generated, [f.detach() for f in fused], dcfg.normalize)
        logs = {k: float(v.detach()) for k, v in det.items()}
        loss = det_loss + dcfg.alpha * mse
        if dcfg.gamma > 0:
            fused_scores, fused_preds = student.head(fused)
            fdet = student.head.loss(fused_scores, fused_preds, boxes, labels)
            fused_loss = cast(Tensor, sum(fdet.values()))
            loss = loss + dcfg.gamma * fused_loss
            logs["fused_det"] = float(fused_loss.detach())
        if dcfg.adversarial and dcfg.beta > 0:
            d_loss = discriminator_loss(
                mods.aatm.discriminate([f.detach() for f in fused]),
                mods.aatm.discriminate([g.detach() for g in generated]),
            )
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            for p in discs:
                p.requires_grad_(False)
            g_loss = generator_loss(mods.aatm.discriminate(generated))
            for p in discs:
                p.requires_grad_(True)
            loss = loss + dcfg.beta * g_loss
            logs.update(adv_d=float(d_loss.detach()), adv_g=float(g_loss.detach()))
        logs.update(loss=float(loss.detach()), det=float(det_loss.detach()), mse=float(mse.detach()))
        return loss, logs

    def save(epoch: int, metrics: dict[str, Any]) -> None:
        result.metrics = metrics
        payload = ckpt.make_payload(
            student,
            student_cfg,
            config_name,
            epoch=epoch,
            history=result.history,
            metrics=result.metrics,
            distill=dcfg.to_dict(),
            teachers=list(teacher_versions),
            init=str(init) if init else None,
        )
        ckpt.save(
            {
                **payload,
                "distill_modules": mods.state_dict(),
                "optimizer": {"student": opt.state_dict(), "discriminator": opt_d.state_dict()},
                **loop.loop_state(sched, gen),
            },
            last,
        )
        ckpt.save(payload, student_path)

    loop.fit(
        step,
        loader,
        optimizer=opt,
        scheduler=sched,
        modules=[student, mods],
        clip=params,
        grad_clip=tc.grad_clip,
        epochs=tc.epochs,
        history=result.history,
        start_epoch=start,
        validate=None if val_set is None else lambda: evaluate_model(student, val_set, student_cfg.preprocess),
        save=save,
        log=log,
        progress=progress,
        desc="distill",
        postfix=("loss", "mse"),
    )
    result.model = student.eval()
    return result
