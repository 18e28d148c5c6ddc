"""PSNR and SSIM per signal; SSIM checked against scikit-image on real MedMNIST images."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_npz

from mednf.engine.metrics import psnr, ssim


def test_psnr_formula():
    target = torch.zeros(2, 1, 4, 4)
    pred = target.clone()
    pred[0] += 0.1
    pred[1] += 0.01
    torch.testing.assert_close(psnr(pred, target), torch.tensor([20.0, 40.0]))


def test_ssim_matches_scikit_image_on_real_images():
    skimage_metrics = pytest.importorskip("skimage.metrics")
    images = load_npz("breastmnist_64.npz")["test_images"][:6].astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    noisy = np.clip(images + rng.normal(0, 0.05, images.shape).astype(np.float32), 0, 1)
    ours = ssim(torch.from_numpy(noisy[:, None]), torch.from_numpy(images[:, None]))
    ref = [skimage_metrics.structural_similarity(n, i, data_range=1.0, gaussian_weights=True, sigma=1.5,
                                                 use_sample_covariance=False) for n, i in zip(noisy, images)]
    print("SSIM ours", ours.numpy().round(4), "skimage", np.round(ref, 4))
    np.testing.assert_allclose(ours.numpy(), ref, atol=1e-4)
    assert torch.allclose(ssim(torch.from_numpy(images[:, None]), torch.from_numpy(images[:, None])), torch.ones(6))


def test_ssim_3d_and_shape_errors():
    vol = torch.rand(2, 1, 12, 12, 12)
    assert ssim(vol, vol).shape == (2,)
    with pytest.raises(ValueError, match="not defined for 1D"):
        ssim(torch.rand(2, 1, 10), torch.rand(2, 1, 10))
