"""Baselines beside every quality number: what PSNR a split gets without per-sample latents.

- **mean image**: every sample reconstructed as the mean training image;
- **zero latent**: every sample reconstructed as the shared network alone (φ = 0, clamped to [0, 1] like
  the fit's reconstructions).

A dataset whose latents do not clearly beat the mean image has learned nothing per sample (e.g. an inner
learning rate too small for the latent size); :func:`learns_per_sample` is the test a build applies to its
validations. Means are over per-sample PSNRs, as the splits' ``psnr_mean``.
"""

from __future__ import annotations

import numpy as np
import torch

from mednf.engine import field as nf
from mednf.engine.config import FieldConfig

MARGIN_DB = 1.0  # "clearly above" the mean-image baseline
_BLOCK = 4096  # samples per block: bounded float64 memory for large splits


def _as_float(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float64) / 255.0 if images.dtype == np.uint8 else images.astype(np.float64)


def mean_image(images: np.ndarray) -> np.ndarray:
    """The mean of ``images [N, D, *spatial]`` (uint8 or float in [0, 1]) → ``[D, *spatial]`` float64."""
    total = np.zeros(images.shape[1:], np.float64)
    for start in range(0, len(images), _BLOCK):
        total += _as_float(images[start:start + _BLOCK]).sum(axis=0)
    return total / max(1, len(images))


def zero_latent_image(params: nf.Params, cfg: FieldConfig, spatial: tuple[int, ...]) -> np.ndarray:
    """The shared network's output at φ = 0 on the grid of ``spatial``, clamped: ``[D, *spatial]`` float64."""
    theta = {k: v.detach().to("cpu", torch.float32) for k, v in params.items()}
    return nf.decode(theta, torch.zeros(1, cfg.latent_dim), cfg, spatial)[0].double().numpy()


def psnr_against(images: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Per-sample PSNR (dB, data range 1) of ``reference [D, *spatial]`` as the reconstruction of every one
    of ``images [N, D, *spatial]`` → ``[N]``."""
    out = np.empty(len(images), np.float64)
    axes = tuple(range(1, images.ndim))
    for start in range(0, len(images), _BLOCK):
        mse = ((_as_float(images[start:start + _BLOCK]) - reference) ** 2).mean(axis=axes)
        out[start:start + len(mse)] = -10.0 * np.log10(np.maximum(mse, 1e-12))
    return out


def split_baselines(images: np.ndarray, mean: np.ndarray, zero: np.ndarray | None) -> dict[str, float]:
    """``{"mean_image_psnr", "zero_latent_psnr"}`` (mean over the split's samples) of one split."""
    out = {"mean_image_psnr": float(psnr_against(images, mean).mean())}
    if zero is not None:
        out["zero_latent_psnr"] = float(psnr_against(images, zero).mean())
    return out


def learns_per_sample(val_psnr: float, mean_image_psnr: float) -> bool:
    """Whether a validation PSNR is clearly (:data:`MARGIN_DB`) above the mean-image baseline."""
    return val_psnr >= mean_image_psnr + MARGIN_DB
