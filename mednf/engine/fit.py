"""Test-time fitting: one latent per signal, θ frozen, batched over signals (no drop_last).

For each batch: φ₀ = 0, then H SGD steps ``φ ← φ − α ∇_φ MSE(full context)``, the gradient from the
chunked hand-written backward of :mod:`mednf.engine.latent_grad` (θ is frozen, only ∇_φ is needed). With
``grad_rescale`` (the official code's test-time variant) each step's gradient of signal s is scaled by
``‖∇ on a random γ-subset‖ / ‖∇ on the full context‖`` of that signal. Subsets come from
:mod:`mednf.engine.context`, keyed by the signal's global index, so the latents do not depend on the batch size,
the order of batches or the rank that fits them.

Batches are sized to a memory budget unless a batch size is given; every signal is fitted, the last
batch may be smaller.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from mednf.engine import field as nf
from mednf.engine.allocator import fit_memory
from mednf.engine.config import FieldConfig, FitConfig
from mednf.engine.context import random_context
from mednf.engine.latent_grad import latent_gradient
from mednf.engine.meta import check_signals, mse_to_psnr, signal_mse
from mednf.engine.metrics import SSIM_WINDOW, ssim
from mednf.engine.planner import (
    CPU_CHUNK_ROWS,
    MemoryBudget,
    fit_chunk_rows,
    fit_signal_bytes,
    plan_fit_batch,
    resolve_budget,
)
from mednf.engine.precision import use_precision
from mednf.errors import ConfigError

_CPU_CHUNK_ROWS = CPU_CHUNK_ROWS  # (signal, point) rows per chunk of the latent gradient on the CPU


@dataclass
class FitResult:
    latents: Tensor  # [S, P] float32, on CPU
    mse: Tensor  # [S] full-context MSE of the clamped reconstruction
    psnr: Tensor  # [S] dB (data range 1)
    ssim: Tensor | None = None  # [S] when asked for (images/volumes with every side ≥ 11)


def auto_batch_size(cfg: FieldConfig, num_points: int, fit: FitConfig, device: torch.device, *,
                    budget: MemoryBudget | None = None, rows_out: int | None = None) -> int:
    """Signals per fit batch, from the memory planner (:mod:`mednf.engine.planner`).

    - an explicit ``fit.batch_size`` wins (a build's plan has already checked it against its budget);
    - else with ``fit.memory_budget_mb`` set and no ``budget``: that many MiB for the batch's working set,
      beyond what the process holds, at least one signal;
    - else the largest batch whose estimated peak stays inside ``budget`` (the whole process on the CPU,
      the device's memory on CUDA; default :func:`mednf.engine.planner.default_budget`), at most
      ``rows_out`` signals; a one-line ConfigError when not even one signal fits.
    """
    if fit.batch_size is not None:
        return fit.batch_size
    chunk_rows = fit_chunk_rows(device)
    if fit.memory_budget_mb is not None and budget is None:
        per_signal = fit_signal_bytes(cfg, num_points, chunk_rows)
        return max(1, int(fit.memory_budget_mb * 2**20 // per_signal))
    return plan_fit_batch(cfg, fit, num_points, device, budget=resolve_budget(budget, device),
                          rows_out=rows_out or 1024, chunk_rows=chunk_rows)


def fit_batch(
    params: nf.Params,
    targets: Tensor,
    coords: Tensor,
    cfg: FieldConfig,
    fit: FitConfig,
    signal_ids: Tensor,
    *,
    seed: int = 0,
    chunk_rows: int | None = None,
    return_recon: bool = False,
) -> tuple[Tensor, Tensor] | tuple[Tensor, Tensor, Tensor]:
    """Fit latents for one batch.

    Args:
        params: θ, without ``requires_grad``.
        targets: ``[B, N, D]`` on the grid ``coords [N, C]``.
        signal_ids: ``[B]`` global indices (keys of the rescaling subsets).
        chunk_rows: (signal, point) rows per chunk of the hand-written backward; None → 2048 on CPU
            (cache-sized, measured fastest here), all points at once on GPU.
    Returns:
        ``(φ [B, P], MSE of the clamped reconstruction [B])``, plus that reconstruction ``[B, N, D]``
        when ``return_recon``.
    """
    B, N = targets.shape[:2]
    field = nf.prepare(params, cfg)
    phi = targets.new_zeros(B, cfg.latent_dim)
    if chunk_rows is None and targets.device.type == "cpu":
        chunk_rows = _CPU_CHUNK_ROWS
    for step in range(fit.steps):
        weights = None
        if fit.grad_rescale:
            index = random_context(signal_ids, N, fit.rescale_ratio, seed=seed, step=step)  # [B, n]
            weights = targets.new_zeros(B, N).scatter_(1, index, N / index.shape[1])
        grad, sub_grad, _ = latent_gradient(field, phi, coords, targets, chunk_rows=chunk_rows,
                                            subset_weights=weights)
        if sub_grad is not None:
            grad *= (sub_grad.norm(dim=1) / (grad.norm(dim=1) + 1e-16))[:, None]
        phi = phi - fit.lr * grad
    with torch.no_grad():
        recon = nf.forward_prepared(field, phi, coords).clamp_(0.0, 1.0)
        mse = signal_mse(recon, targets)
    return (phi, mse, recon) if return_recon else (phi, mse)


def as_float_signals(signals: Tensor | np.ndarray) -> Tensor:
    """uint8 (0..255) or float (0..1) array/tensor → float32 tensor (no copy for float32 input)."""
    tensor = torch.as_tensor(signals)
    if tensor.dtype == torch.uint8:
        return tensor.to(torch.float32) / 255.0
    return tensor.to(torch.float32)


def fit_latents(
    params: nf.Params,
    signals: Tensor | np.ndarray,
    cfg: FieldConfig,
    fit: FitConfig,
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    first_index: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    with_ssim: bool = False,
    memory_budget: MemoryBudget | str | int | None = None,
) -> FitResult:
    """Fit a latent for every signal.

    Args:
        params: θ (any device; moved to ``device``).
        signals: ``[S, D, *spatial]`` float in [0, 1] or uint8; stays where it is, batches are moved.
        first_index: global index of ``signals[0]`` (keys of the rescaling subsets when sharded).
        on_batch: called with (signals done, total) after each batch, e.g. to drive a progress bar.
        with_ssim: also report SSIM per signal (:func:`mednf.engine.metrics.ssim`); NaN where it is undefined
            (1D signals, or a side shorter than the 11-tap window).
        memory_budget: sizes the batches when ``fit.batch_size`` is unset (:func:`auto_batch_size`; a size
            such as ``"4GB"``, or a :class:`~mednf.engine.planner.MemoryBudget`); None: the device's default.
    Returns:
        :class:`FitResult` with S latents, MSEs and PSNRs, in input order.
    """
    device = torch.device(device)
    if signals.ndim != cfg.in_dims + 2 or signals.shape[1] != cfg.out_dims:
        raise ConfigError(
            f"signals shape = {tuple(signals.shape)} is invalid: expected [S, {cfg.out_dims}, "
            f"{', '.join(['S'] * cfg.in_dims)}]; check channels (out_dims) and dimensionality (in_dims)"
        )
    theta = {k: v.detach().to(device) for k, v in params.items()}
    spatial = tuple(signals.shape[2:])
    coords = nf.coordinate_grid(spatial, device=device)
    total = signals.shape[0]
    budget = None if memory_budget is None else resolve_budget(memory_budget, device)
    batch = auto_batch_size(cfg, coords.shape[0], fit, device, budget=budget, rows_out=total)
    latents = torch.empty(total, cfg.latent_dim)
    mses = torch.empty(total)
    ssims = torch.full((total,), float("nan")) if with_ssim else None
    ssim_defined = cfg.in_dims >= 2 and min(spatial) >= SSIM_WINDOW
    for start in range(0, total, batch):
        stop = min(start + batch, total)
        chunk = as_float_signals(signals[start:stop])
        check_signals(chunk, f"signals[{start}:{stop}]")  # before the transfer: no device sync for it
        chunk = chunk.to(device)
        ids = torch.arange(first_index + start, first_index + stop, device=device, dtype=torch.int64)
        allocator = fit_memory() if device.type == "cpu" else contextlib.nullcontext()
        with use_precision(cfg.precision, device), allocator:
            phi, mse, recon = fit_batch(theta, nf.to_points(chunk), coords, cfg, fit, ids, seed=seed, return_recon=True)
        if ssims is not None and ssim_defined:
            ssims[start:stop] = ssim(nf.from_points(recon, spatial), chunk).cpu()
        latents[start:stop] = phi.cpu()
        mses[start:stop] = mse.cpu()
        if on_batch is not None:
            on_batch(stop, total)
    return FitResult(latents, mses, mse_to_psnr(mses), ssims)
