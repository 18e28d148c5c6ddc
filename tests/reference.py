"""Slow, obviously-correct references the engine is tested against.

``OfficialStyleSIREN`` is written from the description of the official MedFuncta code: one
``nn.Linear`` per layer, one ``nn.Linear(P, L)`` shift map per sine layer, each sine layer computing
``sin(ω_k · (W x + b + shift))``, residual connections after the first layer, an unmodulated linear
output layer and ``+ 0.5``. It evaluates one signal at a time. The per-signal meta-gradient below builds
a separate graph per signal and sums the gradients, the way one would write Algorithm 1 by hand.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mednf.engine.config import FieldConfig


class OfficialStyleSIREN(nn.Module):
    def __init__(self, cfg: FieldConfig) -> None:
        super().__init__()
        L = cfg.hidden_dim
        self.omegas = list(cfg.omegas)
        self.linears = nn.ModuleList(
            [nn.Linear(cfg.in_dims if k == 0 else L, L) for k in range(cfg.num_sine_layers)]
        )
        self.shifts = nn.ModuleList([nn.Linear(cfg.latent_dim, L) for _ in range(cfg.num_sine_layers)])
        self.last = nn.Linear(L, cfg.out_dims)

    def forward(self, coords: Tensor, latent: Tensor) -> Tensor:
        """One signal: coords ``[N, C]``, latent ``[P]`` → values ``[N, D]``."""
        x = coords
        for k, (linear, shift, omega) in enumerate(zip(self.linears, self.shifts, self.omegas)):
            y = torch.sin(omega * (linear(x) + shift(latent)))
            x = y if k == 0 else x + y
        return self.last(x) + 0.5

    @classmethod
    def from_params(cls, params: dict[str, Tensor], cfg: FieldConfig) -> OfficialStyleSIREN:
        """Copy mednf θ (shift_mode 'inside') into the per-layer module."""
        model = cls(cfg).to(params["last.weight"].dtype)
        L = cfg.hidden_dim
        with torch.no_grad():
            for k in range(cfg.num_sine_layers):
                model.linears[k].weight.copy_(params[f"layers.{k}.weight"])
                model.linears[k].bias.copy_(params[f"layers.{k}.bias"])
                model.shifts[k].weight.copy_(params["shift.weight"][k * L:(k + 1) * L])
                model.shifts[k].bias.copy_(params["shift.bias"][k * L:(k + 1) * L])
            model.last.weight.copy_(params["last.weight"])
            model.last.bias.copy_(params["last.bias"])
        return model

    def grads_as_params(self, cfg: FieldConfig) -> dict[str, Tensor]:
        """The module's .grad fields in mednf's θ naming."""
        out = {}
        for k in range(cfg.num_sine_layers):
            out[f"layers.{k}.weight"] = self.linears[k].weight.grad
            out[f"layers.{k}.bias"] = self.linears[k].bias.grad
        out["shift.weight"] = torch.cat([s.weight.grad for s in self.shifts])
        out["shift.bias"] = torch.cat([s.bias.grad for s in self.shifts])
        out["last.weight"] = self.last.weight.grad
        out["last.bias"] = self.last.bias.grad
        return out


def per_signal_meta_gradient(
    model: OfficialStyleSIREN,
    coords: Tensor,
    targets: Tensor,
    contexts: list[Tensor | None],
    *,
    inner_lr: float,
    latent_dim: int,
    first_order: bool = False,
) -> Tensor:
    """Accumulate the meta-gradient of mean-over-signals full-context MSE into ``model``'s .grad.

    Each signal gets its own φ = 0, its own inner loop on its own context rows, its own graph.
    coords ``[N, C]``, targets ``[B, N, D]``, contexts: per inner step ``[B, n]`` indices or None.
    Returns the meta-loss (detached).
    """
    model.zero_grad()
    B = targets.shape[0]
    total = torch.zeros((), dtype=targets.dtype)
    for b in range(B):
        phi = torch.zeros(latent_dim, dtype=targets.dtype, requires_grad=True)
        for index in contexts:
            rows = slice(None) if index is None else index[b]
            loss = ((model(coords[rows], phi) - targets[b][rows]) ** 2).mean()
            (grad,) = torch.autograd.grad(loss, phi, create_graph=not first_order)
            phi = phi - inner_lr * grad
        outer = ((model(coords, phi) - targets[b]) ** 2).mean() / B
        outer.backward()
        total = total + outer.detach()
    return total
