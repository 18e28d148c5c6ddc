"""The fit's ∇_φ with its elementwise passes fused by ``torch.compile`` (Inductor), for the CPU.

Same maths as :func:`mednf.engine.latent_grad.latent_gradient` (the eager reference it is tested against),
same arguments and results. Why a second kernel: in bf16 the fit's products run on the matrix units and what
is left is about eight memory passes per layer (casts, bias add, residual, cosine product, …) around one sine
and one cosine. Inductor (torch's own compiler; chosen over a hand-written C++ extension because it is
maintained with torch and needs nothing beyond the C++ compiler it already uses) turns them into one loop per
layer and direction, which made a latent-gradient step ≈ 1.5× faster in bf16 (benchmarks/RESULTS.md, "The
bf16 fit, fused").

Layout. The points of a batch are cut into *blocks* of ``n`` points of one signal (``n`` = min(N, 32)), and
a *chunk* is ``G = 1024 / n`` blocks ``[G, n]`` — so every chunk has the same shape whatever the batch size,
the number of points or the mask: one compilation per field configuration (K, L, C, D) and process, and
Inductor's on-disk cache makes it quick in later processes. A signal's last block and the batch's last chunk
are padded with points of weight 0: each point's backward is independent and linear in its error, so a
point of weight 0 adds exactly nothing.

When (:func:`fit_kernel`, ``MEDNF_FIT_KERNEL=auto|eager|compiled``): ``auto`` (default) uses it for the bf16
fit on the CPU, where it pays, and wherever ``MEDNF_COMPILE`` asks for compiled code (:mod:`mednf.engine.compiled`:
on CUDA by default, where the whole batch is one chunk — one block of N points per signal — and CUDA graphs
are tried first); fp32 on the CPU keeps the eager kernel, the reference numerics (``compiled`` uses it for fp32
too, ≈ 1.2× there). A fit checks the compiled kernel against the eager one on its first batch
(:func:`mednf.engine.fit.fit_latents`); if Inductor cannot compile (no C++ compiler, …) or the two differ,
the fit says so once and runs the eager kernel.
"""

from __future__ import annotations

import math
import os
import warnings

import torch
from torch import Tensor

from mednf.engine.compiled import compiled, modes, wanted
from mednf.engine.field import PreparedField, check_coords, layer_biases
from mednf.engine.latent_grad import latent_gradient
from mednf.engine.planner import CPU_CHUNK_ROWS
from mednf.engine.precision import Precision
from mednf.errors import ConfigError

CHUNK_ROWS = 1024  # (signal, point) rows per compiled chunk: 1 MiB per fp32 [rows, 256] tensor, L2-sized here
BLOCK_POINTS = 32  # points of one signal per block
KERNELS = ("auto", "eager", "compiled")
ENV = "MEDNF_FIT_KERNEL"


class FitKernelWarning(UserWarning):
    """The compiled fit kernel could not be used; the fit runs the eager kernel (the same maths)."""


_STATE: dict[str, str | None] = {"failed": None}  # why compiling failed in this process, once it has


def requested_kernel() -> str:
    """``MEDNF_FIT_KERNEL`` (default ``auto``); a one-line ConfigError for anything else."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in KERNELS:
        raise ConfigError(f"{ENV} = {value!r} is invalid: expected one of {', '.join(KERNELS)}; unset it for auto")
    return value


def fit_kernel(precision: Precision, device: torch.device) -> str:
    """Which kernel a fit in ``precision`` (the resolved one) on ``device`` runs: ``"compiled"`` or ``"eager"``
    (before the self-check of :func:`mednf.engine.fit.fit_latents`, which may still fall back to eager)."""
    requested = requested_kernel()
    if requested == "eager" or _STATE["failed"] is not None:
        return "eager"
    if precision.measures_parts:  # measurement-only bf16 parts live in the eager kernel only
        return "eager"
    if requested == "compiled" or wanted(device):  # MEDNF_COMPILE: auto compiles on CUDA, on everywhere
        return "compiled"
    return "compiled" if precision.bf16 and device.type == "cpu" else "eager"


def fit_modes(device: torch.device) -> tuple[str, ...]:
    """The compile modes a fit's self-check tries: CUDA graphs, then plain fused kernels on CUDA; the CPU's
    fixed chunks take the default mode."""
    return modes(device, graphs=True)


def note_failure(why: str) -> None:
    """The compiled kernel is not used in this process (a failed compile or self-check): one warning, recorded."""
    _STATE["failed"] = why
    warnings.warn(f"the compiled fit kernel is not available ({why}); the fit runs the eager kernel (same maths, "
                  f"slower); set {ENV}=eager to skip the attempt", FitKernelWarning, stacklevel=3)


def kernel_record(kernel: str) -> dict[str, str]:
    """What a build records about the kernel its fit ran (after the fit: a failed compilation shows)."""
    if kernel == "compiled" and _STATE["failed"] is not None:
        return {"kernel": "eager", "why": f"compiling failed: {_STATE['failed']}"}
    return {"kernel": kernel} | ({"compiler": "torch.compile (inductor)"} if kernel == "compiled" else {})


def _chunk_gradient(x: Tensor, biases: Tensor, targets: Tensor, point_weights: Tensor, sums: Tensor,
                    first_weight: Tensor, hidden: tuple[Tensor, ...], last_weight: Tensor, last_bias: Tensor,
                    scale: Tensor) -> tuple[Tensor, Tensor]:
    """One chunk of G blocks of n points (the function that is compiled).

    Args:
        x: ``[G, n, C]`` coordinates.
        biases: ``[G, K-1, 1, L]`` each block's signal's layer biases.
        targets: ``[G, n, D]``.
        point_weights: ``[G, n]`` (1, or N/m for masks; 0 = padding).
        sums: ``[G, S, n]`` weights of the S sums over points (row 0: every point; row 1: the subset).
        first_weight: ``[L, C]``.
        hidden: K-2 tensors ``[L, L]`` (bf16 or fp32: the products' format).
        last_weight: ``[D, L]``, the output layer.
        last_bias: ``[D]``.
        scale: 0-dim, ∂MSE/∂output = 2 / (N·D).

    Returns:
        ``(∂L/∂bias [G, S, K-1, L], Σ weighted squared error [G])``.
    """
    cosines = []
    z = torch.matmul(x, first_weight.t()) + biases[:, 0]  # [G, n, L]
    cosines.append(torch.cos(z))
    h = torch.sin(z)
    for k, weight in enumerate(hidden, start=1):
        z = torch.matmul(h.to(weight.dtype), weight.t()).to(h.dtype) + biases[:, k]
        cosines.append(torch.cos(z))
        h = h + torch.sin(z)
    error = torch.matmul(h, last_weight.t()) + last_bias - targets  # [G, n, D]
    squared = (error.square() * point_weights[..., None]).sum(dim=(1, 2))
    grad_h = torch.matmul(error * (point_weights[..., None] * scale), last_weight)  # [G, n, L]
    grads = []
    for k in range(len(hidden), -1, -1):
        grad_z = cosines[k] * grad_h
        grads.append(torch.bmm(sums, grad_z))  # [G, S, L]
        if k > 0:
            weight = hidden[k - 1]
            grad_h = grad_h + torch.matmul(grad_z.to(weight.dtype), weight).to(grad_h.dtype)
    return torch.stack(grads[::-1], dim=2), squared


def _blocks(values: Tensor, n: int, total: int) -> Tensor:
    """``[B, N, ...]`` → ``[total, n, ...]``: each signal's points in blocks of n (its last one padded with
    zeros), then zero blocks up to ``total``."""
    B, N = values.shape[:2]
    per_signal = math.ceil(N / n)
    out = values.new_zeros(total, n, *values.shape[2:])
    padded = out[:B * per_signal].view(B, per_signal * n, *values.shape[2:])
    padded[:, :N] = values
    return out


@torch.no_grad()
def fused_latent_gradient(
    field: PreparedField,
    latents: Tensor,
    coords: Tensor,
    targets: Tensor,
    *,
    subset_weights: Tensor | None = None,
    point_weights: Tensor | None = None,
    mode: str = "default",
    fallback: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """:func:`mednf.engine.latent_grad.latent_gradient` in compiled chunks; the same arguments (no
    ``chunk_rows``: the chunks are fixed — on the CPU cache-sized blocks, elsewhere the whole batch as one
    chunk) and results. ``mode``: the ``torch.compile`` mode (:mod:`mednf.engine.compiled`). With
    ``fallback``, a failure to compile runs that eager function instead, with one :class:`FitKernelWarning`;
    without, it raises (the self-check records it)."""
    cfg = field.cfg
    B, N, D = targets.shape
    check_coords(coords, cfg, B)
    if not fallback:
        return _fused(field, latents, coords, targets, subset_weights, point_weights, mode)
    if _STATE["failed"] is None:
        try:
            return _fused(field, latents, coords, targets, subset_weights, point_weights, mode)
        except Exception as error:  # noqa: BLE001 - any compiler failure: the eager kernel gives the same result
            first_line = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
            note_failure(f"{type(error).__name__}: {first_line}")
    return latent_gradient(field, latents, coords, targets, chunk_rows=CPU_CHUNK_ROWS,
                           subset_weights=subset_weights, point_weights=point_weights)


def _fused(field: PreparedField, latents: Tensor, coords: Tensor, targets: Tensor, subset_weights: Tensor | None,
           point_weights: Tensor | None, mode: str) -> tuple[Tensor, Tensor | None, Tensor]:
    cfg = field.cfg
    B, N, D = targets.shape
    whole = targets.device.type != "cpu"  # a GPU takes the batch in one chunk: one block of N points per signal
    n = N if whole else min(N, BLOCK_POINTS)
    per_signal = math.ceil(N / n)
    G = B if whole else max(1, CHUNK_ROWS // n)
    total = math.ceil(B * per_signal / G) * G  # blocks, padded to whole chunks
    weights = targets.new_ones(B, N) if point_weights is None else point_weights
    target_blocks = _blocks(targets, n, total)  # [total, n, D]
    weight_blocks = _blocks(weights, n, total)  # [total, n]: 0 on padding
    sums = 1 if subset_weights is None else 2
    sum_blocks = targets.new_ones(total, sums, n)  # row 0: every point (padding has no gradient to sum)
    if subset_weights is not None:
        sum_blocks[:, 1] = _blocks(subset_weights, n, total)
    if coords.dim() == 2:  # a grid shared by the batch: block b of every signal has the same points
        grid = _blocks(coords[None], n, per_signal)  # [per_signal, n, C]
        position = torch.arange(total, device=coords.device) % per_signal
    else:
        coord_blocks = _blocks(coords, n, total)
    signal = (torch.arange(total, device=targets.device) // per_signal).clamp_(max=B - 1)  # padding → last signal
    biases = layer_biases(field, latents)  # [B, K-1, 1, L]
    hidden = field.lowp_weights[1:] if field.lowp_weights is not None else field.weights[1:]
    scale = targets.new_tensor(2.0 / (N * D))
    kernel = compiled(_chunk_gradient, mode)
    bias_grad = latents.new_zeros(B, sums, cfg.num_sine_layers, cfg.hidden_dim)
    squared = latents.new_zeros(B)
    for start in range(0, total, G):
        part = slice(start, start + G)
        owner = signal[part]
        x = grid[position[part]] if coords.dim() == 2 else coord_blocks[part]
        grad, sq = kernel(x, biases[owner], target_blocks[part], weight_blocks[part], sum_blocks[part],
                          field.weights[0], hidden, field.last_weight, field.last_bias, scale)
        bias_grad.index_add_(0, owner, grad)
        squared.index_add_(0, owner, sq)
    bias_grad = bias_grad.view(B, sums, -1)
    grads = torch.matmul(bias_grad, field.shift_weight)  # [B, sums, P]
    return grads[:, 0], (grads[:, 1] if sums == 2 else None), squared / (N * D)


__all__ = ["BLOCK_POINTS", "CHUNK_ROWS", "ENV", "KERNELS", "FitKernelWarning", "fit_kernel", "fit_modes",
           "fused_latent_gradient", "kernel_record", "note_failure", "requested_kernel"]
