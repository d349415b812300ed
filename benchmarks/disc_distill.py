"""Does MedDet's distillation (AFA + LWFF) help the second stage's herniation classifier?

    python benchmarks/disc_distill.py [--epochs 8] [--patients 300] [--seed 6100] [--threads 1]

One run, the same freshly drawn crops every epoch for every model (``detector.discs.samples``,
randomised look): two wide teachers (DiscNet x2 widths, different seeds), the student alone,
and the student distilled from both (each teacher's last feature map aligned by AFA, fused by
LWFF; the fused map learns through the student's head on the task loss and is the student's
MSE target, as the detector's distillation does it). Scores: herniation AUC and level accuracy
on validation crops of our generator, and herniation AUC on crops of the held-out generator's
true disc boxes (evaluation only, never used to choose anything here).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from detector.discs.crops import HERNIATION_CROP, LEVEL_CROP, CropRequest, anchor_of_box, normalize_crops, take_crops  # noqa: E402  # noqa: E402
from detector.discs.model import DiscNet  # noqa: E402
from detector.discs.randomize import randomize  # noqa: E402
from detector.discs.samples import LABEL_THRESHOLD_MM, draw_many  # noqa: E402
from detector.discs.train import auc  # noqa: E402
from detector.distill.afa import AFA  # noqa: E402
from detector.distill.losses import feature_mse  # noqa: E402
from detector.distill.lwff import LWFF  # noqa: E402
from detector.naming import LEVEL_CLASSES  # noqa: E402

WIDE = (32, 64, 96, 128, 192)


def heldout_crops(n: int, seed: int) -> tuple[torch.Tensor, np.ndarray]:
    """Herniation crops at the held-out generator's true boxes (the middle slice of each disc)."""
    from detector.heldout import studies

    crops, labels = [], []
    for st in studies(n // 2, n - n // 2, seed):
        volume = torch.from_numpy(np.asarray(st.volume, np.float32))
        for disc in st.discs:
            if disc.level not in LEVEL_CLASSES[:6] or not disc.boxes:
                continue
            k = max(disc.protrusion_by_slice or disc.boxes, key=lambda s: disc.protrusion_by_slice.get(s, 0.0))
            row, col = anchor_of_box(disc.boxes[k])
            crops.append(take_crops(volume, st.pixel_spacing, HERNIATION_CROP, [CropRequest(k, row, col)]))
            labels.append(disc.herniated)
    return normalize_crops(torch.cat(crops)), np.array(labels)


def train(nets: dict[str, DiscNet], levels: dict[str, DiscNet], distill: dict, args: argparse.Namespace) -> None:
    params = [p for m in (*nets.values(), *levels.values(), distill["afa"], distill["lwff"]) for p in m.parameters()]
    opt = torch.optim.AdamW(params, lr=2e-3, weight_decay=1e-4)
    gen = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        batch = draw_many((args.seed, 2, epoch), args.patients, HERNIATION_CROP, LEVEL_CROP)
        x = normalize_crops(randomize(batch.herniation, gen))
        xl = normalize_crops(randomize(batch.level, gen))
        y = (batch.protrusion_mm >= LABEL_THRESHOLD_MM).float()
        steps = max(1, len(x) // 64)
        perm, lperm = torch.randperm(len(x), generator=gen), torch.randperm(len(xl), generator=gen)
        ls = max(1, len(xl) // steps)
        for k in range(steps):
            i, j = perm[k * 64 : (k + 1) * 64], lperm[k * ls : (k + 1) * ls]
            loss = torch.zeros(())
            feats = {}
            for name, net in nets.items():
                f = net.features(x[i])
                feats[name] = f
                out = net.head(f.mean(dim=(2, 3)))
                loss = (
                    loss
                    + F.binary_cross_entropy_with_logits(out[:, 0], y[i])
                    + 0.15 * F.smooth_l1_loss(out[:, 1], batch.protrusion_mm[i])
                )
            for net in levels.values():
                loss = loss + F.cross_entropy(net(xl[j]), batch.level_class[j])
            # distillation: teachers' last maps -> AFA -> LWFF -> through the student's head, and its target
            s_feat = feats["distilled"]
            size = [tuple(s_feat.shape[-2:])]
            aligned = [afa([feats[t].detach()], size) for afa, t in zip(distill["afa"], ("teacher_a", "teacher_b"))]
            fused = distill["lwff"](aligned)[0]
            via = nets["distilled"].head(fused.mean(dim=(2, 3)))
            loss = loss + F.binary_cross_entropy_with_logits(via[:, 0], y[i])
            loss = loss + args.alpha * feature_mse([s_feat], [fused.detach()])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}/{args.epochs} done ({len(x)} crops)", flush=True)


@torch.inference_mode()
def score(net: DiscNet, x: torch.Tensor, y: np.ndarray) -> float:
    net.eval()
    out = torch.cat([net(x[i : i + 256]) for i in range(0, len(x), 256)])
    net.train()
    return auc(out[:, 0].numpy(), y)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--patients", type=int, default=300)
    ap.add_argument("--seed", type=int, default=6100)
    ap.add_argument("--alpha", type=float, default=1.0)
    ap.add_argument("--heldout", type=int, default=20, help="held-out studies for the crop-level check")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    nets = {
        "teacher_a": DiscNet(3, 2, WIDE),
        "teacher_b": DiscNet(3, 2, WIDE),
        "student": DiscNet(3, 2),
        "distilled": DiscNet(3, 2),
    }
    levels = {"student_level": DiscNet(1, len(LEVEL_CLASSES))}
    distill = {"afa": torch.nn.ModuleList([AFA(WIDE[-1], 96, 1), AFA(WIDE[-1], 96, 1)]), "lwff": LWFF(2, 96, 1)}
    train(nets, levels, distill, args)
    val = draw_many((args.seed, 1), 150, HERNIATION_CROP, LEVEL_CROP, augment=False)
    xv, yv = normalize_crops(val.herniation), (val.protrusion_mm >= LABEL_THRESHOLD_MM).numpy()
    xh, yh = heldout_crops(args.heldout, 7300)
    print(f"\n{args.epochs} epochs x {args.patients} patients, seed {args.seed}, alpha {args.alpha}")
    print(f"{'model':<12} {'params':>8} {'AUC own val':>12} {'AUC held-out':>13}")
    for name, net in nets.items():
        n = sum(p.numel() for p in net.parameters())
        print(f"{name:<12} {n:>8} {score(net, xv, yv):>12.3f} {score(net, xh, yh):>13.3f}")


if __name__ == "__main__":
    main()
