"""The compiled path (mednf.engine.compiled) is used only after it agrees with the eager reference.

On the CPU, ``MEDNF_COMPILE=on`` compiles the same bodies a GPU build compiles (Inductor emits C++ here,
Triton there), so the self-check, its records and its fallbacks are exercised without a GPU. A mismatch and
a compiler failure are injected by wrapping the compiled body (the eager body itself is never touched), and
the run must then give the eager numbers exactly.
"""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

import mednf.engine.compiled as compiled_module
from mednf.building.pipeline import BuildOptions, build
from mednf.engine import fused_latent_grad, inner_grad
from mednf.engine.compiled import CompileWarning, requested
from mednf.engine.fit import fit_latents
from mednf.engine.meta import MetaLearner
from mednf.engine.presets import get_preset
from mednf.errors import ConfigError

CFG = get_preset("tiny")
META = dataclasses.replace(CFG.meta, batch_size=3)


def _signals(count: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.rand(count, 1, 12, 12, generator=torch.Generator().manual_seed(seed))


def _learn(steps: int = 2) -> MetaLearner:
    learner = MetaLearner(CFG.field, META, seed=0)
    for step in range(steps):
        learner.step(_signals(seed=step))
    return learner


def _theta_equal(a: MetaLearner, b: MetaLearner) -> bool:
    return all(torch.equal(a.params[k], b.params[k]) for k in a.params)


def test_the_setting_is_checked_and_off_means_no_check(monkeypatch):
    monkeypatch.setenv("MEDNF_COMPILE", "fast")
    with pytest.raises(ConfigError, match="MEDNF_COMPILE = 'fast' is invalid: expected one of auto, on, off"):
        requested()
    monkeypatch.setenv("MEDNF_COMPILE", "off")
    assert _learn(1).compile_report is None
    monkeypatch.delenv("MEDNF_COMPILE")
    assert _learn(1).compile_report is None  # auto: compiled on CUDA only


def _spoiled(kind: str):
    """A stand-in for ``compiled(fn, mode)`` whose first result is −3 times the eager one (``kind="mismatch"``)
    or that cannot compile (``"failure"``)."""
    def make(fn, mode):
        def run(*args):
            if kind == "failure":
                raise RuntimeError("InductorError: no working C++ compiler")
            out = fn(*args)
            return (out[0] * -3.0, *out[1:])
        return run
    return make


@pytest.mark.parametrize("kind", ["mismatch", "failure"])
def test_a_meta_gradient_that_disagrees_or_fails_warns_once_and_runs_eager(monkeypatch, kind):
    monkeypatch.setattr(inner_grad, "compiled", _spoiled(kind))
    monkeypatch.setattr(compiled_module, "_WARNED", set())
    monkeypatch.setenv("MEDNF_COMPILE", "off")
    reference = _learn()
    monkeypatch.setenv("MEDNF_COMPILE", "on")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        learner = _learn()
    assert [str(w.message)[:40] for w in caught if w.category is CompileWarning] == [
        "the compiled meta-gradient is not used ("]
    report = learner.compile_report
    assert learner.kernel == "eager" and report["used"] == "eager" and report["requested"] == "on"
    assert report["tried"]["default"].startswith("differs from eager by " if kind == "mismatch"
                                                 else "failed: RuntimeError: InductorError: no working C++")
    assert _theta_equal(learner, reference)  # eager from the first step: the same bytes


def test_a_fit_whose_compiled_kernel_disagrees_runs_eager_and_says_so(monkeypatch):
    monkeypatch.setattr(fused_latent_grad, "compiled", _spoiled("mismatch"))
    monkeypatch.setattr(fused_latent_grad, "_STATE", {"failed": None})
    monkeypatch.setattr("mednf.engine.fit._FIT_CHECKS", {})
    params = _learn(1).detached_params()
    monkeypatch.setenv("MEDNF_COMPILE", "off")
    eager = fit_latents(params, _signals(5), CFG.field, CFG.fit)
    monkeypatch.setenv("MEDNF_COMPILE", "on")
    with pytest.warns(fused_latent_grad.FitKernelWarning, match="the compiled fit kernel is not available .default: "
                      "differs from eager"):
        checked = fit_latents(params, _signals(5), CFG.field, CFG.fit)
    assert checked.kernel == "eager" and checked.compile_report.used == "eager"
    assert torch.equal(checked.latents, eager.latents)
    assert fit_latents(params, _signals(5), CFG.field, CFG.fit).kernel == "eager"  # the verdict holds


def test_a_compiled_build_records_its_self_checks_and_matches_the_eager_build(tmp_path, monkeypatch):
    options = {"preset": "tiny", "size": 16, "max_samples": 12, "progress": False,
               "overrides": {"meta": {"steps": 4}}, "build_overrides": {"val_every": 4, "val_samples": 4}}
    monkeypatch.setenv("MEDNF_COMPILE", "off")
    build("phantomnf", BuildOptions(out=tmp_path / "eager", **options))
    monkeypatch.setenv("MEDNF_COMPILE", "on")
    build("phantomnf", BuildOptions(out=tmp_path / "compiled", **options))
    eager, lean = (json.loads((tmp_path / name / "mednf.json").read_text()) for name in ("eager", "compiled"))
    meta_check, fit_check = lean["meta_training"]["compiled"], lean["fit"]["check"]
    assert meta_check["used"] == "default" and meta_check["difference"] <= 1e-6 and meta_check["tolerance"] == 1e-2
    assert fit_check["used"] == "default" and fit_check["difference"] <= 1e-3 and lean["fit"]["kernel"] == "compiled"
    assert "compiled" not in eager["meta_training"] and "check" not in eager["fit"]
    for split in ("train", "test"):
        a, b = (m["splits"][split]["psnr_mean"] for m in (eager, lean))
        assert abs(a - b) < 1e-3, (split, a, b)


def test_a_bad_setting_stops_a_build_before_meta_learning(tmp_path, monkeypatch):
    from click.testing import CliRunner

    from mednf.cli import main

    monkeypatch.setenv("MEDNF_COMPILE", "fast")
    result = CliRunner().invoke(main, ["build", "phantomnf", "--steps", "2", "--out", str(tmp_path / "P")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines()[-1].startswith("error: MEDNF_COMPILE = 'fast' is invalid")
    assert not (tmp_path / "P" / "mednf.json").exists() and "meta-training" not in result.output
