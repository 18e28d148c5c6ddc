"""The compiled fit kernel (mednf.engine.fused_latent_grad) against the eager hand-written backward.

The eager kernel (mednf.engine.latent_grad) is itself tested against autograd (tests/test_latent_grad.py);
here the compiled one must give its results in float64 to rounding, for every case the layout has to get
right: points not a multiple of the block, batches not a multiple of the chunk, masks (point weights), the
rescaling subset and per-signal coordinates. Then the fit's choice of kernel, bf16, and the fallback when
Inductor has no C++ compiler (a real failure in a subprocess, not a stand-in).
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from mednf.engine import field as nf
from mednf.engine import fused_latent_grad as fused
from mednf.engine.config import FieldConfig, FitConfig
from mednf.engine.fit import fit_latents
from mednf.engine.latent_grad import latent_gradient
from mednf.engine.precision import cpu_bf16_units, resolve_precision
from mednf.errors import ConfigError

CFG = FieldConfig(in_dims=2, out_dims=2, num_layers=4, hidden_dim=32, latent_dim=16)


def _case(B: int, side: int, seed: int = 0, dtype: torch.dtype = torch.float64):
    g = torch.Generator().manual_seed(seed)
    params = {k: v.to(dtype) for k, v in nf.init_params(CFG, generator=g).items()}
    N = side * side
    targets = torch.rand(B, N, CFG.out_dims, generator=g, dtype=dtype)
    latents = torch.randn(B, CFG.latent_dim, generator=g, dtype=dtype) * 0.3
    subset = torch.zeros(B, N, dtype=dtype)
    subset[:, torch.randperm(N, generator=g)[:N // 4]] = 4.0
    return params, nf.coordinate_grid((side, side), dtype=dtype), targets, latents, subset, g


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("B, side", [(5, 10), (1, 4), (40, 8)])  # N = 100 (blocks of 32, padded), 16 (< 32), 64
def test_compiled_kernel_equals_the_eager_one_in_float64(B, side):
    params, grid, targets, latents, subset, g = _case(B, side)
    field = nf.prepare(params, CFG)
    N = side * side
    seen = torch.rand(B, N, generator=g) > 0.3
    seen[:, 0] = True
    point_weights = seen.to(torch.float64) * (N / seen.sum(1, keepdim=True))
    jittered = grid.expand(B, N, 2) + 0.01 * torch.randn(B, N, 2, generator=g, dtype=torch.float64)
    cases = {"plain": {}, "subset": {"subset_weights": subset},
             "mask + subset": {"point_weights": point_weights, "subset_weights": subset * seen}}
    for coords in (grid, jittered):
        for name, kwargs in cases.items():
            want = latent_gradient(field, latents, coords, targets, **kwargs)
            got = fused.fused_latent_gradient(field, latents, coords, targets, **kwargs)
            assert (got[1] is None) == (want[1] is None), name
            for a, b in zip(got, want):
                if b is not None:
                    assert _relative(a, b) < 1e-12, (name, coords.dim())
    assert fused._STATE["failed"] is None


def test_compiled_bf16_kernel_is_as_close_to_float64_as_the_eager_bf16_one():
    if cpu_bf16_units() is None:
        pytest.skip("this CPU has no bf16 matrix units (amx_bf16 / avx512_bf16): bf16 runs fp32 here")
    params, grid, targets, latents, subset, _ = _case(16, 16, seed=1, dtype=torch.float32)
    exact = latent_gradient(nf.prepare({k: v.double() for k, v in params.items()}, CFG), latents.double(),
                            grid.double(), targets.double(), subset_weights=subset.double())
    field = nf.prepare(params, CFG, resolve_precision("bf16"))
    eager = latent_gradient(field, latents, grid, targets, subset_weights=subset, chunk_rows=2048)
    compiled = fused.fused_latent_gradient(field, latents, grid, targets, subset_weights=subset)
    for c, e, x in zip(compiled, eager, exact):
        assert _relative(c.double(), x) <= 1.5 * _relative(e.double(), x) + 1e-6


def test_the_fit_runs_the_compiled_kernel_for_bf16_and_the_eager_one_for_fp32(monkeypatch):
    monkeypatch.delenv(fused.ENV, raising=False)
    cpu = torch.device("cpu")
    assert fused.fit_kernel(resolve_precision("fp32", cpu), cpu) == "eager"
    bf16 = resolve_precision("bf16", cpu, warn=False)
    assert fused.fit_kernel(bf16, cpu) == ("compiled" if bf16.bf16 else "eager")
    assert fused.fit_kernel(bf16, torch.device("meta")) == "eager"  # not the CPU: eager
    monkeypatch.setenv(fused.ENV, "compiled")
    assert fused.fit_kernel(resolve_precision("fp32", cpu), cpu) == "compiled"
    signals = torch.rand(6, 2, 12, 12, generator=torch.Generator().manual_seed(3))
    params = nf.init_params(CFG, generator=torch.Generator().manual_seed(4))
    fit = FitConfig(steps=4, grad_rescale=True)
    compiled = fit_latents(params, signals, CFG, fit)
    monkeypatch.setenv(fused.ENV, "eager")
    eager = fit_latents(params, signals, CFG, fit)
    assert (compiled.kernel, eager.kernel) == ("compiled", "eager")
    assert torch.allclose(compiled.latents, eager.latents, rtol=1e-4, atol=1e-6)
    assert torch.allclose(compiled.psnr, eager.psnr, atol=1e-3)
    assert fused.kernel_record("compiled") == {"kernel": "compiled", "compiler": "torch.compile (inductor)"}


@pytest.mark.parametrize("value", ["fast", "1"])
def test_an_unknown_kernel_setting_is_a_one_line_error(monkeypatch, value):
    monkeypatch.setenv(fused.ENV, value)
    with pytest.raises(ConfigError, match=f"MEDNF_FIT_KERNEL = '{value}' is invalid: expected one of auto, "):
        fused.requested_kernel()


def test_without_a_cxx_compiler_the_fit_warns_once_and_runs_eager(tmp_path):
    script = textwrap.dedent("""
        import warnings, torch
        from mednf.engine import field as nf
        from mednf.engine.config import FieldConfig, FitConfig
        from mednf.engine.fit import fit_latents
        cfg = FieldConfig(in_dims=2, out_dims=1, num_layers=3, hidden_dim=16, latent_dim=8)
        params = nf.init_params(cfg, generator=torch.Generator().manual_seed(0))
        signals = torch.rand(3, 1, 8, 8, generator=torch.Generator().manual_seed(1))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = fit_latents(params, signals, cfg, FitConfig(steps=2))
            again = fit_latents(params, signals, cfg, FitConfig(steps=2))
        print(first.kernel, again.kernel, sum(w.category.__name__ == "FitKernelWarning" for w in caught))
        print(str([w.message for w in caught if w.category.__name__ == "FitKernelWarning"][0]))
        import os
        os.environ["MEDNF_FIT_KERNEL"] = "eager"
        eager = fit_latents(params, signals, cfg, FitConfig(steps=2))
        print(bool(torch.equal(first.latents, eager.latents)))
    """)
    env = os.environ | {"MEDNF_FIT_KERNEL": "compiled", "CXX": str(tmp_path / "no-such-compiler"),
                        "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor")}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    kernels, message, equal = out.stdout.strip().splitlines()[-3:]
    assert kernels == "eager eager 1"  # one warning for two fits, and the results say what ran
    assert "the compiled fit kernel is not available" in message and "MEDNF_FIT_KERNEL=eager" in message
    assert equal == "True"  # the fallback is the eager kernel itself


def test_a_bad_kernel_setting_stops_a_build_before_meta_learning(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mednf.cli import main

    monkeypatch.setenv(fused.ENV, "fast")
    result = CliRunner().invoke(main, ["build", "phantomnf", "--steps", "2", "--out", str(tmp_path / "P")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: MEDNF_FIT_KERNEL = 'fast' is invalid")
    assert not (tmp_path / "P" / "manifest.json").exists() and "meta-training" not in result.output
