"""Reconstruction metrics per signal: PSNR and SSIM (data range 1).

SSIM comes from torchmetrics (maintained, runs on the tensors' device, has 2D and 3D Gaussian windows);
its 2D values are checked against scikit-image on real MedMNIST images in the tests. torchmetrics averages
the SSIM map over the whole (reflect-padded) image; we average over the interior where the 11-tap window
fits, as scikit-image and the reference implementation of Wang et al. do, so numbers match the usual ones.
"""

from __future__ import annotations

from types import EllipsisType

import torch
from torch import Tensor

from mednf.errors import ConfigError

SSIM_WINDOW = 11  # Gaussian window, σ = 1.5 (torchmetrics' and scikit-image's default)


def check_signals(values: Tensor, what: str = "signals") -> None:
    """Refuse non-finite values with a message that says how many and where to look."""
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ConfigError(
            f"{what} contain {bad} NaN/Inf value(s): expected finite values in [0, 1]; "
            f"clean or drop those samples before meta-learning or fitting"
        )


def signal_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Per-signal mean squared error over points and channels: ``[B, N, D]`` × 2 → ``[B]``."""
    return (pred - target).pow(2).mean(dim=(1, 2))


def mse_to_psnr(mse: Tensor) -> Tensor:
    """PSNR in dB for signals with data range 1: ``[B]`` → ``[B]``."""
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def psnr(pred: Tensor, target: Tensor) -> Tensor:
    """PSNR in dB per signal for values in [0, 1]: ``[B, ...]`` × 2 → ``[B]``."""
    mse = (pred - target).pow(2).flatten(1).mean(dim=1)
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def ssim(pred: Tensor, target: Tensor) -> Tensor:
    """SSIM per signal (Gaussian window σ = 1.5, 11 taps) for images ``[B, D, H, W]`` or volumes
    ``[B, D, Z, H, W]`` in [0, 1] → ``[B]``."""
    if pred.dim() not in (4, 5) or pred.shape != target.shape:
        raise ConfigError(
            f"SSIM inputs of shape {tuple(pred.shape)} / {tuple(target.shape)} are invalid: expected two equal "
            "[B, D, H, W] (images) or [B, D, Z, H, W] (volumes); SSIM is not defined for 1D signals"
        )
    from torchmetrics.functional.image import structural_similarity_index_measure

    if min(pred.shape[2:]) < SSIM_WINDOW:
        raise ConfigError(
            f"SSIM input of spatial size {tuple(pred.shape[2:])} is too small: expected every side ≥ {SSIM_WINDOW} "
            "(the Gaussian window); decode at a larger size"
        )
    _, ssim_map = structural_similarity_index_measure(
        pred.float(), target.float(), data_range=1.0, reduction="none", return_full_image=True
    )
    pad = (SSIM_WINDOW - 1) // 2
    inside: tuple[EllipsisType | slice, ...] = (..., *[slice(pad, -pad)] * (pred.dim() - 2))
    interior = ssim_map[inside]
    return interior.flatten(1).mean(dim=1)


def reconstruction_metrics(decoded: Tensor, images: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """MSE, PSNR and SSIM per signal of ``decoded`` vs ``images``, both ``[B, D, *spatial]`` in [0, 1] → 3 × ``[B]``."""
    mse = (decoded - images).pow(2).flatten(1).mean(dim=1)
    if decoded.dim() >= 4 and min(decoded.shape[2:]) >= SSIM_WINDOW:
        s = ssim(decoded, images)
    else:
        s = torch.full((len(decoded),), float("nan"))
    return mse, psnr(decoded, images), s
