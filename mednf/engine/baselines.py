"""Baselines beside every quality number: what PSNR a split gets without per-sample latents.

- **mean image**: every sample reconstructed as the mean training image;
- **zero latent**: every sample reconstructed as the shared network alone (φ = 0, clamped to [0, 1] like
  the fit's reconstructions).

A dataset whose latents do not clearly beat the mean image has learned nothing per sample;
:func:`learns_per_sample` is the test a build applies to its validations. Means are over per-sample PSNRs,
as the splits' ``psnr_mean``.

Two causes need opposite fixes, and :func:`diagnose_no_learning` tells them apart before a build advises one:

- **too slow**: the inner learning rate α is too small for the latent size, φ barely moves, and the
  validation stays near the shared network's own output (meta-gradient norm steady or falling);
- **diverging**: α is too large, the inner steps overshoot and make the reconstruction worse. Measured on the
  tiny phantom config (K3 L32 P32, 200 iterations): at α = 10 the meta-gradient norm grew 13× (69 → 900) and
  the validation ended 8 dB *below* the mean image; at α = 1000 the norm was 5·10⁵ from the first iteration
  and did not grow. A healthy run (α = 0.1) and a too-slow one (α = 1e-7) both start near 1.5 and fall to
  ≈ 0.1.

The evidence is scale-free: the meta-gradient norm's growth, and how far the fitted latents move the sine
arguments. φ enters every sine layer as a bias shift ``S φ`` (radians added to ``z_k``); the RMS of that
shift over the validation subset (:func:`latent_shift_rms`) measured 1e-7 rad at α = 1e-7, 0.28 at α = 0.1,
26 at α = 10 and 2000 at α = 1000 (the runs above), and 0.10–0.39 rad in healthy builds (PhantomNF as
shipped 0.39, PneumoniaNF and BreastNF at `cpu-small` 0.10 and 0.15). Above :data:`SHIFT_LIMIT_RAD` (π: half
a period) a latent no longer modulates the field smoothly: the inner steps overshoot.
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
SHIFT_LIMIT_RAD = math.pi  # RMS bias shift S φ of fitted latents above which the inner loop overshoots
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
        """The diagnosis as JSON-ready fields (non-finite norms as strings)."""
        return {"cause": self.cause, "evidence": self.evidence, "grad_norm_early": _json_float(self.grad_norm_early),
                "grad_norm_late": _json_float(self.grad_norm_late)}


def _json_float(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)  # JSON has no NaN/inf


def latent_shift_rms(shift_weight: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """Per signal, the RMS of the bias shift ``S φ`` that latents ``[B, P]`` add to the sine arguments (radians),
    with ``shift_weight`` ``S`` ``[(K-1)·L, P]`` → ``[B]``."""
    shift = latents.to(shift_weight.dtype) @ shift_weight.t()  # [B, (K-1)·L]
    return shift.square().mean(dim=1).sqrt()


def diagnose_no_learning(grad_norms: Sequence[float], shift_rms: float | None = None) -> LearningDiagnosis:
    """The cause of a run whose best validation is not clearly above the mean image (module docstring).

    ``grad_norms`` are the meta-gradient norms before clipping, one per iteration so far (NaN where one was
    not finite); ``shift_rms`` the largest mean :func:`latent_shift_rms` of a validation so far. Diverging when
    a norm is not finite, when the last tenth's median is :data:`DIVERGING_GROWTH`× the first tenth's (both
    > 0), or when the shift exceeds :data:`SHIFT_LIMIT_RAD`; too slow otherwise.
    """
    norms = np.asarray(grad_norms, np.float64)
    if norms.size == 0:
        early = late = float("nan")
    else:
        window = max(1, norms.size // 10)
        early, late = float(np.median(norms[:window])), float(np.median(norms[-window:]))
    if norms.size and not np.isfinite(norms).all():
        return LearningDiagnosis("diverging", early, late, "the meta-gradient was not finite")
    if norms.size and early > 0 and late >= DIVERGING_GROWTH * early:
        return LearningDiagnosis("diverging", early, late,
                                 f"the meta-gradient norm grew {late / early:.0f}×, {early:.3g} → {late:.3g}")
    if shift_rms is not None and not math.isfinite(shift_rms):
        return LearningDiagnosis("diverging", early, late, "the fitted latents were not finite")
    if shift_rms is not None and shift_rms > SHIFT_LIMIT_RAD:
        return LearningDiagnosis("diverging", early, late,
                                 f"the fitted latents shift the sine arguments by {shift_rms:.3g} rad RMS, more "
                                 "than half a period")
    moved = f", latents shift the sine arguments by {shift_rms:.2g} rad RMS" if shift_rms is not None else ""
    return LearningDiagnosis("too_slow", early, late,
                             f"meta-gradient norm {early:.3g} → {late:.3g}, not growing{moved}")
