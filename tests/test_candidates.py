"""The faster-learning candidates of issue #24 as engine options, each checked against a plain reference.

- Meta-SGD (``field.learned_inner_lr``: θ's ``latent.lr`` [P] multiplies α per latent dimension) and a learned
  initial latent (``field.learned_init``: θ's ``latent.init`` [P]) start as the paper (1 and 0) and are
  learned through the inner loop: their meta-gradients from the hand-written inner gradient equal autograd's
  double backward; the fit uses them; a dataset stores them and its reader checks them.
- ``meta.omega_lr``: sine layer k's outer rate is β·ω_1/ω_k; ``meta.warmup_steps``: a linear warm-up.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
import zarr
from safetensors.torch import load_file

from mednf.building.pipeline import BuildOptions, build
from mednf.engine import field as nf
from mednf.engine.config import FieldConfig, FitConfig, MetaConfig
from mednf.engine.fit import fit_latents
from mednf.engine.meta import MetaLearner, accumulate_meta_gradient, lr_factor
from mednf.errors import ConfigError
from mednf.format.reader import verify_dataset
from mednf.sources.phantoms import make_phantoms
from mednf.tasks.encode import encode

FIELD = FieldConfig(num_layers=3, hidden_dim=16, latent_dim=8, omega_first=20.0, omega_last=60.0,
                    learned_inner_lr=True, learned_init=True)
META = MetaConfig(inner_steps=2, inner_lr=0.05, context_ratio=0.5, meta_lr=1e-3, batch_size=3, steps=10)


def _params(dtype: torch.dtype = torch.float64) -> dict[str, torch.Tensor]:
    params = nf.init_params(FIELD, generator=torch.Generator().manual_seed(0), dtype=dtype)
    g = torch.Generator().manual_seed(1)
    params["latent.lr"] = 1 + 0.3 * torch.rand(8, generator=g, dtype=dtype)  # away from the start, to test
    params["latent.init"] = 0.1 * torch.randn(8, generator=g, dtype=dtype)
    return {k: v.requires_grad_(True) for k, v in params.items()}


def _meta_gradient(explicit: bool) -> dict[str, torch.Tensor]:
    params = _params()
    targets = torch.rand(3, 36, 1, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    coords = nf.coordinate_grid((6, 6), dtype=torch.float64)
    accumulate_meta_gradient(params, targets, coords, FIELD, META, seed=0, iteration=0, explicit=explicit)
    return {k: v.grad for k, v in params.items()}


def test_the_learned_rates_and_start_get_autograd_s_meta_gradient():
    explicit, reference = _meta_gradient(True), _meta_gradient(False)
    assert explicit["latent.lr"].abs().sum() > 0 and explicit["latent.init"].abs().sum() > 0
    for name, value in reference.items():
        torch.testing.assert_close(explicit[name], value, rtol=1e-10, atol=1e-13, msg=name)


def test_they_start_as_the_paper_and_the_fit_uses_them():
    params = nf.init_params(FIELD, generator=torch.Generator().manual_seed(0))
    assert torch.equal(params["latent.lr"], torch.ones(8)) and torch.equal(params["latent.init"], torch.zeros(8))
    signals = torch.rand(4, 1, 6, 6, generator=torch.Generator().manual_seed(3))
    plain = {k: v for k, v in params.items() if not k.startswith("latent.")}
    paper = dataclasses.replace(FIELD, learned_inner_lr=False, learned_init=False)
    fit = FitConfig(steps=3, lr=0.05)
    same = fit_latents(params, signals, FIELD, fit).latents
    assert torch.equal(same, fit_latents(plain, signals, paper, fit).latents)
    params["latent.init"] = torch.linspace(-1, 1, 8)
    params["latent.lr"] = torch.tensor([0.0, 1.0] * 4)
    fitted = fit_latents(params, signals, FIELD, fit).latents
    assert torch.equal(fitted[:, 0::2], params["latent.init"][0::2].expand(4, -1))  # rate 0: never leaves φ₀
    assert not torch.equal(fitted[:, 1::2], params["latent.init"][1::2].expand(4, -1))
    unfitted = fit_latents(params, signals, FIELD, FitConfig(steps=0)).latents
    assert torch.equal(unfitted, params["latent.init"].expand(4, -1))


def test_omega_tied_rates_and_warm_up():
    meta = dataclasses.replace(META, omega_lr=True, warmup_steps=4, lr_schedule="constant")
    learner = MetaLearner(FIELD, meta, seed=0)
    groups = learner.optimizer.param_groups
    assert groups[0]["lr"] == pytest.approx(1e-3 / 4)  # β, warming up: 1/4 of it at the first iteration
    assert groups[1]["weight_decay"] == 0.0 and {id(p) for p in groups[1]["params"]} == {
        id(learner.params["latent.lr"]), id(learner.params["latent.init"])}
    for k, omega in enumerate((20.0, 60.0)):
        assert groups[2 + k]["lr"] == pytest.approx(1e-3 / 4 * 20.0 / omega)
    assert [lr_factor(meta, i) for i in (0, 1, 3, 7)] == [0.25, 0.5, 1.0, 1.0]
    scaled = MetaLearner(FIELD, dataclasses.replace(meta, latent_lr_scale=100.0), seed=0).optimizer.param_groups
    assert scaled[1]["lr"] == pytest.approx(1e-3 / 4 * 100) and scaled[0]["lr"] == pytest.approx(1e-3 / 4)
    with pytest.raises(ConfigError, match="warmup_steps = -1 is invalid"):
        dataclasses.replace(META, warmup_steps=-1)
    with pytest.raises(ConfigError, match="latent_lr_scale = 0.0 is invalid"):
        dataclasses.replace(META, latent_lr_scale=0.0)


def test_a_dataset_keeps_them_beside_theta_and_its_reader_checks_them(tmp_path):
    out = tmp_path / "learned"
    build("phantomnf", BuildOptions(out=out, preset="tiny", size=16, max_samples=8, progress=False,
                                    overrides={"field": {"learned_inner_lr": True, "learned_init": True},
                                               "meta": {"steps": 3}},
                                    build_overrides={"val_every": 3, "val_samples": 2}))
    theta = load_file(out / "model.safetensors")
    assert theta["latent.lr"].shape == (32,) and not torch.equal(theta["latent.lr"], torch.ones(32))
    manifest = verify_dataset(out)
    assert manifest.engine_config.field.learned_inner_lr and manifest.engine_config.field.learned_init
    # encoding test images again gives the stored latents: the fit starts at θ's φ₀ and steps at its rates
    images, _ = make_phantoms(manifest.to_json()["builder"]["splits"]["test"], 16, seed=2)
    stored = zarr.open_array(str(out / "latents.zarr" / "test"), mode="r")[:]
    again = encode(images[:8], out, progress=False)
    np.testing.assert_allclose(again.latents, stored, rtol=1e-5, atol=1e-6)
