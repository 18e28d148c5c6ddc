"""Test-time fitting: one latent per signal, θ frozen, batched over signals (no drop_last).

For each batch: φ₀ = 0 (or θ's learned initial latent), then H SGD steps ``φ ← φ − α ∇_φ MSE(full context)``
(α per dimension with θ's Meta-SGD rates, :meth:`mednf.engine.field.PreparedField.latent_step`), the gradient from the
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
from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from mednf.engine import field as nf
from mednf.engine.allocator import fit_memory
from mednf.engine.compiled import EAGER, CompileReport, self_check
from mednf.engine.config import FieldConfig, FitConfig
from mednf.engine.context import observed_context_weights, random_context
from mednf.engine.execution import Execution, given_or_resolved
from mednf.engine.fused_latent_grad import fit_kernel, fit_modes, fused_latent_gradient, note_failure
from mednf.engine.latent_grad import latent_gradient
from mednf.engine.memory import MemoryBudget, resolve_budget
from mednf.engine.metrics import SSIM_WINDOW, check_signals, mse_to_psnr, signal_mse, ssim
from mednf.engine.planner import CPU_CHUNK_ROWS, fit_chunk_rows, fit_signal_bytes, plan_fit_batch
from mednf.engine.precision import FP32, Precision, matmul_switches
from mednf.engine.transfer import download_into, host_buffer, upload, wait
from mednf.errors import ConfigError

_CPU_CHUNK_ROWS = CPU_CHUNK_ROWS  # (signal, point) rows per chunk of the latent gradient on the CPU


@dataclass
class FitResult:
    """A fit's outcome: latents ``[S, P]`` and per-signal MSE/PSNR (and SSIM when asked) ``[S]``, in input order."""

    latents: Tensor  # [S, P] float32, on CPU
    mse: Tensor  # [S] full-context MSE of the clamped reconstruction
    psnr: Tensor  # [S] dB (data range 1)
    ssim: Tensor | None = None  # [S] when asked for (images/volumes with every side ≥ 11)
    kernel: str = "eager"  # the latent-gradient kernel that ran: "compiled" or "eager" (fused_latent_grad)
    compile_report: CompileReport | None = None  # the compiled kernel's self-check (None: none was run)


def auto_batch_size(cfg: FieldConfig, num_points: int, fit: FitConfig, device: torch.device, *,
                    budget: MemoryBudget | None = None, rows_out: int | None = None) -> int:
    """Signals per fit batch, from the memory planner (:mod:`mednf.engine.planner`).

    - an explicit ``fit.batch_size`` wins (a build's plan has already checked it against its budget);
    - else with ``fit.memory_budget_mb`` set and no ``budget``: that many MiB for the batch's working set,
      beyond what the process holds, at least one signal;
    - else the largest batch whose estimated peak stays inside ``budget`` (the whole process on the CPU,
      the device's memory on CUDA; default :func:`mednf.engine.memory.default_budget`), at most
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


class FittedBatch(NamedTuple):
    """What :func:`fit_batch` returns for one batch of B signals of N points and D channels."""

    latents: Tensor  # φ [B, P]
    mse: Tensor  # [B] of the clamped reconstruction (over the observed points when a mask is given)
    recon: Tensor  # the clamped reconstruction [B, N, D]


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
    observed: Tensor | None = None,
    precision: Precision = FP32,
    kernel: str | None = None,
) -> FittedBatch:
    """Fit latents for one batch.

    Args:
        params: θ, without ``requires_grad``.
        targets: ``[B, N, D]`` at the points ``coords``.
        coords: ``[N, C]`` shared (a grid) or ``[B, N, C]`` per signal.
        cfg: the field's configuration.
        fit: the fitting configuration (steps H, learning rate α, gradient rescaling).
        signal_ids: ``[B]`` global indices (keys of the rescaling subsets).
        chunk_rows: (signal, point) rows per chunk of the eager hand-written backward; None → 2048 on CPU
            (cache-sized, measured fastest here), all points at once on GPU. The compiled kernel
            (:func:`mednf.engine.fused_latent_grad.fit_kernel`: bf16 on the CPU by default) has fixed chunks.
        observed: ``[B, N]`` bool, True at the points that count (a mask, or the real points of a padded
            set; every row needs one); the loss, the rescaling subsets and the MSE use only those.
            None: every point.
        seed: seed of the rescaling subsets (:mod:`mednf.engine.context`).
        precision: the resolved precision of the products (:func:`mednf.engine.field.prepare`).
        kernel: the latent gradient's kernel: ``"eager"``, a ``torch.compile`` mode of the compiled one (which
            then raises if it cannot compile), or None: as :func:`~mednf.engine.fused_latent_grad.fit_kernel`
            says, in the default mode, falling back to eager with a warning.

    Returns:
        :class:`FittedBatch`: φ ``[B, P]``, the MSE ``[B]`` of the clamped reconstruction and that
        reconstruction ``[B, N, D]`` (computed for the MSE anyway).
    """
    B, N = targets.shape[:2]
    field = nf.prepare(params, cfg, precision)
    phi = field.start_latents(B, targets)
    if chunk_rows is None and targets.device.type == "cpu":
        chunk_rows = _CPU_CHUNK_ROWS
    point_weights = None
    if observed is not None:
        counts = observed.sum(dim=1, keepdim=True).to(targets.dtype)  # [B, 1]
        point_weights = observed.to(targets.dtype) * (N / counts)  # [B, N]: N/m on the observed points
    if kernel is None:
        kernel = "default" if fit_kernel(field.precision, targets.device) == "compiled" else EAGER
        checked = False  # the kernel falls back to eager by itself
    else:
        checked = True  # a self-check is watching: failures must show
    for step in range(fit.steps):
        weights = None
        if fit.grad_rescale and observed is not None:
            weights = observed_context_weights(signal_ids, observed, fit.rescale_ratio, seed=seed, step=step)
        elif fit.grad_rescale:
            index = random_context(signal_ids, N, fit.rescale_ratio, seed=seed, step=step)  # [B, n]
            weights = targets.new_zeros(B, N).scatter_(1, index, N / index.shape[1])
        if kernel != EAGER:
            grad, sub_grad, _ = fused_latent_gradient(field, phi, coords, targets, subset_weights=weights,
                                                      point_weights=point_weights, mode=kernel, fallback=not checked)
        else:
            grad, sub_grad, _ = latent_gradient(field, phi, coords, targets, chunk_rows=chunk_rows,
                                                subset_weights=weights, point_weights=point_weights)
        if sub_grad is not None:
            grad *= (sub_grad.norm(dim=1) / (grad.norm(dim=1) + 1e-16))[:, None]
        phi = phi - field.latent_step(fit.lr, grad)
    with torch.no_grad():
        recon = nf.forward_prepared(field, phi, coords).clamp_(0.0, 1.0)
        if point_weights is None:
            mse = signal_mse(recon, targets)
        else:
            mse = ((recon - targets).square() * point_weights[..., None]).mean(dim=(1, 2))
    return FittedBatch(phi, mse, recon)


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
    device: torch.device | str | None = None,
    execution: Execution | None = None,
    seed: int = 0,
    first_index: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    with_ssim: bool = False,
    memory_budget: MemoryBudget | str | int | None = None,
    mask: Tensor | np.ndarray | None = None,
) -> FitResult:
    """Fit a latent for every signal.

    Args:
        params: θ (any device; moved to ``device``).
        signals: ``[S, D, *spatial]`` float in [0, 1] or uint8; stays where it is, batches are moved.
        cfg: the field's configuration.
        fit: the fitting configuration (:func:`fit_batch`).
        device: where the fit runs when no ``execution`` is given (default CPU); ``cfg.precision`` is then
            resolved here for it.
        execution: where the fit runs and in which resolved precision (a build resolves its
            :class:`~mednf.engine.execution.Execution` once).
        seed: seed of the rescaling subsets.
        first_index: global index of ``signals[0]`` (keys of the rescaling subsets when sharded).
        on_batch: called with (signals done, total) after each batch, e.g. to drive a progress bar.
        with_ssim: also report SSIM per signal (:func:`mednf.engine.metrics.ssim`); NaN where it is undefined
            (1D signals, or a side shorter than the 11-tap window, or a ``mask``).
        memory_budget: sizes the batches when ``fit.batch_size`` is unset (:func:`auto_batch_size`; a size
            such as ``"4GB"``, or a :class:`~mednf.engine.memory.MemoryBudget`); None: the device's default.
        mask: ``[S, *spatial]`` bool, True = observed: fit each signal to its observed pixels only (the
            values elsewhere are ignored); MSE and PSNR are then over the observed pixels.

    Returns:
        :class:`FitResult` with S latents, MSEs and PSNRs, in input order.
    """
    execution = given_or_resolved(execution, cfg.precision, device, stacklevel=2)
    device = execution.device
    if signals.ndim != cfg.in_dims + 2 or signals.shape[1] != cfg.out_dims:
        raise ConfigError(
            f"signals shape = {tuple(signals.shape)} is invalid: expected [S, {cfg.out_dims}, "
            f"{', '.join(['S'] * cfg.in_dims)}]; check channels (out_dims) and dimensionality (in_dims)"
        )
    spatial = tuple(signals.shape[2:])
    if mask is not None:
        mask = check_mask(mask, (signals.shape[0], *spatial))
    coords = nf.coordinate_grid(spatial, device=device)
    ssim_defined = with_ssim and mask is None and cfg.in_dims >= 2 and min(spatial) >= SSIM_WINDOW

    def batch(start: int, stop: int) -> _Batch:
        raw = torch.as_tensor(signals[start:stop])
        if raw.dtype == torch.uint8 and mask is None:  # uploaded as bytes, scaled there as as_float_signals does
            chunk = as_float_signals(upload(raw, device))
        else:
            chunk = as_float_signals(raw)
            if mask is not None:  # what is not observed is ignored, even NaN
                chunk = chunk.masked_fill(~mask[start:stop, None].to(chunk.device), 0.0)
            if chunk.device.type == "cpu":
                check_signals(chunk, f"signals[{start}:{stop}]")  # before the transfer: no device sync for it
            chunk = upload(chunk, device)
        if mask is None:
            return _Batch(coords, nf.to_points(chunk), None, chunk if ssim_defined else None)
        seen = mask[start:stop].reshape(stop - start, -1).to(device)  # [b, N]
        return _Batch(*compact_points(coords, nf.to_points(chunk), seen), None)

    return _fit_batches(params, signals.shape[0], coords.shape[0], batch, cfg, fit, execution=execution, seed=seed,
                        first_index=first_index, on_batch=on_batch, with_ssim=with_ssim,
                        memory_budget=memory_budget)


def fit_points(
    params: nf.Params,
    coords: Tensor | np.ndarray,
    values: Tensor | np.ndarray,
    cfg: FieldConfig,
    fit: FitConfig,
    *,
    observed: Tensor | np.ndarray | None = None,
    device: torch.device | str | None = None,
    execution: Execution | None = None,
    seed: int = 0,
    first_index: int = 0,
    on_batch: Callable[[int, int], None] | None = None,
    memory_budget: MemoryBudget | str | int | None = None,
) -> FitResult:
    """Fit a latent for every signal from values at arbitrary points (irregular sampling).

    Args:
        params: θ (any device; moved to the execution's device).
        coords: ``[S, M, C]`` points of each signal (or ``[M, C]`` shared), in [-1, 1]^C like the grid of
            :func:`mednf.engine.field.coordinate_grid` (corner pixels at ±1).
        values: ``[S, M, D]`` float in [0, 1] (or uint8).
        cfg: the field's configuration.
        fit: the fitting configuration (:func:`fit_batch`).
        observed: ``[S, M]`` bool, False at padding (signals with fewer than M points; padded values and
            coordinates are ignored, even NaN); None: all real.
        device: as for :func:`fit_latents`.
        execution: as for :func:`fit_latents`.
        seed: seed of the rescaling subsets.
        first_index: global index of the first signal (keys of the rescaling subsets when sharded).
        on_batch: called with (signals done, total) after each batch.
        memory_budget: sizes the batches when ``fit.batch_size`` is unset, as for :func:`fit_latents`.

    Returns:
        :class:`FitResult` (MSE and PSNR over each signal's real points; no SSIM).
    """
    execution = given_or_resolved(execution, cfg.precision, device, stacklevel=2)
    device = execution.device
    coords, values = torch.as_tensor(coords), torch.as_tensor(values)
    S = values.shape[0] if values.ndim == 3 else -1
    if values.ndim != 3 or values.shape[2] != cfg.out_dims:
        raise ConfigError(f"values shape = {tuple(values.shape)} is invalid: expected [S, M, {cfg.out_dims}] "
                          f"(signals, points, channels)")
    if coords.shape not in ((S, values.shape[1], cfg.in_dims), (values.shape[1], cfg.in_dims)):
        raise ConfigError(f"coords shape = {tuple(coords.shape)} is invalid: expected [{S}, {values.shape[1]}, "
                          f"{cfg.in_dims}] or [{values.shape[1]}, {cfg.in_dims}] for values {tuple(values.shape)}")
    if observed is not None:
        observed = check_mask(observed, tuple(values.shape[:2]))
        if coords.ndim == 3:  # padded points may hold anything
            coords = coords.masked_fill(~observed[..., None].to(coords.device), 0.0)
    if not coords.is_floating_point() or not bool(torch.isfinite(coords).all()) or float(coords.abs().max()) > 1:
        raise ConfigError("coords must be finite floats in [-1, 1] (the grid's corner pixels are at ±1); "
                          "scale them, e.g. 2 * pixel / (size - 1) - 1")
    coords = coords.to(torch.float32)

    def batch(start: int, stop: int) -> _Batch:
        chunk = as_float_signals(values[start:stop])
        points = coords if coords.ndim == 2 else coords[start:stop]
        if observed is not None:  # padding is ignored, even NaN
            chunk = chunk.masked_fill(~observed[start:stop, :, None].to(chunk.device), 0.0)
        check_signals(chunk, f"values[{start}:{stop}]")
        points = points.to(device)
        if observed is None:
            return _Batch(points, chunk.to(device), None, None)
        return _Batch(*compact_points(points, chunk.to(device), observed[start:stop].to(device)), None)

    return _fit_batches(params, S, values.shape[1], batch, cfg, fit, execution=execution, seed=seed,
                        first_index=first_index, on_batch=on_batch, with_ssim=False,
                        memory_budget=memory_budget)


def check_mask(mask: Tensor | np.ndarray, shape: tuple[int, ...]) -> Tensor:
    """A bool mask of ``shape`` with at least one True per signal, as a CPU tensor (ConfigError otherwise)."""
    mask = torch.as_tensor(np.asarray(mask) if not isinstance(mask, Tensor) else mask)
    if mask.dtype != torch.bool:
        raise ConfigError(f"mask has dtype {mask.dtype}: expected bool (True = observed); convert it with "
                          "mask.astype(bool)")
    if tuple(mask.shape) != shape:
        raise ConfigError(f"mask shape = {tuple(mask.shape)} is invalid: expected {list(shape)} (one flag per "
                          "signal and point)")
    empty = ~mask.reshape(shape[0], -1).any(dim=1)
    if bool(empty.any()):
        rows = torch.nonzero(empty).flatten()[:5].tolist()
        raise ConfigError(f"mask observes no point of {int(empty.sum())} signal(s) (rows {rows}): expected at "
                          "least one True per signal; drop those signals")
    return mask.cpu()


def compact_points(coords: Tensor, values: Tensor, observed: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Each signal's observed points first, padded to the batch's largest count (the fit skips the rest).

    Args:
        coords: ``[N, C]`` shared or ``[B, N, C]``.
        values: ``[B, N, D]``.
        observed: ``[B, N]`` bool.

    Returns:
        ``(coords [B, M, C], values [B, M, D], observed [B, M])``, M = max observed count: the observed
        points of each signal in their original order, then as padding its first unobserved points
        (observed False, so the fit gives them weight 0).
    """
    B, N = observed.shape
    M = int(observed.sum(dim=1).max())
    order = torch.argsort((~observed).to(torch.int8), dim=1, stable=True)[:, :M]  # [B, M] observed first
    keep = torch.gather(observed, 1, order)
    coords = coords.expand(B, N, coords.shape[-1]) if coords.ndim == 2 else coords
    take = order[..., None]
    return (torch.gather(coords, 1, take.expand(-1, -1, coords.shape[-1])),
            torch.gather(values, 1, take.expand(-1, -1, values.shape[-1])), keep)


@dataclass
class _Batch:
    coords: Tensor  # [N, C] or [b, N, C]
    targets: Tensor  # [b, N, D]
    observed: Tensor | None  # [b, N] bool
    signals: Tensor | None  # [b, D, *spatial], for SSIM on the grid


def _fit_batches(params: nf.Params, total: int, num_points: int, make_batch: Callable[[int, int], _Batch],
                 cfg: FieldConfig, fit: FitConfig, *, execution: Execution, seed: int, first_index: int,
                 on_batch: Callable[[int, int], None] | None, with_ssim: bool,
                 memory_budget: MemoryBudget | str | int | None) -> FitResult:
    """The batch loop of :func:`fit_latents` and :func:`fit_points`: ``make_batch(start, stop)`` gives the
    points of signals ``start..stop`` on the execution's device."""
    device, precision = execution.device, execution.precision
    theta = {k: v.detach().to(device) for k, v in params.items()}
    budget = None if memory_budget is None else resolve_budget(memory_budget, device)
    size = auto_batch_size(cfg, num_points, fit, device, budget=budget, rows_out=total)
    latents = host_buffer((total, cfg.latent_dim), torch.float32, device)  # filled by queued copies …
    mses = host_buffer((total,), torch.float32, device)
    ssims = host_buffer((total,), torch.float32, device, fill=float("nan")) if with_ssim else None
    kernel = EAGER if total == 0 or fit_kernel(precision, device) == "eager" else None  # None: the self-check decides
    report = None
    for start in range(0, total, size):
        stop = min(start + size, total)
        part = make_batch(start, stop)
        ids = torch.arange(first_index + start, first_index + stop, device=device, dtype=torch.int64)
        allocator = fit_memory() if device.type == "cpu" else contextlib.nullcontext()

        def run(chosen: str) -> FittedBatch:
            return fit_batch(theta, part.targets, part.coords, cfg, fit, ids, seed=seed, observed=part.observed,
                             precision=precision, kernel=chosen)

        with matmul_switches(precision), allocator:
            if kernel is None:
                kernel, (phi, mse, recon), report = _checked_kernel(run, cfg, precision, device)
            else:
                phi, mse, recon = run(kernel)
        if ssims is not None and part.signals is not None:
            download_into(ssims[start:stop], ssim(nf.from_points(recon, part.signals.shape[2:]), part.signals))
        download_into(latents[start:stop], phi)
        download_into(mses[start:stop], mse)
        if on_batch is not None:
            on_batch(stop, total)
    wait(device)  # … read from here on: one wait per fit, not one per batch
    return FitResult(latents, mses, mse_to_psnr(mses), ssims, "eager" if kernel in (None, EAGER) else "compiled",
                     report)


_FIT_CHECKS: dict[tuple[object, ...], CompileReport] = {}  # one self-check per field, precision, device and process


def fit_compile_report(cfg: FieldConfig, precision: Precision, device: torch.device) -> CompileReport | None:
    """The self-check of the compiled fit kernel for this field, precision and device in this process, if one ran."""
    return _FIT_CHECKS.get((cfg, precision.effective, device.type))


def _checked_kernel(run: Callable[[str], FittedBatch], cfg: FieldConfig, precision: Precision,
                    device: torch.device) -> tuple[str, FittedBatch, CompileReport]:
    """The compiled fit kernel's mode after its self-check on this batch (the first of a fit), once per field,
    precision and device in a process; later fits reuse the verdict."""
    key = (cfg, precision.effective, device.type)
    earlier = _FIT_CHECKS.get(key)
    if earlier is not None:
        return earlier.used, run(earlier.used), earlier
    kernel, batch, report = self_check("fit", run, lambda result: (result.latents, result.mse), fit_modes(device),
                                       precision.effective, warn=False)
    _FIT_CHECKS[key] = report
    if kernel == EAGER:
        note_failure("; ".join(f"{mode}: {why}" for mode, why in report.tried.items()))
    return kernel, batch, report
