"""Batched latent fitting: every signal, batch-size independence, against a per-signal loop."""

from __future__ import annotations

import pytest
import torch

from mednf.engine import field as nf
from mednf.engine.config import FieldConfig, FitConfig
from mednf.engine.fit import auto_batch_size, fit_latents

CFG = FieldConfig(in_dims=2, out_dims=3, num_layers=4, hidden_dim=16, latent_dim=6, omega_first=10, omega_last=30)


def _params():
    return nf.init_params(CFG, generator=torch.Generator().manual_seed(0))


def _signals(count=7):
    return torch.rand(count, 3, 6, 5, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("rescale", [False, True])
def test_every_signal_fitted_and_independent_of_batch_size(rescale):
    params, signals = _params(), _signals(7)
    fit = FitConfig(steps=5, lr=1e-2, grad_rescale=rescale, rescale_ratio=0.3)
    results = {b: fit_latents(params, signals, CFG, FitConfig(**{**fit.__dict__, "batch_size": b})) for b in (1, 3, 7)}
    for res in results.values():
        assert res.latents.shape == (7, 6) and res.psnr.shape == (7,) and torch.isfinite(res.psnr).all()
    torch.testing.assert_close(results[3].latents, results[1].latents, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[7].latents, results[1].latents, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(results[3].psnr, results[7].psnr, rtol=1e-5, atol=1e-5)


def test_fit_equals_per_signal_sgd_loop():
    params, signals = _params(), _signals(3)
    fit = FitConfig(steps=4, lr=5e-2, batch_size=3)
    res = fit_latents(params, signals, CFG, fit)
    coords = nf.coordinate_grid((6, 5))
    for s in range(3):  # plain SGD on one signal at a time
        phi = torch.zeros(1, 6, requires_grad=True)
        target = nf.to_points(signals[s:s + 1])
        for _ in range(4):
            loss = (nf.forward(params, phi, coords, CFG) - target).pow(2).mean()
            (g,) = torch.autograd.grad(loss, phi)
            phi = (phi - 5e-2 * g).detach().requires_grad_(True)
        torch.testing.assert_close(res.latents[s], phi[0].detach(), rtol=1e-5, atol=1e-7)
        recon = nf.forward(params, phi.detach(), coords, CFG).clamp(0, 1)
        expected_psnr = -10 * torch.log10((recon - target).pow(2).mean())
        assert res.psnr[s].item() == pytest.approx(expected_psnr.item(), rel=1e-5)


def test_official_gradient_rescaling():
    params, signals = _params(), _signals(2)
    plain = fit_latents(params, signals, CFG, FitConfig(steps=1, lr=1e-2))
    scaled = fit_latents(params, signals, CFG, FitConfig(steps=1, lr=1e-2, grad_rescale=True, rescale_ratio=0.3))
    # one step from zero: the rescaled step is the plain step times a positive per-signal factor
    ratio = scaled.latents / plain.latents
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio), rtol=1e-4)
    assert (ratio[:, 0] > 0).all() and not torch.allclose(ratio[:, 0], torch.ones(2))


def test_zero_steps_returns_zero_latents_and_uint8_accepted():
    params = _params()
    images = (torch.rand(4, 3, 6, 5) * 255).to(torch.uint8)
    res = fit_latents(params, images, CFG, FitConfig(steps=0))
    assert torch.equal(res.latents, torch.zeros(4, 6))
    fl = fit_latents(params, images.float() / 255, CFG, FitConfig(steps=0))
    torch.testing.assert_close(res.psnr, fl.psnr)


def test_auto_batch_size_follows_the_budget():
    small = auto_batch_size(CFG, 4096, FitConfig(memory_budget_mb=1), torch.device("cpu"))
    large = auto_batch_size(CFG, 4096, FitConfig(memory_budget_mb=100), torch.device("cpu"))
    assert small >= 1 and large > small
    assert auto_batch_size(CFG, 4096, FitConfig(batch_size=5), torch.device("cpu")) == 5
