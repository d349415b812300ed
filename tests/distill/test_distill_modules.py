"""AFA, LWFF, AATM, the losses and the distill configs."""

from __future__ import annotations

import pytest
import torch

from detector.distill.aatm import AATM
from detector.distill.afa import AFA
from detector.distill.config import DistillConfig, load_distill, parse_distill
from detector.distill.losses import discriminator_loss, feature_mse, generator_loss, standardize
from detector.distill.lwff import LWFF, LevelFusion

torch.set_num_threads(1)
SIZES = [(16, 16), (8, 8), (4, 4)]


def feats(c: int, sizes=SIZES, b: int = 2, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(b, c, h, w, generator=g) for h, w in sizes]


def test_afa_aligns_channels_and_size() -> None:
    afa = AFA(teacher_channels=48, student_channels=16, num_levels=3)
    big = feats(48, [(32, 32), (16, 16), (8, 8)])  # a teacher run at twice the input size
    out = afa(big, SIZES)
    assert [tuple(o.shape) for o in out] == [(2, 16, h, w) for h, w in SIZES]
    same = afa(feats(48), SIZES)
    assert torch.allclose(same[0], afa.convs[0](feats(48)[0]))  # no pooling when sizes match
    with pytest.raises(ValueError, match="levels"):
        afa(big[:2], SIZES)


@pytest.mark.parametrize("mode", ["lwff", "sum", "concat"])
def test_fusion_modes_start_as_the_teacher_mean(mode: str) -> None:
    fusion = LWFF(num_teachers=3, channels=8, num_levels=3, mode=mode)  # type: ignore[arg-type]
    teachers = [feats(8, seed=k) for k in range(3)]
    fused = fusion(teachers)
    mean = [torch.stack([t[level] for t in teachers]).mean(0) for level in range(3)]
    for f, m in zip(fused, mean):
        assert f.shape == m.shape
        assert torch.allclose(f, m, atol=1e-5)


def test_lwff_weights_are_learnable_per_teacher_and_channel() -> None:
    level = LevelFusion(num_teachers=2, channels=4, mode="lwff")
    assert level.weights().shape == (2, 4)
    x = [torch.randn(1, 4, 3, 3), torch.randn(1, 4, 3, 3)]
    level(x).square().sum().backward()
    assert level.logits.grad is not None and level.logits.grad.abs().sum() > 0
    with torch.no_grad():
        level.logits[0, 0] = 10.0  # teacher 0 dominates channel 0
    w = level.weights()
    assert w[0, 0] > 1.9 and w[1, 0] < 0.1 and torch.allclose(w.sum(0), torch.full((4,), 2.0))
    with pytest.raises(ValueError, match="mode"):
        LevelFusion(2, 4, mode="max")  # type: ignore[arg-type]


def test_aatm_shapes_and_gradients() -> None:
    aatm = AATM(channels=8, num_levels=3)
    s = [f.requires_grad_() for f in feats(8)]
    gen = aatm.generate(s)
    logits = aatm.discriminate(gen)
    assert [g.shape for g in gen] == [x.shape for x in s]
    assert [tuple(x.shape) for x in logits] == [(2, 1, h, w) for h, w in SIZES]
    generator_loss(logits).backward()
    assert s[0].grad is not None and s[0].grad.abs().sum() > 0


def test_losses() -> None:
    x = feats(4)
    z = standardize(x[0])
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(4), atol=1e-5)
    assert torch.allclose(z.var(dim=(0, 2, 3), unbiased=False), torch.ones(4), atol=1e-3)
    assert float(feature_mse(x, x)) < 1e-10
    # standardised MSE ignores scale and shift; the raw one does not
    shifted = [3 * t + 1 for t in x]
    assert float(feature_mse(x, shifted)) < 1e-8 and float(feature_mse(x, shifted, normalize=False)) > 1
    real, fake = [torch.full((2, 1, 4, 4), 8.0)], [torch.full((2, 1, 4, 4), -8.0)]
    assert float(discriminator_loss(real, fake)) < 1e-3  # a perfect discriminator
    assert abs(float(discriminator_loss([torch.zeros(1)], [torch.zeros(1)])) - 0.6931) < 1e-3
    assert float(generator_loss(fake)) > 7


def test_distill_config_parsing_and_shipped_files() -> None:
    dcfg, train = parse_distill({"distill": {"teachers": ["a", "b"], "fusion": "sum"}, "train": {"epochs": 2}})
    assert dcfg.teachers == ("a", "b") and dcfg.fusion == "sum" and train == {"epochs": 2}
    with pytest.raises(ValueError, match="unknown key"):
        parse_distill({"distill": {"alpah": 1.0}})
    with pytest.raises(ValueError, match="fusion"):
        DistillConfig(fusion="max")
    for name in ("distill_paper", "distill_small"):
        dcfg, student = load_distill(name)
        assert len(dcfg.teachers) == 3 and student.head.ode == "none" and dcfg.ode == "head"
    paper, student = load_distill("distill_paper")
    assert paper.teachers == ("teacher_r152", "teacher_r101", "teacher_r50")
    assert student.backbone.name == "mobilenetv2" and student.neck.channels == 256
