"""Precision as a setting (field.precision = fp32 | tf32 | bf16): runs, accuracy, record, errors, fallback.

Tolerance of the bf16-vs-fp32 comparisons: bfloat16 keeps 8 significant bits, so one rounding is off by at
most u = 2⁻⁹ ≈ 0.2 % (relative). A hidden product sees three roundings (both operands and the result; the
accumulation is fp32), so a few u per layer; the layers' errors do not add up coherently. Measured on this
tiny config over 6 seeds: 1.5–3.1 u for the output, the meta-gradient, ∇_φ and the fitted latents, and
≤ 0.002 dB of PSNR. The bound is 8 u (≈ 1.6 %) and 0.02 dB; bf16 must also differ from fp32 by more than
0.1 u, so a path that silently ran fp32 would fail.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch
from click.testing import CliRunner
from conftest import TINY, report

from mednf.engine import field as nf
from mednf.engine import precision as prec
from mednf.engine.config import EngineConfig, FieldConfig, FitConfig, MetaConfig
from mednf.engine.execution import Execution
from mednf.engine.fit import fit_latents
from mednf.engine.latent_grad import latent_gradient
from mednf.engine.meta import MetaLearner, meta_objective, sample_contexts
from mednf.errors import ConfigError

U = 2.0**-9  # unit roundoff of bfloat16
SPATIAL = (8, 8)


def _cfg(precision: str = "fp32", **changes) -> FieldConfig:
    return FieldConfig(in_dims=2, num_layers=4, hidden_dim=32, latent_dim=16, omega_first=10.0,
                       omega_increment=5.0, precision=precision, **changes)


def _data(seed: int = 0, B: int = 3):
    gen = torch.Generator().manual_seed(seed)
    params = nf.init_params(_cfg(), generator=gen)
    coords = nf.coordinate_grid(SPATIAL)
    targets = torch.rand(B, coords.shape[0], 1, generator=gen)
    latents = torch.randn(B, 16, generator=gen) * 0.5
    return params, coords, targets, latents


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_every_precision_meta_learns_and_fits_finite(precision):
    cfg = _cfg(precision)
    meta = MetaConfig(inner_steps=2, context_ratio=0.5, meta_lr=1e-3, batch_size=4, steps=3)
    signals = torch.rand(4, 1, *SPATIAL, generator=torch.Generator().manual_seed(1))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", prec.PrecisionWarning)  # tf32 on the CPU says it runs fp32
        learner = MetaLearner(cfg, meta, seed=0)
        stats = [learner.step(signals) for _ in range(3)]
        fitted = fit_latents(learner.detached_params(), signals, cfg, FitConfig(steps=3, grad_rescale=True))
    assert all(torch.isfinite(torch.tensor([s["loss"], s["psnr"], s["grad_norm"]])).all() for s in stats)
    assert all(torch.isfinite(p).all() for p in learner.params.values())
    assert torch.isfinite(fitted.latents).all() and torch.isfinite(fitted.psnr).all()
    assert fitted.latents.dtype == torch.float32  # the latents stay fp32 in every precision


@pytest.mark.parametrize("precision", ["fp32", "tf32", "bf16"])
def test_second_order_meta_gradient_in_every_precision(precision):
    params, coords, targets, _ = _data()
    meta = MetaConfig(inner_steps=2, context_ratio=0.5)
    contexts = sample_contexts(meta, 3, coords.shape[0], seed=0, iteration=0, device=torch.device("cpu"))
    grads = {}
    for order, first in (("second", False), ("first", True)):
        theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        out = meta_objective(theta, targets, coords, _cfg(precision), dataclasses.replace(meta, first_order=first),
                             contexts, precision=prec.resolve_precision(precision, warn=False))
        grads[order] = torch.cat([g.flatten() for g in torch.autograd.grad(out.loss, list(theta.values()))])
    assert torch.isfinite(grads["second"]).all()
    assert _rel(grads["first"], grads["second"]) > 1e-3  # the double backward's terms are there


def test_bf16_is_close_to_fp32_and_tf32_on_cpu_is_fp32():
    params, coords, targets, latents = _data()
    meta = MetaConfig(inner_steps=2, context_ratio=0.5)
    contexts = sample_contexts(meta, 3, coords.shape[0], seed=0, iteration=0, device=torch.device("cpu"))
    signals = nf.from_points(targets, SPATIAL)
    runs = {}
    for precision in ("fp32", "tf32", "bf16"):
        theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", prec.PrecisionWarning)
            used = prec.resolve_precision(precision)
            out = nf.forward_prepared(nf.prepare(theta, _cfg(), used), latents, coords).detach()
            loss = meta_objective(theta, targets, coords, _cfg(), meta, contexts, precision=used).loss
            meta_grad = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(theta.values()))])
            grad_phi = latent_gradient(nf.prepare(params, _cfg(), used), latents, coords, targets, chunk_rows=40)[0]
            fitted = fit_latents(params, signals, _cfg(precision), FitConfig(steps=5, grad_rescale=True))
        runs[precision] = used, out, meta_grad, grad_phi, fitted
    ref, bf = runs["fp32"], runs["bf16"]
    for name, i in (("tf32", 1), ("tf32", 2), ("tf32", 3)):
        assert torch.equal(runs[name][i], ref[i])  # tf32 on a CPU runs the fp32 code
    assert torch.equal(runs["tf32"][4].latents, ref[4].latents)
    assert runs["tf32"][0].effective == "fp32"
    if bf[0].effective != "bf16":
        pytest.skip(f"this machine runs bf16 as fp32 ({bf[0].detail})")
    errors = {
        "output": float((bf[1] - ref[1]).norm() / (ref[1] - ref[1].mean()).norm()),
        "meta-gradient": _rel(bf[2], ref[2]),
        "∇φ (fit)": _rel(bf[3], ref[3]),
        "fitted latents": _rel(bf[4].latents, ref[4].latents),
    }
    psnr_gap = float((bf[4].psnr - ref[4].psnr).abs().max())
    report("bf16 vs fp32 (tiny config), relative error in units of u=2^-9: "
           + ", ".join(f"{k} {v / U:.2f}u" for k, v in errors.items()) + f"; max |ΔPSNR| {psnr_gap:.4f} dB")
    for name, err in errors.items():
        assert 0.1 * U < err <= 8 * U, name
    assert psnr_gap <= 0.02


def test_hand_written_latent_gradient_matches_autograd_in_bf16():
    """The fit's backward and autograd's agree in bf16 too, with each measured part also in bf16."""
    params, coords, targets, latents = _data(seed=2)
    if not prec.resolve_precision("bf16", warn=False).bf16:
        pytest.skip("no bf16 hardware on this machine")
    for parts in ({}, {"first_layer_bf16": True}, {"shift_bf16": True}, {"sine_argument_bf16": True}):
        used = prec.bf16_parts(prec.resolve_precision("bf16"), **parts)
        assert all(getattr(used, k) for k in parts)
        field = nf.prepare(params, _cfg(), used)
        assert field.lowp_weights is not None and field.lowp_weights[1].dtype == torch.bfloat16
        grad = latent_gradient(field, latents, coords, targets, chunk_rows=50)[0]
        phi = latents.clone().requires_grad_(True)
        mse = (nf.forward_prepared(field, phi, coords) - targets).pow(2).mean(dim=(1, 2))
        (ref,) = torch.autograd.grad(mse.sum(), phi)
        assert torch.isfinite(grad).all()
        assert _rel(grad, ref) <= 8 * U, parts
    with pytest.raises(TypeError, match="unknown bf16 parts"):
        prec.bf16_parts(prec.FP32, residual_bf16=True)


def test_without_a_resolved_precision_everything_is_fp32():
    params, coords, _, latents = _data()
    field = nf.prepare(params, _cfg("bf16"))  # the setting alone changes nothing: decoding is fp32
    assert field.lowp_weights is None and field.precision == prec.FP32
    assert torch.equal(nf.forward(params, latents, coords, _cfg("bf16")), nf.forward(params, latents, coords, _cfg()))


def test_precision_is_recorded_in_the_config_and_manifest(tmp_path):
    cfg = EngineConfig().replace(field={"precision": "bf16"})
    data = cfg.to_dict()
    assert data["field"]["precision"] == "bf16" and cfg.precision == "bf16"
    assert EngineConfig.from_dict(json.loads(json.dumps(data))) == cfg
    old = json.loads(json.dumps(EngineConfig().to_dict()))
    del old["field"]["precision"]  # a manifest written before the setting existed
    assert EngineConfig.from_dict(old).precision == "fp32"
    assert EngineConfig().precision == "fp32"  # the default

    from mednf.building.pipeline import BuildOptions, build

    options = {**TINY, "size": 16, "max_samples": 8}
    out = build("phantomnf", BuildOptions(out=tmp_path / "PhantomNF", **options,
                                          overrides={"field": {"precision": "bf16"}, "meta": {"steps": 4}}))
    manifest = json.loads((out / "mednf.json").read_text())
    assert manifest["engine"]["field"]["precision"] == "bf16"
    from mednf.format.manifest import Manifest

    assert Manifest.from_json(manifest, out / "mednf.json").engine_config.precision == "bf16"
    used = prec.resolve_precision("bf16", "cpu", warn=False)
    assert manifest["meta_training"]["precision"] == used.to_dict()  # what ran, beside what was asked


def test_a_fallback_is_one_warning_line_and_recorded(tmp_path):
    """tf32 on the CPU: the build runs fp32, says so once in build.log, and the manifest records it."""
    from mednf.building.pipeline import BuildOptions, build

    options = {**TINY, "size": 16, "max_samples": 8}
    with warnings.catch_warnings():
        warnings.simplefilter("error", prec.PrecisionWarning)  # no stray warning beside the log line
        out = build("phantomnf", BuildOptions(out=tmp_path / "PhantomNF", **options,
                                              overrides={"field": {"precision": "tf32"}, "meta": {"steps": 2}}))
    manifest = json.loads((out / "mednf.json").read_text())
    assert manifest["meta_training"]["precision"]["requested"] == "tf32"
    assert manifest["meta_training"]["precision"]["effective"] == "fp32"
    lines = [line for line in (out / "build.log").read_text().splitlines() if "warning: precision" in line]
    assert len(lines) == 1 and "tf32 is not available on cpu" in lines[0], lines


def test_resolved_precision_says_what_runs():
    used = prec.resolve_precision("bf16", "cpu", warn=False, support=lambda d: (True, "test units"))
    assert used.to_dict() == {"requested": "bf16", "effective": "bf16", "device": "cpu", "detail": "test units"}
    tf32 = prec.resolve_precision("tf32", "cpu", warn=False)
    assert (tf32.requested, tf32.effective) == ("tf32", "fp32") and "CUDA" in tf32.detail
    assert prec.resolve_precision("fp32").to_dict()["effective"] == "fp32"


@pytest.mark.parametrize("bad", ["fp16", "BF16", "float32", 32, None, ""])
def test_unknown_precision_is_a_one_line_error(bad):
    for make in (lambda: _cfg(bad), lambda: prec.resolve_precision(bad),
                 lambda: EngineConfig().replace(field={"precision": bad})):
        with pytest.raises(ConfigError) as err:
            make()
        message = str(err.value)
        assert "\n" not in message and "precision" in message and "'bf16'" in message
    assert "did you mean 'bf16'" in str(pytest.raises(ConfigError, _cfg, "bf17").value)


def test_cli_precision_option_is_checked_in_one_line(tmp_path):
    from mednf.cli import main

    result = CliRunner().invoke(main, ["build", "phantomnf", "--precision", "fp16", "--out", str(tmp_path / "x")])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == ["error: Invalid value for '--precision': 'fp16' is not one of 'fp32', 'tf32', 'bf16'; see "
                     "`mednf build --help`"]
    assert not (tmp_path / "x").exists()


def test_bf16_without_hardware_warns_once_and_runs_fp32(monkeypatch):
    monkeypatch.setattr(prec, "bf16_support", lambda device: (False, "pretend: no bf16 units"))
    meta = MetaConfig(inner_steps=2, context_ratio=0.5, meta_lr=1e-3, batch_size=4, steps=3)
    signals = torch.rand(4, 1, *SPATIAL, generator=torch.Generator().manual_seed(1))
    results = {}
    for precision in ("bf16", "fp32"):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            execution = Execution.resolve(precision, "cpu")
            learner = MetaLearner(_cfg(precision), meta, seed=0, execution=execution)
            for _ in range(3):
                learner.step(signals)
            fitted = fit_latents(learner.detached_params(), signals, _cfg(precision), FitConfig(steps=3),
                                 execution=execution)
            used = execution.precision
        ours = [w for w in caught if issubclass(w.category, prec.PrecisionWarning)]
        results[precision] = learner.detached_params(), fitted.latents, ours, used
    params, latents, caught, used = results["bf16"]
    assert len(caught) == 1  # resolved once for 3 meta-steps and a fit: one line
    assert "pretend: no bf16 units" in str(caught[0].message) and "running fp32" in str(caught[0].message)
    assert used.to_dict() == {"requested": "bf16", "effective": "fp32", "device": "cpu",
                              "detail": "pretend: no bf16 units"}
    assert results["fp32"][2] == []
    for k in params:
        assert torch.equal(params[k], results["fp32"][0][k])  # exactly the fp32 run
    assert torch.equal(latents, results["fp32"][1])


def test_cuda_capabilities_and_switches(monkeypatch):
    """The CUDA paths without a GPU: capability rules, and the switches set inside the context only."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (7, 5))
    assert prec.bf16_support(torch.device("cuda", 0))[0] is False
    old = prec.resolve_precision("tf32", "cuda:0", warn=False)
    assert old.effective == "fp32" and "7.5" in old.detail
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    assert prec.resolve_precision("bf16", "cuda:0", warn=False).effective == "bf16"
    matmul = torch.backends.cuda.matmul
    before = matmul.allow_tf32, matmul.allow_bf16_reduced_precision_reduction
    used = prec.resolve_precision("tf32", "cuda:0")
    with prec.matmul_switches(used):
        assert used.effective == "tf32" and matmul.allow_tf32 is True
    with prec.matmul_switches(prec.resolve_precision("bf16", "cuda:0")):
        assert matmul.allow_bf16_reduced_precision_reduction is False  # fp32 accumulation
    with prec.matmul_switches(prec.resolve_precision("fp32", "cuda:0")):
        assert matmul.allow_tf32 == before[0]  # fp32 leaves torch's switches as they are
    assert (matmul.allow_tf32, matmul.allow_bf16_reduced_precision_reduction) == before


def test_explicit_and_double_backward_meta_gradients_agree_in_bf16():
    """The hand-written second-order path (mednf.engine.inner_grad) rounds the same products to bf16 as
    autograd's double backward through the bf16 field: the two meta-gradients agree to bf16 rounding."""
    params, coords, targets, _ = _data(seed=3)
    meta = MetaConfig(inner_steps=3, context_ratio=0.5)
    contexts = sample_contexts(meta, 3, coords.shape[0], seed=0, iteration=0, device=torch.device("cpu"))
    used = prec.resolve_precision("bf16", warn=False)
    if used.effective != "bf16":
        pytest.skip(f"this machine runs bf16 as fp32 ({used.detail})")
    grads = {}
    for explicit in (True, False):
        theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        loss = meta_objective(theta, targets, coords, _cfg("bf16"), meta, contexts, explicit=explicit,
                              precision=used).loss
        grads[explicit] = torch.cat([g.flatten() for g in torch.autograd.grad(loss, list(theta.values()))])
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    exact = meta_objective(theta, targets, coords, _cfg(), meta, contexts).loss
    exact = torch.cat([g.flatten() for g in torch.autograd.grad(exact, list(theta.values()))])
    between, to_fp32 = _rel(grads[True], grads[False]), _rel(grads[True], exact)
    report(f"bf16 meta-gradient, explicit vs double backward: {between / U:.2f}u; explicit vs fp32: {to_fp32 / U:.2f}u")
    assert between <= 8 * U and to_fp32 <= 8 * U


@pytest.mark.parametrize("global_setting", ["medium", "high"])
def test_fp32_is_ieee_float32_whatever_the_caller_set(global_setting):
    """A caller's torch.set_float32_matmul_precision("medium") lets oneDNN run float32 products in bf16 on a CPU
    with bf16 units ("high": TF32 on CUDA). mednf's fp32 sets IEEE float32 for its own products, records it, and
    gives the caller's setting back; the fit is the one of the default setting."""
    params, _, _, _ = _data()
    signals = torch.rand(4, 1, *SPATIAL, generator=torch.Generator().manual_seed(3))
    fit = FitConfig(steps=3, lr=1e-2, grad_rescale=False)
    reference = fit_latents(params, signals, _cfg(), fit).latents
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(global_setting)
    try:
        with prec.matmul_switches(prec.FP32):
            assert torch.get_float32_matmul_precision() == "highest"
            assert torch.backends.mkldnn.matmul.fp32_precision == "ieee" and not torch.backends.cuda.matmul.allow_tf32
        assert torch.get_float32_matmul_precision() == global_setting  # given back
        latents = fit_latents(params, signals, _cfg(), fit).latents
    finally:
        torch.set_float32_matmul_precision(previous)
    assert torch.equal(latents, reference)
    assert prec.float32_products(prec.FP32) == "highest"
    tf32 = dataclasses.replace(prec.FP32, requested="tf32", effective="tf32", device="cuda")
    assert prec.float32_products(tf32) == "high"


def test_the_manifest_records_the_float32_products_of_the_run(tmp_path):
    from mednf.building.pipeline import BuildOptions, build

    out = build("phantomnf", BuildOptions(out=tmp_path / "P", **TINY))
    manifest = json.loads((out / "mednf.json").read_text())
    assert manifest["meta_training"]["float32_products"] == "highest"
