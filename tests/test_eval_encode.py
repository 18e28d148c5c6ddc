"""`mednf eval` and `mednf.encode` on a dataset built by `mednf build` in this session."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

import mednf
import mednf.engine.config
from mednf.cli import main
from mednf.engine import field as nf
from mednf.errors import EncodeError, EvalError
from mednf.format.tensors import load_tensors
from mednf.sources.read import source_images


def _images(ds) -> np.ndarray:
    return source_images(ds.manifest, ds.split, ds.source_index)  # [N, 1, 32, 32] float in [0, 1]


def test_eval_matches_a_per_sample_reference_and_the_build_psnr(phantom_dir):
    report = mednf.evaluate(phantom_dir, None, progress=False)
    assert list(report.splits) == ["train", "val", "test"]
    theta, _ = load_tensors(phantom_dir / "model.safetensors")
    for split, result in report.splits.items():
        ds = mednf.load(phantom_dir, split)
        images = _images(ds)
        for row in range(len(ds)):  # slow reference: one latent at a time, numpy metrics
            recon = nf.decode(theta, torch.from_numpy(ds.latents[row:row + 1]), ds.config.field, (32, 32)).numpy()[0]
            mse = float(np.mean((recon.astype(np.float64) - images[row]) ** 2))
            assert result.mse[row] == pytest.approx(mse, rel=1e-4)
            assert result.psnr[row] == pytest.approx(10 * np.log10(1 / mse), abs=1e-3)
        # the PSNR recorded at build time (from the fit's own reconstruction) is what eval measures
        np.testing.assert_allclose(result.psnr, ds.psnr, atol=1e-2)
        np.testing.assert_allclose(result.ssim, ds.ssim, atol=1e-3)


def test_eval_cli_writes_summary_samples_and_plot(phantom_dir, tmp_path):
    out, plot = tmp_path / "ev", tmp_path / "grid.png"
    result = CliRunner().invoke(main, ["eval", str(phantom_dir), "--split", "val", "--out", str(out),
                                       "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert "recorded at build" in result.output
    summary = json.loads((out / "summary.json").read_text())
    stored = mednf.load(phantom_dir, "val").psnr
    assert summary["splits"]["val"]["count"] == 20
    assert summary["splits"]["val"]["psnr_mean"] == pytest.approx(float(stored.mean()), abs=1e-2)
    table = pq.read_table(out / "samples.parquet")
    assert table.num_rows == 20 and set(table.column_names) >= {"split", "row", "source_index", "mse", "psnr", "ssim"}
    # 8 columns of 112 px tiles; rows input, reconstruction, |error| with its colour bar (tests/test_plots.py)
    assert Image.open(plot).size == (112 + 8 * 112 + 7 * 10 + 78, 46 + 3 * 112 + 2 * 6 + 36)


def test_eval_errors_are_one_line(phantom_dir, tmp_path):
    result = CliRunner().invoke(main, ["eval", str(phantom_dir), "--split", "dev"])
    assert result.exit_code == 2 and "--split 'dev' is invalid" in result.output
    copy = tmp_path / "PhantomNF"
    shutil.copytree(phantom_dir, copy)
    manifest = json.loads((copy / "mednf.json").read_text())
    manifest["source"]["generator"] = 1  # drawn by an older phantom generator: the images cannot be had
    (copy / "mednf.json").write_text(json.dumps(manifest))
    with pytest.raises(EvalError, match="phantoms of another mednf version"):
        mednf.evaluate(copy, progress=False)


def test_encode_reproduces_the_stored_latents_and_psnr(phantom_dir):
    ds = mednf.load(phantom_dir, "test")
    images = _images(ds)
    result = mednf.encode(images[:, 0], phantom_dir, progress=False)  # MedMNIST layout [N, H, W]
    assert result.space == "PhantomNF" and result.latents.shape == ds.latents.shape
    np.testing.assert_allclose(result.psnr, ds.psnr, atol=1e-3)
    np.testing.assert_allclose(result.latents, ds.latents, rtol=1e-4, atol=1e-5)
    channels_first = mednf.encode(torch.from_numpy(images[:4]), ds, progress=False)  # [N, 1, H, W] float, a dataset
    np.testing.assert_allclose(channels_first.psnr, ds.psnr[:4], atol=1e-3)


def test_encode_refuses_other_sizes_unless_asked(phantom_dir):
    images = np.random.default_rng(0).random((3, 48, 48), dtype=np.float32)
    with pytest.raises(EncodeError, match=r"images are 48×48, the PhantomNF space is 32×32; .*resample=True"):
        mednf.encode(images, phantom_dir, progress=False)
    result = mednf.encode(images, phantom_dir, resample=True, progress=False)
    assert result.latents.shape == (3, mednf.load(phantom_dir, "test").latents.shape[1])
    assert np.isfinite(result.psnr).all()


@pytest.mark.parametrize("images, message", [
    (np.zeros((2, 3, 32, 32), np.uint8), r"shape \(2, 3, 32, 32\) do not fit a 2D space with 1 channel"),
    (np.full((2, 32, 32), 2.0, np.float32), r"float images span \[2, 2\]: expected values in \[0, 1\]"),
    (np.zeros((2, 32, 32), np.int32), "dtype torch.int32"),
    (np.zeros((0, 32, 32), np.uint8), "images is empty"),
])
def test_encode_bad_images(phantom_dir, images, message):
    with pytest.raises(EncodeError, match=message):
        mednf.encode(images, phantom_dir, progress=False)


def test_encode_cli(phantom_dir, tmp_path):
    ds = mednf.load(phantom_dir, "val")
    np.savez(tmp_path / "imgs.npz", images=_images(ds)[:5, 0])
    result = CliRunner().invoke(main, ["encode", str(phantom_dir), str(tmp_path / "imgs.npz"),
                                       "--out", str(tmp_path / "lat.npz")])
    assert result.exit_code == 0, result.output
    with np.load(tmp_path / "lat.npz") as data:
        assert data["latents"].shape == (5, ds.latents.shape[1])
        np.testing.assert_allclose(data["psnr"], ds.psnr[:5], atol=1e-3)
    np.savez(tmp_path / "two.npz", a=np.zeros((1, 32, 32)), b=np.zeros((1, 32, 32)))
    result = CliRunner().invoke(main, ["encode", str(phantom_dir), str(tmp_path / "two.npz"),
                                       "--out", str(tmp_path / "x.npz")])
    assert result.exit_code == 1 and "say which with --key" in result.output and "Traceback" not in result.output


def test_split_names_and_file_kinds_are_checked(phantom_dir, tmp_path):
    assert list(mednf.evaluate(phantom_dir, "val", progress=False).splits) == ["val"]  # one name as a string
    with pytest.raises(mednf.engine.config.ConfigError,
                       match=r"splits = \['dev'\] is invalid: expected some of train, val, test"):
        mednf.evaluate(phantom_dir, ["dev"], progress=False)
    np.save(tmp_path / "imgs.npy", np.zeros((2, 32, 32), np.float32))
    result = CliRunner().invoke(main, ["encode", str(phantom_dir), str(tmp_path / "imgs.npy"),
                                       "--out", str(tmp_path / "x.npz")])
    assert result.exit_code == 1 and "not an .npz archive (a .npy file?)" in result.output


def test_classify_cli_prints_the_table_and_writes_json(phantom_dir, tmp_path):
    result = CliRunner().invoke(main, ["classify", str(phantom_dir), "--model", "knn", "--features", "both",
                                       "--out", str(tmp_path / "c.json")])
    assert result.exit_code == 0, result.output
    assert "1-NN" in result.output and "3-NN" in result.output and "pixels" in result.output
    assert "Chance" in result.output or "chance" in result.output
    report = json.loads((tmp_path / "c.json").read_text())
    assert report["results"] and all(row["model"] in ("1-NN", "3-NN") for row in report["results"])
    result = CliRunner().invoke(main, ["classify", str(phantom_dir), "--model", "svm"])
    assert result.exit_code == 2 and "Traceback" not in result.output
