"""`mednf build` end to end: PhantomNF (tiny preset) and the real MedMNIST files, checked against the
format and against independent recomputation (decode with θ from the file, per-sample refit)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import zarr
from conftest import SHARED_MEDMNIST, TINY, report
from PIL import Image
from safetensors.torch import load_file

import mednf
from mednf.building.curves import read_training
from mednf.building.pipeline import BuildOptions, build
from mednf.engine.config import EngineConfig
from mednf.engine.field import decode
from mednf.engine.fit import fit_latents
from mednf.engine.metrics import mse_to_psnr
from mednf.format.reader import verify_dataset
from mednf.sources.phantoms import make_phantoms


def test_manifest_and_checksums(phantom_dir):
    manifest = verify_dataset(phantom_dir).to_json()  # sizes + sha256 of every file, one index row per sample
    assert manifest["name"] == "PhantomNF" and manifest["format_version"] == 1
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 20, "val": 20, "test": 20}
    assert manifest["engine"]["field"]["latent_dim"] == 32 and manifest["builder"]["preset"] == "tiny"
    assert manifest["source"] == {"kind": "phantom", "size": 32, "seed": 0, "generator": 3, "official": True,
                                  "max_samples": 20}
    assert manifest["meta_training"]["steps"] == 20 and manifest["meta_training"]["best_step"] in (10, 20)
    assert {"mednf", "torch", "zarr"} <= set(manifest["software"])
    assert "model.safetensors" in manifest["files"] and "index.parquet" in manifest["files"]
    assert any(name.startswith("latents.zarr/") for name in manifest["files"])
    assert not (phantom_dir / ".partial").exists()
    assert sorted(p.name for p in phantom_dir.iterdir()) == [
        ".continue", ".mednf-owner", "README.md", "build.log", "index.parquet", "latents.zarr", "mednf.json",
        "model.safetensors", "reconstructions.png", "training.csv", "training.png"]
    assert {"training.csv", "training.png", "reconstructions.png"} <= set(manifest["files"])
    assert (phantom_dir.parent / ".PhantomNF.lock").is_file()  # the dataset lock lives beside the folder


def test_the_build_writes_the_test_reconstructions_the_card_shows(phantom_dir, tmp_path):
    """reconstructions.png is the grid `ds.plot` draws of the first 8 test samples (decoded there by another path)."""
    from PIL import Image

    from mednf.figures import save_figure

    manifest = json.loads((phantom_dir / "mednf.json").read_text())
    assert manifest["fit"]["preview"] == {"png": "reconstructions.png", "split": "test", "samples": 8}
    assert "![the first 8 test samples: input, reconstruction and |error|](reconstructions.png)" in (
        phantom_dir / "README.md").read_text()
    written = np.asarray(Image.open(phantom_dir / "reconstructions.png").convert("L"), dtype=np.float64)
    again = save_figure(mednf.load(phantom_dir, "test").plot(range(8)), tmp_path / "again.png")
    expected = np.asarray(Image.open(again).convert("L"), dtype=np.float64)
    assert written.shape == expected.shape and written.shape[0] > 300 and written.shape[1] > 800
    assert np.abs(written - expected).mean() < 0.05  # equal but for a rounding step in a few pixels


def test_rows_labels_and_psnr_recomputed_independently(phantom_dir):
    manifest = json.loads((phantom_dir / "mednf.json").read_text())
    cfg = EngineConfig.from_dict(manifest["engine"])
    theta = load_file(phantom_dir / "model.safetensors")
    index = pq.read_table(phantom_dir / "index.parquet").to_pydict()
    group = zarr.open_group(str(phantom_dir / "latents.zarr"), mode="r")
    for i, split in enumerate(("train", "val", "test")):
        images, labels = make_phantoms(manifest["builder"]["splits"][split], 32, seed=i)
        images, labels = images[:20], labels[:20]
        rows = [j for j, s in enumerate(index["split"]) if s == split]
        assert [index["row"][j] for j in rows] == list(range(20))
        assert [index["source_index"][j] for j in rows] == list(range(20))
        assert [index["label"][j] for j in rows] == labels.tolist()
        latents = torch.from_numpy(group[split][:])  # [20, P]
        recon = decode(theta, latents, cfg.field, (32, 32))  # [20, 1, 32, 32]
        psnr = mse_to_psnr((recon - torch.from_numpy(images)).pow(2).flatten(1).mean(1))
        np.testing.assert_allclose([index["psnr"][j] for j in rows], psnr.numpy(), atol=1e-3)
        stats = manifest["splits"][split]
        assert stats["psnr_mean"] == pytest.approx(float(psnr.mean()), abs=1e-3)
        assert f"| {split} | 20 | {stats['psnr_mean']:.2f}" in (phantom_dir / "README.md").read_text()


def test_stored_latents_equal_a_per_sample_fit(phantom_dir):
    """Blocks, batches and the rank/resume logic must not change a latent: refit each image alone."""
    manifest = json.loads((phantom_dir / "mednf.json").read_text())
    cfg = EngineConfig.from_dict(manifest["engine"])
    theta = load_file(phantom_dir / "model.safetensors")
    images, _ = make_phantoms(manifest["builder"]["splits"]["test"], 32, seed=2)
    stored = zarr.open_array(str(phantom_dir / "latents.zarr" / "test"), mode="r")[:]
    for i in (0, 7, 8, 19):  # first row, block edges, last row
        alone = fit_latents(theta, images[i:i + 1], cfg.field, cfg.fit, seed=manifest["fit_seed"], first_index=i)
        np.testing.assert_allclose(stored[i], alone.latents[0].numpy(), rtol=1e-5, atol=1e-6)


def test_card_front_matter(phantom_dir):
    card = (phantom_dir / "README.md").read_text()
    assert card.startswith("---\n") and "license: cc0-1.0" in card and "pretty_name: PhantomNF" in card
    assert "first 20 samples of each split only" in card and "$" not in card.split("```python")[0]


def test_rerun_reports_complete_and_other_settings_are_refused(phantom_dir):
    from mednf.errors import BuildError

    build("phantomnf", BuildOptions(out=phantom_dir, **TINY))  # same settings: nothing to do
    neutral = {**TINY, "build_overrides": {**TINY["build_overrides"], "checkpoint_every": 3}}
    build("phantomnf", BuildOptions(out=phantom_dir, overrides={"fit": {"batch_size": 3, "memory_budget_mb": 64}},
                                    memory_budget="6GB", **neutral))  # batching and saving only: the same build
    with pytest.raises(BuildError, match="built with other settings .*engine.meta.steps: 20 → 30"):
        build("phantomnf", BuildOptions(out=phantom_dir, overrides={"meta": {"steps": 30}}, **TINY))


@pytest.mark.slow
def test_real_breastmnist_64_build(tmp_path):
    if not (SHARED_MEDMNIST / "breastmnist_64.npz").is_file():
        pytest.skip(f"real MedMNIST file {SHARED_MEDMNIST / 'breastmnist_64.npz'} is absent")
    out = tmp_path / "BreastNF"
    build("breastnf", BuildOptions(out=out, preset="tiny", medmnist_root=SHARED_MEDMNIST, progress=False,
                                   overrides={"meta": {"steps": 40}}))
    manifest = verify_dataset(out).to_json()
    assert manifest["source"]["official"] and manifest["source"]["md5"] == "742edef2a1fd1524b2efff4bd7ba9364"
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 546, "val": 78, "test": 156}
    index = pq.read_table(out / "index.parquet").to_pydict()
    test_labels = [label for split, label in zip(index["split"], index["label"]) if split == "test"]
    with np.load(SHARED_MEDMNIST / "breastmnist_64.npz") as data:
        np.testing.assert_array_equal(test_labels, data["test_labels"][:, 0])
    test = manifest["splits"]["test"]
    report(f"BreastNF build (real breastmnist_64.npz, preset tiny, 40 meta steps): test PSNR "
           f"{test['psnr_mean']:.2f} dB, SSIM {test['ssim_mean']:.3f}")
    assert test["psnr_mean"] > 15.0


@pytest.mark.slow
def test_real_pneumoniamnist_28_build(tmp_path):
    if not (SHARED_MEDMNIST / "pneumoniamnist.npz").is_file():
        pytest.skip(f"real MedMNIST file {SHARED_MEDMNIST / 'pneumoniamnist.npz'} is absent")
    out = tmp_path / "PneumoniaNF"
    build("pneumonianf", BuildOptions(out=out, size=28, preset="tiny", medmnist_root=SHARED_MEDMNIST,
                                      progress=False, overrides={"meta": {"steps": 40}}))
    manifest = verify_dataset(out).to_json()
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 4708, "val": 524, "test": 624}
    assert manifest["source"]["file"] == "pneumoniamnist.npz" and manifest["source"]["official"]
    test = manifest["splits"]["test"]
    report(f"PneumoniaNF build (real pneumoniamnist.npz 28², preset tiny, 40 meta steps): test PSNR "
           f"{test['psnr_mean']:.2f} dB, SSIM {test['ssim_mean']:.3f}")
    assert test["psnr_mean"] > 15.0


@pytest.mark.slow
def test_real_adrenalmnist3d_build_goes_through_the_same_path(tmp_path):
    if not (SHARED_MEDMNIST / "adrenalmnist3d.npz").is_file():
        pytest.skip(f"real MedMNIST file {SHARED_MEDMNIST / 'adrenalmnist3d.npz'} is absent")
    out = tmp_path / "AdrenalNF3D"
    build("adrenalnf3d", BuildOptions(out=out, preset="tiny", medmnist_root=SHARED_MEDMNIST, max_samples=24,
                                      progress=False, build_overrides={"block_rows": 16}))
    manifest = verify_dataset(out).to_json()
    assert manifest["engine"]["field"]["in_dims"] == 3 and manifest["source"]["official"]
    cfg = EngineConfig.from_dict(manifest["engine"])
    theta = load_file(out / "model.safetensors")
    latents = torch.from_numpy(zarr.open_array(str(out / "latents.zarr" / "test"), mode="r")[:3])
    with np.load(SHARED_MEDMNIST / "adrenalmnist3d.npz") as data:
        volumes = torch.from_numpy(data["test_images"][:3, None].astype(np.float32) / 255)  # [3, 1, 28, 28, 28]
    recon = decode(theta, latents, cfg.field, (28, 28, 28))
    psnr = mse_to_psnr((recon - volumes).pow(2).flatten(1).mean(1))
    index = pq.read_table(out / "index.parquet").to_pydict()
    stored = [p for s, p in zip(index["split"], index["psnr"]) if s == "test"][:3]
    np.testing.assert_allclose(stored, psnr.numpy(), atol=1e-3)
    report(f"AdrenalNF3D build (real adrenalmnist3d.npz 28³, preset tiny, 24 per split): test PSNR "
           f"{manifest['splits']['test']['psnr_mean']:.2f} dB, SSIM {manifest['splits']['test']['ssim_mean']:.3f}")


def test_command_line_overrides_are_recorded(tmp_path):
    from click.testing import CliRunner

    from mednf.cli import main

    out = tmp_path / "P"
    result = CliRunner().invoke(main, [
        "build", "phantomnf", "--out", str(out), "--preset", "tiny", "--size", "16", "--max-samples", "6",
        "--steps", "3", "--batch-size", "4", "--latent-dim", "16", "--fit-steps", "2", "--quiet",
        "--set", "meta.inner_steps=1", "--set", "field.shift_mode=outside", "--set", "build.val_samples=2"])
    assert result.exit_code == 0, result.output
    manifest = verify_dataset(out).to_json()
    engine = manifest["engine"]
    assert (engine["meta"]["steps"], engine["meta"]["batch_size"], engine["meta"]["inner_steps"]) == (3, 4, 1)
    assert (engine["field"]["latent_dim"], engine["field"]["shift_mode"], engine["fit"]["steps"]) == (16, "outside", 2)
    assert manifest["builder"]["build"]["val_samples"] == 2 and manifest["builder"]["source"]["size"] == 16


def test_the_best_validated_theta_is_the_one_saved(tmp_path):
    """Replay meta-training independently up to the best validation step: that θ is model.safetensors."""
    from mednf.building.trainer import batch_positions
    from mednf.engine.meta import MetaLearner

    out = tmp_path / "P"
    build("phantomnf", BuildOptions(out=out, preset="tiny", size=16, max_samples=16, progress=False,
                                    overrides={"meta": {"steps": 8, "meta_lr": 0.03}},
                                    build_overrides={"val_every": 1, "val_samples": 4}))
    manifest = verify_dataset(out).to_json()
    history = manifest["meta_training"]["history"]
    assert [h["step"] for h in history] == list(range(1, 9))
    best = max(history, key=lambda h: h["val_psnr"])
    assert manifest["meta_training"]["best_step"] == best["step"] < 8  # β 0.03 overshoots: best is not last
    cfg = EngineConfig.from_dict(manifest["engine"])
    images, _ = make_phantoms(manifest["builder"]["splits"]["train"], 16, seed=0)
    learner = MetaLearner(cfg.field, cfg.meta, seed=0)
    losses = [learner.step(torch.from_numpy(images[:16][batch_positions(0, it, cfg.meta.batch_size, 16)]))["loss"]
              for it in range(best["step"])]
    saved = load_file(out / "model.safetensors")
    for name, value in learner.detached_params().items():
        np.testing.assert_allclose(saved[name].numpy(), value.numpy(), rtol=1e-6, atol=1e-7)
    # training.csv: one row per iteration with the replay's loss, one per validation with the history's PSNR
    rows = read_training(out / "training.csv")
    train, val = [r for r in rows if r["kind"] == "train"], [r for r in rows if r["kind"] == "val"]
    assert [int(r["iteration"]) for r in train] == list(range(1, 9)) == [int(r["iteration"]) for r in val]
    np.testing.assert_allclose([float(r["loss"]) for r in train[:best["step"]]], losses, rtol=1e-5)
    np.testing.assert_allclose([float(r["val_psnr"]) for r in val], [h["val_psnr"] for h in history], rtol=1e-5)
    assert all(-1 <= float(r["val_ssim"]) <= 1 for r in val) and all(float(r["lr"]) == 0.03 for r in train)
    png = Image.open(out / "training.png")
    assert png.size == (900, 340)
    assert "![training curves" in (out / "README.md").read_text()
    report(f"best-checkpoint test: validation PSNR per step {[round(h['val_psnr'], 2) for h in history]}, "
           f"best at step {best['step']}")


def test_dermanf_card_carries_the_non_commercial_licence(phantom_dir):
    from mednf.format.card import render_card
    from mednf.format.manifest import Manifest
    from mednf.sources.kinds import source_card_line
    from mednf.sources.spec import load_builder

    manifest = json.loads((phantom_dir / "mednf.json").read_text())
    manifest["builder"] = json.loads(json.dumps(load_builder("dermanf").to_dict()))
    manifest["name"] = "DermaNF"
    manifest["source"] = {"kind": "medmnist", "flag": "dermamnist", "size": 64, "file": "dermamnist_64.npz",
                          "md5": "b70a2f5635c6199aeaa28c31d7202e1f", "official": True, "license": "CC BY-NC 4.0"}
    card = render_card(Manifest.from_json(manifest, "test"), source_card_line(manifest["source"]))
    assert "license: cc-by-nc-4.0" in card and "Non-commercial use only" in card and "yang2023medmnist" in card
    assert "HAM10000" in card and "dermamnist_64.npz" in card


def test_images_too_small_for_ssim_still_build_and_render(tmp_path):
    out = tmp_path / "P"
    build("phantomnf", BuildOptions(out=out, preset="tiny", size=8, max_samples=4, progress=False,
                                    overrides={"meta": {"steps": 2}}, build_overrides={"val_samples": 2}))
    manifest = verify_dataset(out).to_json()
    assert manifest["splits"]["test"]["ssim_mean"] is None
    assert "| test | 4 |" in (out / "README.md").read_text() and "| — |" in (out / "README.md").read_text()
