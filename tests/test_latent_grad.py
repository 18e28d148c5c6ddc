"""The hand-written chunked ∇_φ (fit) against autograd, including the subset gradient for rescaling."""

from __future__ import annotations

import pytest
import torch

from mednf.engine import field as nf
from mednf.engine.config import FieldConfig
from mednf.engine.context import gather_context, random_context
from mednf.engine.latent_grad import latent_gradient
from mednf.engine.metrics import signal_mse

SPATIAL = {1: (40,), 2: (7, 6), 3: (4, 3, 5)}


@pytest.mark.parametrize("C,D", [(1, 1), (2, 1), (2, 3), (3, 1), (3, 3)])
@pytest.mark.parametrize("mode", ["inside", "outside"])
@pytest.mark.parametrize("chunk_rows", [None, 7, 64])
def test_latent_gradient_equals_autograd(C, D, mode, chunk_rows):
    cfg = FieldConfig(in_dims=C, out_dims=D, num_layers=5, hidden_dim=12, latent_dim=9, omega_first=10,
                      omega_last=40, shift_mode=mode)
    gen = torch.Generator().manual_seed(C + 10 * D)
    params = nf.init_params(cfg, generator=gen, dtype=torch.float64)
    coords = nf.coordinate_grid(SPATIAL[C], dtype=torch.float64)
    B, N = 3, coords.shape[0]
    targets = torch.rand(B, N, D, generator=gen, dtype=torch.float64)
    latents = torch.randn(B, 9, generator=gen, dtype=torch.float64) * 0.1
    index = random_context(torch.arange(B), N, 0.3, seed=1, step=0)
    weights = torch.zeros(B, N, dtype=torch.float64).scatter_(1, index, N / index.shape[1])
    field = nf.prepare(params, cfg)
    grad, sub_grad, mse = latent_gradient(field, latents, coords, targets, chunk_rows=chunk_rows,
                                          subset_weights=weights)

    phi = latents.clone().requires_grad_(True)
    ref_mse = signal_mse(nf.forward(params, phi, coords, cfg), targets)
    (ref_grad,) = torch.autograd.grad(ref_mse.sum(), phi)
    sub_coords, sub_targets = gather_context(coords, targets, index)
    (ref_sub,) = torch.autograd.grad(signal_mse(nf.forward(params, phi, sub_coords, cfg), sub_targets).sum(), phi)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(sub_grad, ref_sub, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(mse, ref_mse.detach(), rtol=1e-12, atol=1e-14)
    plain, none, _ = latent_gradient(field, latents, coords, targets, chunk_rows=chunk_rows)
    assert none is None
    torch.testing.assert_close(plain, ref_grad, rtol=1e-10, atol=1e-12)
