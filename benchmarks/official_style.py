"""A same-machine stand-in for the official MedFuncta code's computation, for speed comparisons.

Written from the description of the official code (issue #2 / ../shared/DESIGN.md), not copied: a
module per layer (``nn.Linear`` for W, b and one ``nn.Linear(P, L)`` shift map per sine layer), each sine
layer ``sin(w0 · (linear(x) + shift(φ)))``, residuals after the first layer, linear output + 0.5; one random
coordinate subset per inner step shared by the whole batch (``torch.randperm``); inner loss
``mean-MSE · B``; second-order ``autograd.grad(create_graph=True)``; AdamW with gradient clipping 1.0.
Its test-time fit rescales each step by the subset/full gradient-norm ratio, first order.

Timing it beside mednf in one process removes this machine's load swings from the comparison.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class OfficialStyleModel(nn.Module):
    def __init__(self, in_dims: int, out_dims: int, hidden: int, layers: int, latent: int, w0: float,
                 increment: float) -> None:
        super().__init__()
        self.w0s = [w0 + k * increment for k in range(layers - 1)]
        self.linears = nn.ModuleList([nn.Linear(in_dims if k == 0 else hidden, hidden) for k in range(layers - 1)])
        self.shifts = nn.ModuleList([nn.Linear(latent, hidden) for _ in range(layers - 1)])
        self.last = nn.Linear(hidden, out_dims)

    def forward(self, coords: Tensor, latents: Tensor) -> Tensor:
        """coords [B, N, C], latents [B, P] → [B, N, D]."""
        x = coords
        for k, (linear, shift, w0) in enumerate(zip(self.linears, self.shifts, self.w0s)):
            y = torch.sin(w0 * (linear(x) + shift(latents).unsqueeze(1)))
            x = y if k == 0 else x + y
        return self.last(x) + 0.5


def _mse(model: OfficialStyleModel, grid: Tensor, targets: Tensor, latents: Tensor, index: Tensor | None) -> Tensor:
    """Per-signal MSE [B] on the subset ``index`` of the grid (None: all points)."""
    B = targets.shape[0]
    coords = grid if index is None else grid[index]
    values = targets if index is None else targets[:, index]
    out = model(coords[None].repeat(B, 1, 1), latents)
    return (out - values).pow(2).reshape(B, -1).mean(dim=1)


def meta_step(model: OfficialStyleModel, optimizer: torch.optim.Optimizer, grid: Tensor, targets: Tensor,
              latent_dim: int, inner_steps: int, inner_lr: float, ratio: float) -> float:
    """One meta-iteration; targets [B, N, D] on grid [N, C]."""
    B, N = targets.shape[:2]
    latents = torch.zeros(B, latent_dim, requires_grad=True)
    for _ in range(inner_steps):
        index = torch.randperm(N)[: int(ratio * N)]
        loss = _mse(model, grid, targets, latents, index)
        (grad,) = torch.autograd.grad(loss.mean() * B, latents, create_graph=True)
        latents = latents - inner_lr * grad
    outer = _mse(model, grid, targets, latents, None).mean()
    optimizer.zero_grad()
    outer.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    optimizer.step()
    return float(outer.detach())


def fit_batch(model: OfficialStyleModel, grid: Tensor, targets: Tensor, latent_dim: int, steps: int, lr: float,
              ratio: float) -> Tensor:
    """Test-time fit with the official gradient rescaling; returns latents [B, P]."""
    B, N = targets.shape[:2]
    latents = torch.zeros(B, latent_dim, requires_grad=True)
    for _ in range(steps):
        index = torch.randperm(N)[: int(ratio * N)]
        (sub,) = torch.autograd.grad(_mse(model, grid, targets, latents, index).mean() * B, latents)
        (full,) = torch.autograd.grad(_mse(model, grid, targets, latents, None).mean() * B, latents)
        scale = sub.norm(dim=1) / (full.norm(dim=1) + 1e-16)
        latents = (latents - lr * scale[:, None] * full).detach().requires_grad_(True)
    return latents.detach()
