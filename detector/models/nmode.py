"""nmODE² (neural memory ODE, squared form) blocks for the MedDet student.

    dy/dt = -y + sin²(y + cos²(y + u)),   u = W x + b (1x1 conv),   y(0) = 0,   t in [0, 1]

``y(1)`` is the block's output (added to ``x`` when ``residual``). Every block solves ALL of its
inputs (FPN levels, head branches) as ONE flattened tensor in one solve, because the ODE is
element-wise: 10 small solves cost ten times the Python overhead of one.

Solvers: ``rk4`` (fixed step, torchdiffeq's 3/8-rule RK4; a hand-unrolled copy of it is the fast
path, numerically the same, and in place without autograd for inference), ``dopri5`` (adaptive, ``rtol``/``atol``), ``adjoint`` for
O(1)-memory gradients. ``torchdiffeq.odeint`` stays the reference; tests check the fast path
against it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

Method = Literal["rk4", "dopri5", "euler", "midpoint"]


def nmode2_rhs(y: Tensor, u: Tensor) -> Tensor:
    """The vector field ``-y + sin²(y + cos²(y + u))``; element-wise, any shape."""
    return -y + torch.sin(y + torch.cos(y + u).square()).square()


class NMODE2Func(nn.Module):
    """The ODE function ``f(t, y)`` for a fixed input ``u`` (same shape as ``y``)."""

    def __init__(self, u: Tensor) -> None:
        super().__init__()
        self.u = u

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        """t: scalar; y: [...] like u -> dy/dt [...]."""
        return nmode2_rhs(y, self.u)


class NMODE2AugmentedFunc(nn.Module):
    """``f(t, (y, u)) = (nmode2_rhs(y, u), 0)``: carries ``u`` in the state so the adjoint
    method returns its gradient (the adjoint only differentiates the state and parameters)."""

    def forward(self, t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        y, u = state
        return nmode2_rhs(y, u), torch.zeros_like(u)


@dataclass(frozen=True)
class ODESolver:
    """How to integrate over t in [0, 1]. ``fast`` uses the hand-unrolled RK4 (rk4 only)."""

    method: Method = "rk4"
    steps: int = 4
    rtol: float = 1e-3
    atol: float = 1e-4
    adjoint: bool = False
    fast: bool = True

    def __post_init__(self) -> None:
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.method not in ("rk4", "dopri5", "euler", "midpoint"):
            raise ValueError(f"method: unknown ODE solver {self.method!r}")


def rk4_unrolled(u: Tensor, steps: int) -> Tensor:
    """y(1) from y(0) = 0 with ``steps`` steps of torchdiffeq's RK4 (3/8 rule), unrolled.

    u: [...] -> y(1): [...]. Same arithmetic as ``odeint(method="rk4")`` on a uniform grid.
    """
    dt = 1.0 / steps
    y = torch.zeros_like(u)
    for _ in range(steps):
        k1 = nmode2_rhs(y, u)
        k2 = nmode2_rhs(y + k1 * (dt / 3.0), u)
        k3 = nmode2_rhs(y + (k2 - k1 / 3.0) * dt, u)
        k4 = nmode2_rhs(y + (k1 - k2 + k3) * dt, u)
        y = y + (k1 + 3.0 * (k2 + k3) + k4) * (dt * 0.125)
    return y


def _rhs_into(y: Tensor, u: Tensor, out: Tensor) -> Tensor:
    """``nmode2_rhs(y, u)`` written into ``out`` without temporaries."""
    torch.add(y, u, out=out)
    return out.cos_().square_().add_(y).sin_().square_().sub_(y)


@torch.no_grad()
def rk4_inplace(u: Tensor, steps: int) -> Tensor:
    """``rk4_unrolled`` for inference: the same arithmetic in six preallocated buffers.

    Large element-wise temporaries dominate the unrolled version's cost on CPU (each one a
    fresh allocation and a cold pass over memory); this one is 2-3x faster and has no graph.
    """
    dt = 1.0 / steps
    y = torch.zeros_like(u)
    k1, k2, k3, k4, tmp = (torch.empty_like(u) for _ in range(5))
    for _ in range(steps):
        _rhs_into(y, u, k1)
        _rhs_into(torch.add(y, k1, alpha=dt / 3.0, out=tmp), u, k2)
        _rhs_into(torch.add(y, k2, alpha=dt, out=tmp).add_(k1, alpha=-dt / 3.0), u, k3)
        _rhs_into(torch.add(y, k1, alpha=dt, out=tmp).add_(k2, alpha=-dt).add_(k3, alpha=dt), u, k4)
        y.add_(k2.add_(k3).mul_(3.0).add_(k1).add_(k4), alpha=dt * 0.125)
    return y


def solve_nmode2(u: Tensor, solver: ODESolver) -> Tensor:
    """y(1) of the nmODE² with input ``u`` (any shape) from y(0) = 0."""
    if solver.method == "rk4" and solver.fast and not solver.adjoint:
        if torch.is_grad_enabled() and u.requires_grad:
            return rk4_unrolled(u, solver.steps)
        return rk4_inplace(u, solver.steps)
    from torchdiffeq import odeint, odeint_adjoint

    t = torch.tensor([0.0, 1.0], dtype=u.dtype, device=u.device)
    options: dict[str, object] = {}
    if solver.method != "dopri5":
        frac = torch.linspace(0.0, 1.0, solver.steps + 1, dtype=u.dtype, device=u.device)
        # a uniform grid between the given ends (the adjoint integrates back from 1 to 0)
        options["grid_constructor"] = lambda _f, _y0, tt: tt[0] + (tt[-1] - tt[0]) * frac
    kwargs = dict(method=solver.method, rtol=solver.rtol, atol=solver.atol, options=options)
    if solver.adjoint:
        y0 = (torch.zeros_like(u), u)
        ys, _ = odeint_adjoint(NMODE2AugmentedFunc(), y0, t, adjoint_params=(), **kwargs)
        return ys[-1]
    return odeint(NMODE2Func(u), torch.zeros_like(u), t, **kwargs)[-1]


def _nhwc(u: Tensor) -> bool:
    return u.dim() == 4 and not u.is_contiguous() and u.is_contiguous(memory_format=torch.channels_last)


def solve_many(us: Sequence[Tensor], solver: ODESolver) -> list[Tensor]:
    """Solve several inputs (any shapes, one dtype/device) as one flattened tensor.

    Each input is flattened in its memory order (channels-last maps stay channels-last).
    """
    flat = torch.cat([(u.permute(0, 2, 3, 1) if _nhwc(u) else u).reshape(-1) for u in us])
    ys = solve_nmode2(flat, solver).split([u.numel() for u in us])
    out = []
    for y, u in zip(ys, us):
        if _nhwc(u):
            b, c, h, w = u.shape
            out.append(y.view(b, h, w, c).permute(0, 3, 1, 2))
        else:
            out.append(y.view_as(u))
    return out


def _proj(channels: int) -> nn.Conv2d:
    conv = nn.Conv2d(channels, channels, kernel_size=1)
    nn.init.normal_(conv.weight, std=0.01)
    assert conv.bias is not None
    nn.init.zeros_(conv.bias)
    return conv


class NMODE2Block(nn.Module):
    """nmODE² over a list of feature maps (FPN levels or backbone stages), one solve.

    ``in_channels[i]`` is the channel count of input i; each input gets its own 1x1 conv
    unless ``shared`` (then all inputs must have the same channels).
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        solver: ODESolver = ODESolver(),
        residual: bool = True,
        shared: bool = False,
    ) -> None:
        super().__init__()
        if shared and len(set(in_channels)) != 1:
            raise ValueError(f"in_channels: shared needs equal channels, got {list(in_channels)}")
        n = 1 if shared else len(in_channels)
        self.proj = nn.ModuleList(_proj(c) for c in list(in_channels)[:n])
        self.solver = solver
        self.residual = residual

    def forward(self, xs: Sequence[Tensor]) -> list[Tensor]:
        """xs: list of [B, C_i, H_i, W_i] -> list of the same shapes."""
        us = [self.proj[min(i, len(self.proj) - 1)](x) for i, x in enumerate(xs)]
        ys = solve_many(us, self.solver)
        return [x + y for x, y in zip(xs, ys)] if self.residual else ys


class NMODE2Refiner(nn.Module):
    """The GFL head hook: nmODE² on the classification and regression towers' outputs.

    One 1x1 conv per branch, shared across FPN levels like the head's convs; all levels and
    both branches are solved together in one call.
    """

    def __init__(self, channels: int, solver: ODESolver = ODESolver(), residual: bool = True):
        super().__init__()
        self.cls_proj = _proj(channels)
        self.reg_proj = _proj(channels)
        self.solver = solver
        self.residual = residual

    def forward(self, cls_feats: Sequence[Tensor], reg_feats: Sequence[Tensor]) -> tuple[list[Tensor], list[Tensor]]:
        """cls_feats, reg_feats: per level [B, C, H_l, W_l] -> the same shapes, refined."""
        us = [self.cls_proj(x) for x in cls_feats] + [self.reg_proj(x) for x in reg_feats]
        ys = solve_many(us, self.solver)
        xs = list(cls_feats) + list(reg_feats)
        out = [x + y for x, y in zip(xs, ys)] if self.residual else ys
        n = len(cls_feats)
        return out[:n], out[n:]
