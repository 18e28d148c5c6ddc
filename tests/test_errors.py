"""Bad hyper-parameters and bad inputs raise one clear line that names the value."""

from __future__ import annotations

import math

import pytest
import torch
from click.testing import CliRunner

from mednf.cli import main
from mednf.engine import field as nf
from mednf.engine.config import EngineConfig, FieldConfig, FitConfig, MetaConfig
from mednf.engine.fit import fit_latents
from mednf.engine.meta import MetaLearner
from mednf.engine.presets import get_preset
from mednf.errors import ConfigError


@pytest.mark.parametrize(
    "make, words",
    [
        (lambda: FieldConfig(num_layers=1), ["num_layers (K) = 1", "≥ 2"]),
        (lambda: FieldConfig(latent_dim=0), ["latent_dim (P) = 0", "> 0"]),
        (lambda: FieldConfig(latent_dim=-3), ["latent_dim (P) = -3"]),
        (lambda: FieldConfig(omega_first=math.nan), ["omega_first = nan", "finite"]),
        (lambda: FieldConfig(omega_last=math.inf), ["omega_last = inf"]),
        (lambda: FieldConfig(omega_first=10, omega_increment=math.nan), ["omega_increment = nan"]),
        (lambda: FieldConfig(in_dims=4), ["in_dims (C) = 4"]),
        (lambda: FieldConfig(shift_mode="middle"), ["shift_mode = 'middle'"]),
        (lambda: MetaConfig(context_ratio=0.0), ["context_ratio (γ) = 0.0", "(0, 1]"]),
        (lambda: MetaConfig(context_ratio=1.5), ["context_ratio (γ) = 1.5"]),
        (lambda: MetaConfig(inner_steps=0), ["inner_steps (G) = 0"]),
        (lambda: MetaConfig(meta_lr=-1.0), ["meta_lr (β) = -1.0"]),
        (lambda: FitConfig(rescale_ratio=2.0), ["rescale_ratio (γ) = 2.0"]),
        (lambda: FitConfig(steps=-1), ["steps (H) = -1"]),
        (lambda: EngineConfig.from_dict({"field": {"latnet_dim": 4}}), ["latnet_dim", "did you mean 'latent_dim'"]),
        (lambda: get_preset("tiny").replace(mta={"steps": 3}), ["'mta'", "did you mean 'meta'"]),
        (lambda: MetaConfig(inner_lr=True), ["inner_lr (α) = True", "a finite number > 0"]),  # a bool is no number
        (lambda: FitConfig(lr=True), ["lr (α) = True"]),
        (lambda: MetaConfig(context_ratio=True), ["context_ratio (γ) = True"]),
        (lambda: FieldConfig(in_dims=True), ["in_dims (C) = True"]),
        (lambda: MetaConfig(first_order=1), ["first_order = 1", "true or false"]),
        (lambda: FitConfig(grad_rescale="yes"), ["grad_rescale = 'yes'"]),
        (lambda: get_preset("2d-46"), ["'2d-46'", "did you mean '2d-64'"]),
    ],
)
def test_bad_hyper_parameters(make, words):
    with pytest.raises(ConfigError) as err:
        make()
    message = str(err.value)
    assert "\n" not in message
    for word in words:
        assert word in message


def test_wrong_coordinate_dimension():
    cfg = FieldConfig(in_dims=2, num_layers=3, hidden_dim=4, latent_dim=2)
    params = nf.init_params(cfg)
    with pytest.raises(ConfigError, match=r"coords shape = \(5, 3\).*\[N, 2\]"):
        nf.forward(params, torch.zeros(1, 2), torch.zeros(5, 3), cfg)


def test_nan_in_signal_is_refused_by_meta_and_fit():
    cfg = FieldConfig(in_dims=2, num_layers=3, hidden_dim=4, latent_dim=2)
    signals = torch.rand(2, 1, 4, 4)
    signals[1, 0, 2, 2] = float("nan")
    learner = MetaLearner(cfg, MetaConfig(inner_steps=1, batch_size=2))
    with pytest.raises(ConfigError, match="1 NaN/Inf"):
        learner.step(signals)
    with pytest.raises(ConfigError, match=r"signals\[0:2\] contain 1 NaN/Inf"):
        fit_latents(learner.detached_params(), signals, cfg, FitConfig(steps=1))
    with pytest.raises(ConfigError, match=r"signals shape = \(2, 3, 4, 4\)"):
        learner.step(torch.rand(2, 3, 4, 4))


def test_cli_bad_input_is_one_line_and_nonzero():
    runner = CliRunner()
    result = runner.invoke(main, ["demo", "--steps", "0"])
    assert result.exit_code != 0 and "Traceback" not in result.output
    assert "--steps" in result.output


def test_cli_demo_and_presets_run():
    runner = CliRunner()
    result = runner.invoke(main, ["demo", "--steps", "3", "--size", "8"])
    assert result.exit_code == 0, result.output
    assert "test PSNR after H=10" in result.output
    listed = runner.invoke(main, ["presets"])
    assert listed.exit_code == 0 and "2d-64-official" in listed.output and "ω 20→400" in listed.output
