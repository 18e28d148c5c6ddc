"""Baselines beside every quality number: what PSNR a split gets without per-sample latents.

- **mean image**: every sample reconstructed as the mean training image;
- **zero latent**: every sample reconstructed as the shared network alone (φ = 0, clamped to [0, 1] like
  the fit's reconstructions).

A dataset whose latents do not clearly beat the mean image has learned nothing per sample;
:func:`learns_per_sample` is the test a build applies to its validations. Means are over per-sample PSNRs,
as the splits' ``psnr_mean``.

Two causes need opposite fixes, and :func:`diagnose_no_learning` tells them apart before a build advises one:

- **too slow**: the inner learning rate α is too small for the latent size, φ barely moves, and the shared
  network converges to the mean image (validation ≈ mean-image PSNR, meta-gradient norm steady or falling);
- **diverging**: α is too large, the inner steps overshoot and make the reconstruction worse. Measured on the
  tiny phantom config (K3 L32 P32, 200 iterations): at α = 10 the meta-gradient norm grew 13× (69 → 900) and
  the validation ended 8 dB *below* the mean image; at α = 1000 the norm was 5·10⁵ from the first iteration.
  A healthy run (α = 0.1) and a too-slow one (α = 1e-7) both start near 1.5 and fall to ≈ 0.1.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from mednf.engine import field as nf
from mednf.engine.config import FieldConfig

MARGIN_DB = 1.0  # "clearly above" the mean-image baseline
DIVERGING_GROWTH = 10.0  # meta-gradient norm late / early (medians of the first and last tenth) that means divergence
DIVERGING_BELOW_DB = 3.0  # a best validation this far below the mean image means the inner steps make things worse
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


@dataclass(frozen=True)
class LearningDiagnosis:
    """Why a build's latents do not learn per sample, and what to change."""

    cause: str  # "diverging" (α too large) | "too_slow" (α, steps or iterations too small)
    grad_norm_early: float  # median meta-gradient norm of the first tenth of the iterations (before clipping)
    grad_norm_late: float  # ... of the last tenth
    evidence: str  # the measured reason, one clause

    def advice(self) -> str:
        """The fix, as a clause for a ``warning:`` line."""
        if self.cause == "diverging":
            return (f"the inner loop diverges ({self.evidence}); lower the inner learning rate "
                    "(--set meta.inner_lr=… --set fit.lr=…, e.g. ÷10) or the meta learning rate (--set meta.meta_lr=…)")
        return (f"the latents barely learn per sample ({self.evidence}); raise the inner learning rate "
                "(--set meta.inner_lr=… --set fit.lr=…, e.g. ×10), the inner/fit steps, the iterations (--steps), "
                "or use a larger preset (`mednf presets`)")

    def as_dict(self) -> dict[str, float | str]:
        return {"cause": self.cause, "evidence": self.evidence, "grad_norm_early": _json_float(self.grad_norm_early),
                "grad_norm_late": _json_float(self.grad_norm_late)}


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf


def diagnose_no_learning(best_val_psnr: float, mean_image_psnr: float,
                         grad_norms: Sequence[float]) -> LearningDiagnosis:
    """The cause of a run whose best validation is not clearly above the mean image (see the module docstring).

    ``grad_norms`` are the meta-gradient norms before clipping, one per iteration so far (NaN where one was not
    finite). Diverging when any is not finite, when the last tenth's median is :data:`DIVERGING_GROWTH`× the
    first tenth's, or when the best validation is :data:`DIVERGING_BELOW_DB` below the mean image.
    """
    norms = np.asarray(grad_norms, np.float64)
    if norms.size == 0:
        early = late = float("nan")
    else:
        window = max(1, norms.size // 10)
        early, late = float(np.median(norms[:window])), float(np.median(norms[-window:]))
    below = mean_image_psnr - best_val_psnr
    if norms.size and not np.isfinite(norms).all():
        return LearningDiagnosis("diverging", early, late, "the meta-gradient was not finite")
    if norms.size and late >= DIVERGING_GROWTH * early:
        return LearningDiagnosis("diverging", early, late,
                                 f"the meta-gradient norm grew {late / early:.0f}×, {early:.3g} → {late:.3g}")
    if below >= DIVERGING_BELOW_DB:
        return LearningDiagnosis("diverging", early, late,
                                 f"the fitted validation is {below:.1f} dB below the mean image")
    return LearningDiagnosis("too_slow", early, late,
                             f"meta-gradient norm {early:.3g} → {late:.3g}, not growing")
