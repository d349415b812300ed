"""nmODE²: the vector field, solvers agreeing, the batched refiner and blocks."""

from __future__ import annotations

import pytest
import torch

from detector.models.nmode import (
    NMODE2Block,
    NMODE2Refiner,
    ODESolver,
    nmode2_rhs,
    rk4_inplace,
    rk4_unrolled,
    solve_many,
    solve_nmode2,
)

torch.set_num_threads(1)


def test_rhs_matches_the_formula() -> None:
    y, u = torch.tensor([0.0, 0.3, -1.2]), torch.tensor([0.5, -2.0, 1.0])
    expected = -y + torch.sin(y + torch.cos(y + u) ** 2) ** 2
    assert torch.allclose(nmode2_rhs(y, u), expected)


def test_fast_rk4_equals_torchdiffeq_rk4() -> None:
    u = torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 2
    for steps in (1, 3, 4):
        fast = solve_nmode2(u, ODESolver(steps=steps, fast=True))
        ref = solve_nmode2(u, ODESolver(steps=steps, fast=False))
        assert torch.allclose(fast, ref, atol=1e-6), steps


def test_inplace_inference_path_equals_unrolled() -> None:
    u = torch.randn(3000, generator=torch.Generator().manual_seed(4))
    for steps in (1, 2, 4):
        assert torch.allclose(rk4_inplace(u, steps), rk4_unrolled(u, steps), atol=1e-6)
    with torch.inference_mode():
        assert torch.allclose(solve_nmode2(u, ODESolver()), rk4_unrolled(u, 4), atol=1e-6)


def test_rk4_agrees_with_dopri5() -> None:
    u = torch.randn(2048, generator=torch.Generator().manual_seed(1)) * 2
    rk4 = solve_nmode2(u, ODESolver(steps=4))
    dopri = solve_nmode2(u, ODESolver(method="dopri5", rtol=1e-7, atol=1e-9))
    assert (rk4 - dopri).abs().max() < 1e-4
    # y(1) is bounded: y' = -y + s with s in [0, 1] and y(0) = 0 gives 0 <= y(1) <= 1 - 1/e
    assert dopri.min() >= -1e-6 and dopri.max() <= 1 - torch.exp(torch.tensor(-1.0)) + 1e-5


def test_adjoint_gradients_match_autograd() -> None:
    u1 = torch.randn(512, generator=torch.Generator().manual_seed(2)).requires_grad_()
    u2 = u1.detach().clone().requires_grad_()
    solve_nmode2(u1, ODESolver(steps=8)).square().sum().backward()
    solve_nmode2(u2, ODESolver(steps=8, adjoint=True)).square().sum().backward()
    assert torch.allclose(u1.grad, u2.grad, atol=1e-4)


def test_solve_many_equals_separate_solves() -> None:
    g = torch.Generator().manual_seed(3)
    us = [torch.randn(2, 8, s, s, generator=g) for s in (8, 4, 2)]
    together = solve_many(us, ODESolver())
    for u, y in zip(us, together):
        assert y.shape == u.shape
        assert torch.allclose(y, rk4_unrolled(u, 4), atol=1e-6)


def test_solve_many_keeps_channels_last() -> None:
    u = torch.randn(2, 8, 5, 3).contiguous(memory_format=torch.channels_last)
    (y,) = solve_many([u], ODESolver())
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(y, rk4_unrolled(u.contiguous(), 4), atol=1e-6)


def test_refiner_shapes_and_one_solve(monkeypatch: pytest.MonkeyPatch) -> None:
    import detector.models.nmode as nm

    calls = []
    real = nm.solve_nmode2
    monkeypatch.setattr(nm, "solve_nmode2", lambda u, s: calls.append(u.shape) or real(u, s))
    ref = NMODE2Refiner(16)
    cls = [torch.randn(2, 16, s, s) for s in (16, 8, 4, 2, 1)]
    reg = [torch.randn(2, 16, s, s) for s in (16, 8, 4, 2, 1)]
    out_cls, out_reg = ref(cls, reg)
    assert [o.shape for o in out_cls] == [c.shape for c in cls]
    assert [o.shape for o in out_reg] == [r.shape for r in reg]
    assert len(calls) == 1 and calls[0][0] == 2 * sum(c.numel() for c in cls)
    out_cls[0].sum().backward()
    assert ref.cls_proj.weight.grad is not None and ref.cls_proj.weight.grad.abs().sum() > 0


def test_block_per_input_channels_and_validation() -> None:
    block = NMODE2Block([8, 16, 32], residual=False)
    xs = [torch.randn(1, c, 4, 4) for c in (8, 16, 32)]
    ys = block(xs)
    assert [y.shape for y in ys] == [x.shape for x in xs]
    assert all(float(y.detach().min()) >= -1e-6 for y in ys)  # pure y(1) is non-negative
    with pytest.raises(ValueError, match="in_channels"):
        NMODE2Block([8, 16], shared=True)
    with pytest.raises(ValueError, match="steps"):
        ODESolver(steps=0)
    with pytest.raises(ValueError, match="method"):
        ODESolver(method="leapfrog")  # type: ignore[arg-type]


def test_head_builds_with_nmode2() -> None:
    from detector.config import load_config
    from detector.models import build_detector

    cfg = load_config("tiny").replace(head={"ode": "nmode2", "ode_steps": 2})
    model = build_detector(cfg).eval()
    assert isinstance(model.head.refine, NMODE2Refiner)
    with torch.no_grad():
        cls, reg = model(torch.rand(1, 1, 64, 64))
    assert len(cls) == len(cfg.head.strides) and cls[0].shape[1] == cfg.num_classes
