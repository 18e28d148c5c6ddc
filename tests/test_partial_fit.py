"""Fitting from partial and irregular samples, against a per-signal autograd loop on the observed points only."""

from __future__ import annotations

import pytest
import torch

from mednf.engine import field as nf
from mednf.engine.config import FieldConfig, FitConfig
from mednf.engine.context import random_context
from mednf.engine.fit import fit_latents, fit_points
from mednf.errors import ConfigError

CFG = FieldConfig(in_dims=2, out_dims=3, num_layers=4, hidden_dim=16, latent_dim=6, omega_first=10, omega_last=30)
SPATIAL = (7, 6)


def _params():
    return nf.init_params(CFG, generator=torch.Generator().manual_seed(0))


def _signals(count=5):
    return torch.rand(count, 3, *SPATIAL, generator=torch.Generator().manual_seed(1))


def _mask(count=5, keep=0.4):
    mask = torch.rand(count, *SPATIAL, generator=torch.Generator().manual_seed(2)) < keep
    mask[:, 0, 0] = True  # every signal observes something
    return mask


def _reference(params, coords, targets, fit: FitConfig, signal_id: int, seed: int = 0) -> torch.Tensor:
    """Plain autograd SGD for one signal on its own points ``coords [m, C]``, ``targets [m, D]``; with
    rescaling, each step's gradient is scaled by the gradient norm on a γ-subset of those m points."""
    phi = torch.zeros(1, CFG.latent_dim, dtype=targets.dtype, requires_grad=True)
    for step in range(fit.steps):
        loss = (nf.forward(params, phi, coords, CFG)[0] - targets).pow(2).mean()
        (grad,) = torch.autograd.grad(loss, phi)
        if fit.grad_rescale:
            index = random_context(torch.tensor([signal_id]), len(coords), fit.rescale_ratio, seed=seed, step=step)[0]
            sub_loss = (nf.forward(params, phi, coords[index], CFG)[0] - targets[index]).pow(2).mean()
            (sub_grad,) = torch.autograd.grad(sub_loss, phi)
            grad = grad * sub_grad.norm() / (grad.norm() + 1e-16)
        phi = (phi - fit.lr * grad).detach().requires_grad_(True)
    return phi[0].detach()


def _observed_psnr(params, phi, coords, targets) -> float:
    recon = nf.forward(params, phi[None], coords, CFG)[0].clamp(0, 1)
    return float(-10 * torch.log10((recon - targets).pow(2).mean()))


@pytest.mark.parametrize("rescale", [False, True])
def test_masked_fit_equals_per_signal_reference_on_observed_pixels(rescale):
    params, signals, mask = _params(), _signals(), _mask()
    signals[~mask[:, None].expand_as(signals)] = float("nan")  # unobserved pixels are never read
    fit = FitConfig(steps=4, lr=5e-2, grad_rescale=rescale, rescale_ratio=0.3, batch_size=5)
    res = fit_latents(params, signals, CFG, fit, mask=mask, first_index=10)  # float32
    params, signals = {k: v.double() for k, v in params.items()}, signals.double()  # the reference: float64
    grid = nf.coordinate_grid(SPATIAL, dtype=torch.float64)
    for s in range(5):
        seen = mask[s].flatten()
        targets = nf.to_points(signals[s:s + 1])[0][seen]
        expected = _reference(params, grid[seen], targets, fit, 10 + s)
        torch.testing.assert_close(res.latents[s].double(), expected, rtol=1e-4, atol=1e-6)
        assert res.psnr[s].item() == pytest.approx(_observed_psnr(params, expected, grid[seen], targets), abs=1e-3)
    assert torch.isnan(res.ssim).all() if res.ssim is not None else True


def test_full_mask_is_the_plain_fit_and_batch_size_does_not_matter():
    params, signals = _params(), _signals(7)
    fit = FitConfig(steps=5, lr=1e-2, grad_rescale=True, rescale_ratio=0.3)
    plain = fit_latents(params, signals, CFG, fit)
    full = fit_latents(params, signals, CFG, fit, mask=torch.ones(7, *SPATIAL, dtype=torch.bool))
    torch.testing.assert_close(full.latents, plain.latents, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(full.psnr, plain.psnr, rtol=1e-5, atol=1e-5)
    mask = _mask(7)
    by_size = [fit_latents(params, signals, CFG, FitConfig(**{**fit.__dict__, "batch_size": b}), mask=mask).latents
               for b in (1, 3, 7)]
    torch.testing.assert_close(by_size[1], by_size[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(by_size[2], by_size[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rescale", [False, True])
def test_irregular_points_with_padding_equal_the_reference(rescale):
    params = _params()
    gen = torch.Generator().manual_seed(3)
    counts = [9, 4, 13]
    M = max(counts)
    coords = torch.rand(3, M, 2, generator=gen, dtype=torch.float64) * 2 - 1
    values = torch.rand(3, M, 3, generator=gen, dtype=torch.float64)
    observed = torch.arange(M)[None, :] < torch.tensor(counts)[:, None]
    coords[~observed] = float("nan")  # padding may hold anything
    values[~observed] = 7.0
    fit = FitConfig(steps=3, lr=5e-2, grad_rescale=rescale, rescale_ratio=0.5)
    res = fit_points(params, coords, values, CFG, fit, observed=observed)  # float32
    params = {k: v.double() for k, v in params.items()}
    for s, m in enumerate(counts):
        expected = _reference(params, coords[s, :m], values[s, :m], fit, s)
        torch.testing.assert_close(res.latents[s].double(), expected, rtol=1e-4, atol=1e-6)
        assert res.psnr[s].item() == pytest.approx(_observed_psnr(params, expected, coords[s, :m], values[s, :m]),
                                                   abs=1e-3)


def test_points_on_the_grid_equal_the_grid_fit():
    params, signals = _params(), _signals(3)
    fit = FitConfig(steps=3, lr=1e-2)
    grid = nf.coordinate_grid(SPATIAL)
    on_grid = fit_points(params, grid, nf.to_points(signals), CFG, fit)
    torch.testing.assert_close(on_grid.latents, fit_latents(params, signals, CFG, fit).latents, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("mask, message", [
    (torch.ones(5, *SPATIAL, dtype=torch.int64), "expected bool"),
    (torch.ones(5, 3, 3, dtype=torch.bool), "mask shape"),
    (torch.zeros(5, *SPATIAL, dtype=torch.bool), "observes no point of 5 signal"),
])
def test_bad_masks_are_one_line_errors(mask, message):
    with pytest.raises(ConfigError, match=message):
        fit_latents(_params(), _signals(), CFG, FitConfig(steps=1), mask=mask)


def test_bad_points_are_one_line_errors():
    params, values = _params(), torch.rand(2, 4, 3)
    with pytest.raises(ConfigError, match=r"in \[-1, 1\]"):
        fit_points(params, torch.full((2, 4, 2), 1.5), values, CFG, FitConfig(steps=1))
    with pytest.raises(ConfigError, match="coords shape"):
        fit_points(params, torch.zeros(2, 4, 3), values, CFG, FitConfig(steps=1))
    with pytest.raises(ConfigError, match="values shape"):
        fit_points(params, torch.zeros(2, 4, 2), torch.rand(2, 4), CFG, FitConfig(steps=1))
    with pytest.raises(ConfigError, match="NaN"):
        fit_points(params, torch.zeros(2, 4, 2), torch.full((2, 4, 3), float("nan")), CFG, FitConfig(steps=1))
