"""The modulated SIREN: forward against the official-style reference, shift modes, init, ω-schedules, grids."""

from __future__ import annotations

import math

import pytest
import torch
from reference import OfficialStyleSIREN

from mednf.engine import field as nf
from mednf.engine.config import FieldConfig


@pytest.mark.parametrize("C,D", [(1, 1), (2, 1), (2, 3), (3, 1), (3, 3)])
def test_forward_equals_official_style_reference(C, D):
    cfg = FieldConfig(in_dims=C, out_dims=D, num_layers=5, hidden_dim=12, latent_dim=7,
                      omega_first=10.0, omega_increment=5.0)
    gen = torch.Generator().manual_seed(C * 10 + D)
    params = nf.init_params(cfg, generator=gen, dtype=torch.float64)
    latents = torch.randn(3, 7, generator=gen, dtype=torch.float64)
    coords = torch.rand(3, 11, C, generator=gen, dtype=torch.float64) * 2 - 1  # per-signal coordinates
    out = nf.forward(params, latents, coords, cfg)
    model = OfficialStyleSIREN.from_params(params, cfg)
    ref = torch.stack([model(coords[b], latents[b]) for b in range(3)])
    assert out.shape == (3, 11, D)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    shared = nf.forward(params, latents, coords[0], cfg)  # [N, C] shared by the batch
    torch.testing.assert_close(shared[1], model(coords[0], latents[1]), rtol=1e-12, atol=1e-12)


def test_shift_modes_describe_the_same_functions():
    inside = FieldConfig(in_dims=2, num_layers=4, hidden_dim=8, latent_dim=5, omega_first=20, omega_last=60)
    outside = FieldConfig(in_dims=2, num_layers=4, hidden_dim=8, latent_dim=5, omega_first=20, omega_last=60,
                          shift_mode="outside")
    gen = torch.Generator().manual_seed(0)
    p_in = nf.init_params(inside, generator=gen, dtype=torch.float64)
    p_out = nf.convert_shift_mode(p_in, inside, "inside", "outside")
    latents = torch.randn(2, 5, generator=gen, dtype=torch.float64)
    coords = nf.coordinate_grid((5, 4), dtype=torch.float64)
    torch.testing.assert_close(nf.forward(p_in, latents, coords, inside), nf.forward(p_out, latents, coords, outside))
    back = nf.convert_shift_mode(p_out, inside, "outside", "inside")
    torch.testing.assert_close(back["shift.weight"], p_in["shift.weight"])
    # the paper's form written out by hand: sin(ω (W x + b) + M φ + c) for the first layer
    k0 = slice(0, 8)
    by_hand = torch.sin(20 * (coords @ p_out["layers.0.weight"].T + p_out["layers.0.bias"])
                        + latents[0] @ p_out["shift.weight"][k0].T + p_out["shift.bias"][k0])
    model = OfficialStyleSIREN.from_params(p_in, inside)
    official_first = torch.sin(20 * (model.linears[0](coords) + model.shifts[0](latents[0])))
    torch.testing.assert_close(by_hand, official_first)
    # same seed gives the same function in both modes
    gen2 = torch.Generator().manual_seed(0)
    torch.testing.assert_close(nf.init_params(outside, generator=gen2, dtype=torch.float64)["shift.bias"],
                               p_out["shift.bias"])


def test_init_follows_eq2():
    cfg = FieldConfig(in_dims=2, num_layers=5, hidden_dim=256, latent_dim=64, omega_first=10, omega_increment=5)
    params = nf.init_params(cfg, generator=torch.Generator().manual_seed(0))
    w0 = params["layers.0.weight"]
    assert w0.abs().max() <= 1 / 2 and w0.abs().max() > 0.45  # U(-1/n, 1/n), n = C = 2
    for k, omega in enumerate(cfg.omegas[1:], start=1):
        bound = math.sqrt(6 / 256) / omega
        w = params[f"layers.{k}.weight"]
        assert w.abs().max() <= bound and w.abs().max() > 0.99 * bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.02)  # uniform, not a narrower law
    shift = params["shift.weight"]
    assert shift.abs().max() <= 1 / 8 and shift.abs().max() > 0.12  # U(±1/√P), never zero
    assert params["last.weight"].abs().max() <= math.sqrt(6 / 256) / 30  # next ω of the schedule (10 + 4·5)


def test_omega_schedules():
    paper = FieldConfig(num_layers=15, omega_first=20, omega_last=400)
    assert len(paper.omegas) == 14 and paper.omegas[0] == 20 and paper.omegas[-1] == pytest.approx(400)
    steps = [b - a for a, b in zip(paper.omegas, paper.omegas[1:])]
    assert steps == pytest.approx([380 / 13] * 13)
    official = FieldConfig(num_layers=15, omega_first=10, omega_last=None, omega_increment=5)
    assert official.omegas == tuple(10 + 5 * k for k in range(14))
    constant = FieldConfig(num_layers=6, omega_first=30, omega_last=None)
    assert constant.omegas == (30,) * 5
    # the same schedule both ways
    as_end = FieldConfig(num_layers=15, omega_first=10, omega_last=75)
    assert as_end.omegas == pytest.approx(official.omegas)


def test_grids_any_resolution_and_round_trip():
    grid = nf.coordinate_grid((4, 3))
    assert grid.shape == (12, 2) and grid.min() == -1 and grid.max() == 1
    torch.testing.assert_close(grid[1], torch.tensor([-1.0, 0.0]))  # row-major 'ij'
    assert nf.coordinate_grid((7,)).shape == (7, 1)
    assert nf.coordinate_grid((2, 3, 4)).shape == (24, 3)
    images = torch.rand(2, 3, 5, 4)
    torch.testing.assert_close(nf.from_points(nf.to_points(images), (5, 4)), images)
    cfg = FieldConfig(in_dims=2, out_dims=3, num_layers=3, hidden_dim=8, latent_dim=4)
    params = nf.init_params(cfg)
    for side in (32, 64, 128):
        out = nf.decode(params, torch.randn(2, 4), cfg, (side, side))
        assert out.shape == (2, 3, side, side) and out.min() >= 0 and out.max() <= 1
