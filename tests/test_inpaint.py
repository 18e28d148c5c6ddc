"""`mednf.encode(mask=)`, `mednf.encode_points`, `mednf.inpaint` and their CLI, on a dataset built in this session."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mednf
from mednf.cli import main
from mednf.engine import field as nf
from mednf.errors import EncodeError
from mednf.format.tensors import load_tensors
from mednf.sources.read import source_images


def _images(ds) -> np.ndarray:
    return source_images(ds.manifest, ds.split, ds.source_index)[:, 0]  # [N, 32, 32] float in [0, 1]


def _random_mask(count: int, keep: float, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((count, 32, 32)) < keep


def test_a_full_mask_repeats_the_build_and_a_mask_equals_the_points_it_keeps(phantom_dir):
    ds = mednf.load(phantom_dir, "val")
    images = _images(ds)[:4]
    full = mednf.encode(images, phantom_dir, mask=np.ones((32, 32), bool), progress=False)
    np.testing.assert_allclose(full.psnr, ds.psnr[:4], atol=1e-3)  # every pixel observed: the build's fit
    mask = _random_mask(4, 0.3)
    masked = mednf.encode(np.where(mask, images, np.nan), phantom_dir, mask=mask, progress=False)  # NaN is ignored
    grid = nf.coordinate_grid((32, 32)).numpy()
    M = int(mask.reshape(4, -1).sum(1).max())
    coords, values, real = np.zeros((4, M, 2), np.float32), np.zeros((4, M, 1), np.float32), np.zeros((4, M), bool)
    for s in range(4):  # the same pixels as an irregular, padded point set
        seen = mask[s].reshape(-1)
        m = int(seen.sum())
        coords[s, :m], values[s, :m, 0], real[s, :m] = grid[seen], images[s].reshape(-1)[seen], True
    points = mednf.encode_points(coords, values, phantom_dir, mask=real, progress=False)
    np.testing.assert_allclose(points.latents, masked.latents, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(points.psnr, masked.psnr, atol=1e-3)
    assert np.isnan(masked.ssim).all() and not np.allclose(masked.latents, full.latents)


def test_inpaint_decodes_the_masked_fit_on_the_full_grid_at_any_size(phantom_dir):
    ds = mednf.load(phantom_dir, "test")
    images, mask = _images(ds)[:3], _random_mask(3, 0.5, seed=1)
    result = mednf.inpaint(images, mask, phantom_dir, progress=False)
    theta, _ = load_tensors(phantom_dir / "model.safetensors")
    expected = nf.decode(theta, torch.from_numpy(result.latents), ds.config.field, (32, 32)).numpy()
    assert result.recon.shape == (3, 1, 32, 32)
    np.testing.assert_allclose(result.recon, expected, atol=1e-6)
    observed_mse = ((result.recon[:, 0] - images) ** 2 * mask).sum((1, 2)) / mask.sum((1, 2))
    np.testing.assert_allclose(result.psnr_observed, -10 * np.log10(observed_mse), atol=1e-3)
    assert mednf.inpaint(images, mask, phantom_dir, size=64, progress=False).recon.shape == (3, 1, 64, 64)


def test_inpaint_and_encode_cli(phantom_dir, tmp_path):
    ds = mednf.load(phantom_dir, "test")
    images = _images(ds)[:2]
    hole = np.ones((32, 32), bool)
    hole[12:20, 12:20] = False  # one central square hole for both images
    np.savez(tmp_path / "imgs.npz", images=images)
    np.savez(tmp_path / "mask.npz", mask=hole.astype(np.uint8))
    run = CliRunner().invoke(main, ["inpaint", str(phantom_dir), str(tmp_path / "imgs.npz"), "--mask",
                                    str(tmp_path / "mask.npz"), "--out", str(tmp_path / "recon.npz")])
    assert run.exit_code == 0, run.output
    assert "PSNR on the observed pixels" in run.output
    with np.load(tmp_path / "recon.npz") as data:
        assert data["recon"].shape == (2, 1, 32, 32) and data["latents"].shape == (2, ds.latents.shape[1])
        assert data["psnr_observed"].shape == (2,) and np.isfinite(data["recon"]).all()
    run = CliRunner().invoke(main, ["encode", str(phantom_dir), str(tmp_path / "imgs.npz"), "--mask",
                                    str(tmp_path / "mask.npz"), "--out", str(tmp_path / "lat.npz")])
    assert run.exit_code == 0 and "on the observed pixels" in run.output, run.output


@pytest.mark.parametrize("mask, message", [
    (np.full((32, 32), 0.5), "values other than 0/1"),
    (np.ones((2, 16, 16), bool), r"mask has shape \(2, 16, 16\)"),
    (np.zeros((2, 32, 32), bool), "observes no pixel of 2 image"),
])
def test_bad_masks_are_one_line_errors(phantom_dir, mask, message):
    with pytest.raises(EncodeError, match=message):
        mednf.encode(np.zeros((2, 32, 32), np.float32), phantom_dir, mask=mask, progress=False)


def test_bad_inputs_to_the_masked_paths(phantom_dir, tmp_path):
    mask = _random_mask(2, 0.5)
    with pytest.raises(EncodeError, match="observed values span"):
        mednf.encode(np.where(mask, 2.0, 0.0), phantom_dir, mask=mask, progress=False)
    with pytest.raises(EncodeError, match="cannot be combined with a mask"):
        mednf.encode(np.zeros((2, 16, 16)), phantom_dir, mask=np.ones((16, 16), bool), resample=True, progress=False)
    with pytest.raises(EncodeError, match="values span"):
        mednf.encode_points(np.zeros((1, 3, 2)), np.full((1, 3, 1), 3.0), phantom_dir, progress=False)
    np.savez(tmp_path / "imgs.npz", images=np.zeros((2, 32, 32), np.float32))
    np.savez(tmp_path / "m.npz", a=mask, b=mask)
    run = CliRunner().invoke(main, ["inpaint", str(phantom_dir), str(tmp_path / "imgs.npz"), "--mask",
                                    str(tmp_path / "m.npz"), "--out", str(tmp_path / "r.npz")])
    assert run.exit_code == 1 and "name the array 'mask'" in run.output and "Traceback" not in run.output
    assert not (tmp_path / "r.npz").exists()
    run = CliRunner().invoke(main, ["inpaint", str(phantom_dir), str(tmp_path / "imgs.npz"), "--mask",
                                    str(tmp_path / "nope.npz"), "--out", str(tmp_path / "r.npz")])
    assert run.exit_code == 1 and "nope.npz does not exist" in run.output
