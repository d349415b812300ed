import pytest
import torch

from detector.config import available_configs, load_config
from detector.flops import complexity
from detector.models import build_detector
from detector.models.head import IdentityRefiner


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def test_every_shipped_config_loads() -> None:
    names = available_configs()
    assert {"student", "student_paper", "teacher_r50", "teacher_r101", "teacher_r152", "tiny"} <= set(names)
    for name in (n for n in names if not n.startswith("distill_")):  # distill_* are distillation runs
        cfg = load_config(name)
        assert cfg.neck.num_outs == len(cfg.head.strides)


def test_unknown_config_key_is_named() -> None:
    from detector.config import DetectorConfig

    with pytest.raises(ValueError, match="bogus"):
        DetectorConfig.from_dict({"head": {"bogus": 1}})


def test_tiny_forward_shapes_and_hooks() -> None:
    cfg = load_config("tiny")
    model = build_detector(cfg)
    x = torch.rand(2, 1, 128, 128)
    feats = model.extract_feats(x)
    assert [tuple(f.shape) for f in feats] == [(2, 32, 16, 16), (2, 32, 8, 8), (2, 32, 4, 4)]
    cls, reg = model(x)
    assert [tuple(c.shape) for c in cls] == [(2, 2, 16, 16), (2, 2, 8, 8), (2, 2, 4, 4)]
    assert [tuple(r.shape) for r in reg] == [(2, 36, 16, 16), (2, 36, 8, 8), (2, 36, 4, 4)]
    assert isinstance(model.head.refine, IdentityRefiner)
    model.eval()
    out = model.predict(x)
    assert len(out) == 2 and all(b.shape[1] == 4 and len(b) == len(s) == len(lab) for b, s, lab in out)


def test_refine_hook_builds_nmode2_from_the_head_config() -> None:
    model = build_detector(load_config("tiny").replace(head={"ode": "nmode2"}))
    assert type(model.head.refine).__name__ == "NMODE2Refiner"
    cls, _ = model(torch.rand(1, 1, 128, 128))
    assert cls[0].shape == (1, 2, 16, 16)
    with pytest.raises(ValueError, match="head.ode"):
        build_detector(load_config("tiny").replace(head={"ode": "bogus"}))


def test_forward_train_losses_are_finite_and_backpropagate() -> None:
    model = build_detector(load_config("tiny"))
    x = torch.rand(2, 1, 128, 128)
    targets = [
        {"boxes": torch.tensor([[10.0, 20.0, 50.0, 34.0], [60.0, 60.0, 80.0, 80.0]]), "labels": torch.tensor([1, 0])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.long)},  # an image without discs
    ]
    losses = model.forward_train(x, targets)
    assert set(losses) == {"loss_qfl", "loss_dfl", "loss_giou"}
    total = sum(losses.values())
    assert torch.isfinite(total) and total > 0
    total.backward()
    assert model.head.gfl_reg.weight.grad is not None and model.backbone.stem[0].weight.grad.abs().sum() > 0


def test_resnet_and_mobilenet_variants_build() -> None:
    for name in ("teacher_r18_small", "teacher_r50_small", "student"):
        cfg = load_config(name)
        model = build_detector(cfg)
        assert len(model.extract_feats(torch.rand(1, 1, 64, 64))) == cfg.neck.num_outs


def test_paper_student_and_r50_match_the_paper() -> None:
    student = complexity(load_config("student_paper"), 512)
    assert round(student.params_m, 2) == 10.42
    assert abs(student.gmacs - 31.69) / 31.69 < 0.01
    r50 = complexity(load_config("teacher_r50"), 512)
    assert abs(r50.params_m - 32.32) / 32.32 < 0.01
    assert abs(r50.gmacs - 50.21) / 50.21 < 0.06


@pytest.mark.slow
def test_paper_r101_and_r152_match_the_paper() -> None:
    for name, params, gmacs in (("teacher_r101", 51.24, 71.20), ("teacher_r152", 66.51, 92.13)):
        c = complexity(load_config(name), 512)
        assert abs(c.params_m - params) / params < 0.01, name
        assert abs(c.gmacs - gmacs) / gmacs < 0.02, name


def test_default_student_is_slim() -> None:
    student = complexity(load_config("student"), 512)
    r50 = complexity(load_config("teacher_r50"), 512)
    assert student.params_m / r50.params_m <= 0.3
    assert student.gmacs / r50.gmacs <= 1 / 6


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_forward_matches_cpu() -> None:
    model = build_detector(load_config("tiny")).eval()
    x = torch.rand(2, 1, 128, 128)
    with torch.inference_mode():
        cpu = model(x)[0][0]
        gpu = model.cuda()(x.cuda())[0][0].cpu()
    torch.testing.assert_close(cpu, gpu, atol=1e-3, rtol=1e-3)
