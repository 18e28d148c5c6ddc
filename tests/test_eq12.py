"""Paper Eq. 12: a SIREN layer with ω_n trained at lr τ_n behaves like one with ω_m at τ_m iff
τ_n / τ_m = (ω_m / ω_n)², when both start from the same draw (weights U(·)/ω as in Eq. 2)."""

from __future__ import annotations

import torch


def _one_sgd_step(omega: float, lr: float, draw: dict, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    w = (draw["w"] / omega).clone().requires_grad_(True)
    b = (draw["b"] / omega).clone().requires_grad_(True)
    loss = (torch.sin(omega * (x @ w.T + b)) - y).pow(2).mean()
    gw, gb = torch.autograd.grad(loss, (w, b))
    with torch.no_grad():
        return torch.sin(omega * (x @ (w - lr * gw).T + (b - lr * gb)))


def test_eq12_learning_rate_equivalence():
    gen = torch.Generator().manual_seed(0)
    n = 16
    draw = {"w": torch.empty(8, n, dtype=torch.float64).uniform_(-(6 / n) ** 0.5, (6 / n) ** 0.5, generator=gen),
            "b": torch.empty(8, dtype=torch.float64).uniform_(-0.5, 0.5, generator=gen)}
    x = torch.randn(32, n, generator=gen, dtype=torch.float64)
    y = torch.rand(32, 8, generator=gen, dtype=torch.float64)
    omega_m, omega_n, tau_m = 30.0, 90.0, 1e-3
    before_m = torch.sin(omega_m * (x @ (draw["w"] / omega_m).T + draw["b"] / omega_m))
    before_n = torch.sin(omega_n * (x @ (draw["w"] / omega_n).T + draw["b"] / omega_n))
    torch.testing.assert_close(before_m, before_n)  # same function before training
    out_m = _one_sgd_step(omega_m, tau_m, draw, x, y)
    out_n = _one_sgd_step(omega_n, tau_m * (omega_m / omega_n) ** 2, draw, x, y)
    torch.testing.assert_close(out_m, out_n, rtol=1e-10, atol=1e-10)
    same_lr = _one_sgd_step(omega_n, tau_m, draw, x, y)
    gap = (same_lr - out_m).abs().max().item()
    print(f"Eq. 12: max output gap with equal learning rates {gap:.3e}, with τ scaled by (ω_m/ω_n)² 0")
    assert gap > 1e-2
    assert (out_m - before_m).abs().max() > 1e-3  # the step did change the layer
