"""Baselines beside the quality numbers: mean image and φ = 0 per split, and the warning when nothing is learned."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY
from safetensors.torch import load_file

import mednf
from mednf.building.pipeline import BuildOptions, build
from mednf.engine import field as nf
from mednf.engine.config import EngineConfig
from mednf.sources.read import source_images


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def test_baselines_equal_an_independent_numpy_computation(phantom_dir):
    manifest = json.loads((phantom_dir / "mednf.json").read_text())
    images = {s: source_images(mednf.load(phantom_dir, s).manifest, s, mednf.load(phantom_dir, s).source_index)
              for s in ("train", "val", "test")}  # [N, 1, 32, 32] float in [0, 1]
    mean = np.zeros(images["train"].shape[1:])
    for image in images["train"]:  # a plain loop, in float64
        mean += image.astype(np.float64) / len(images["train"])
    theta = load_file(phantom_dir / "model.safetensors")
    cfg = EngineConfig.from_dict(manifest["engine"]).field
    with torch.no_grad():
        zero = nf.forward(theta, torch.zeros(1, cfg.latent_dim), nf.coordinate_grid((32, 32)), cfg).clamp(0, 1)
    zero = zero[0, :, 0].reshape(1, 32, 32).double().numpy()
    for split, split_images in images.items():
        stored = manifest["splits"][split]["baselines"]
        assert stored["mean_image_psnr"] == pytest.approx(np.mean([_psnr(x, mean) for x in split_images]), abs=1e-6)
        assert stored["zero_latent_psnr"] == pytest.approx(np.mean([_psnr(x, zero) for x in split_images]), abs=1e-4)
    assert mednf.load(phantom_dir, "test").manifest.splits["test"].baselines == pytest.approx(
        manifest["splits"]["test"]["baselines"])
    card = (phantom_dir / "README.md").read_text()
    assert ("baseline: mean image" in card
            and f"{manifest['splits']['test']['baselines']['mean_image_psnr']:.2f}" in card)


@pytest.mark.parametrize("alpha, cause", [(1e-7, "too_slow"), (0.1, None), (10.0, "diverging"),
                                          (1000.0, "diverging")])
def test_the_warning_fires_on_a_run_that_learns_nothing_and_not_on_one_that_does(tmp_path, alpha, cause):
    """α = 1e-7 barely moves φ (advice: raise α), α = 0.1 learns, α = 10 diverges (the meta-gradient norm
    grows) and α = 1000 too (its norm is huge from the start and does not grow: the latents' shift tells)."""
    out = tmp_path / "P"
    options = {**TINY, "max_samples": 48, "build_overrides": {"block_rows": 16, "val_every": 20, "val_samples": 16}}
    build("phantomnf", BuildOptions(out=out, overrides={"meta": {"steps": 200, "inner_lr": alpha},
                                                        "fit": {"lr": alpha}}, **options))
    manifest = json.loads((out / "mednf.json").read_text())
    check, learns = manifest["meta_training"]["baseline_check"], cause is None
    assert check["learns_per_sample"] is learns and check.get("cause") == cause
    best, baseline = manifest["meta_training"]["best_val_psnr"], check["val_mean_image_psnr"]
    assert (best >= baseline + 1.0) is learns
    log, card = (out / "build.log").read_text(), (out / "README.md").read_text()
    warned = "not 1 dB above the mean-image baseline" in log
    assert warned is not learns and ("**Warning:**" in card) is not learns
    if warned:  # once at the second validation and once at the end, with the fix for the cause
        assert log.count("not 1 dB above the mean-image baseline") == 2
        raise_alpha, lower_alpha = "raise the inner learning rate" in log, "lower the inner learning rate" in log
        assert (raise_alpha, lower_alpha) == ((True, False) if cause == "too_slow" else (False, True)), log
        assert ("The inner loop diverged" in card) is (cause == "diverging")


def test_the_diagnosis_separates_a_diverging_from_a_slow_run():
    from mednf.engine.baselines import diagnose_no_learning, latent_shift_rms

    steady = [1.5] * 10 + [0.1] * 90  # a slow run: the norm falls as θ learns the mean image
    assert diagnose_no_learning(steady).cause == "too_slow"
    assert diagnose_no_learning(steady, 2e-7).cause == "too_slow"
    growing = list(np.geomspace(70, 900, 100))
    diagnosis = diagnose_no_learning(growing, 0.3)
    assert diagnosis.cause == "diverging" and "grew" in diagnosis.advice() and "lower the inner" in diagnosis.advice()
    assert diagnose_no_learning([*steady[:-1], float("nan")]).cause == "diverging"
    huge = diagnose_no_learning([5e5] * 100, 1976.0)  # huge from the start, not growing: the shift tells
    assert huge.cause == "diverging" and "1.98e+03 rad RMS" in huge.evidence
    assert diagnose_no_learning(steady, float("nan")).cause == "diverging"
    assert diagnose_no_learning([]).cause == "too_slow"
    assert diagnose_no_learning([0.0] * 20).cause == "too_slow"  # no division by a zero norm
    S = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])  # [(K-1)·L = 3, P = 2]
    shift = latent_shift_rms(S, torch.tensor([[1.0, 1.0], [0.0, 0.0]]))  # S φ = (1, 2, 3) and 0
    np.testing.assert_allclose(shift.numpy(), [np.sqrt(14 / 3), 0.0], rtol=1e-6)


def test_info_and_eval_show_the_baselines(phantom_dir, tmp_path):
    from click.testing import CliRunner

    from mednf.cli import main

    stored = json.loads((phantom_dir / "mednf.json").read_text())["splits"]["test"]["baselines"]
    line = f"baselines: mean image {stored['mean_image_psnr']:.2f} dB, φ = 0 {stored['zero_latent_psnr']:.2f} dB"
    info = CliRunner().invoke(main, ["info", str(phantom_dir)])
    assert info.exit_code == 0 and line in info.output and "warning: the best validation PSNR" in info.output
    run = CliRunner().invoke(main, ["eval", str(phantom_dir), "--out", str(tmp_path / "ev")])
    assert run.exit_code == 0 and line in run.output, run.output
    summary = json.loads((tmp_path / "ev" / "summary.json").read_text())
    assert summary["splits"]["test"]["baselines"] == pytest.approx(stored)


def test_tensorboard_logs_the_curves_and_a_reconstruction_grid(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from mednf.building.curves import read_training

    out, board = tmp_path / "P", tmp_path / "tb"
    build("phantomnf", BuildOptions(out=out, overrides={"meta": {"steps": 6}}, tensorboard=board,
                                    **{**TINY, "build_overrides": {"block_rows": 8, "val_every": 3, "val_samples": 6}}))
    events = EventAccumulator(str(board), size_guidance={"scalars": 0, "images": 0})
    events.Reload()
    rows = read_training(out / "training.csv")
    losses = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert losses == [(int(r["iteration"]), pytest.approx(float(r["loss"]), rel=1e-5)) for r in rows
                      if r["kind"] == "train"]
    assert [e.step for e in events.Scalars("val/psnr")] == [3, 6]
    image = events.Images("val/inputs_over_reconstructions")
    assert [e.step for e in image] == [3, 6] and (image[0].width, image[0].height) == (6 * 32, 2 * 32)


def test_tensorboard_without_the_package_is_one_line(tmp_path, monkeypatch):
    import sys

    from click.testing import CliRunner

    from mednf.cli import main

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    result = CliRunner().invoke(main, ["build", "phantomnf", "--out", str(tmp_path / "P"), "--tensorboard",
                                       str(tmp_path / "tb")])
    assert result.exit_code == 1 and "pip install tensorboard" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "P").exists()
