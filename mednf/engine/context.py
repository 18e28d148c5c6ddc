"""Random context subsets (γ·N of the N coordinates) chosen per signal and per step.

The subset of signal ``s`` at step ``t`` is a pure function of ``(seed, s, t)``: every coordinate gets a
32-bit key from an integer hash and the ``n`` smallest keys win. Because nothing depends on which other
signals share the batch, on the device, or on a generator's state, a fit gives the same latents whatever
the batch size or the number of ranks, and CPU and GPU draw identical subsets.

The hash is the 32-bit "xor-shift-multiply" finaliser (multiplier 0x45d9f3b), evaluated in int64 with
every product kept below 2^63, so the result is exact on every backend.
"""

from __future__ import annotations

import torch
from torch import Tensor

_MASK32 = 0xFFFFFFFF
_MULT = 0x45D9F3B  # < 2^31, so (x < 2^32) · _MULT < 2^63
_GOLDEN = 0x9E3779B1


def _mix32(x: Tensor) -> Tensor:
    """Bijective 32-bit integer hash on int64 tensors holding values in [0, 2^32)."""
    x = ((x ^ (x >> 16)) * _MULT) & _MASK32
    x = ((x ^ (x >> 16)) * _MULT) & _MASK32
    return x ^ (x >> 16)


def context_size(num_points: int, ratio: float) -> int:
    """Number of coordinates in a context of ratio γ (floor, as the official code, at least 1)."""
    return max(1, int(ratio * num_points))


def random_context(
    signal_ids: Tensor, num_points: int, ratio: float, *, seed: int, step: int
) -> Tensor:
    """Indices of a random γ-subset of the coordinates for each signal.

    Args:
        signal_ids: ``[B]`` int64 stream id of each signal (its global index, or a meta-batch slot).
        num_points: N, coordinates per signal.
        ratio: γ in (0, 1].
        seed: with ``step`` and the id, fully determines the subset.
        step: the inner or fitting step (a new subset each step).

    Returns:
        ``[B, n]`` int64 indices into the N coordinates, n = :func:`context_size`, in increasing key order.
    """
    keys = _point_keys(signal_ids, num_points, seed=seed, step=step)
    n = context_size(num_points, ratio)
    return torch.argsort(keys, dim=1, stable=True)[:, :n]


def random_contexts(
    signal_ids: Tensor, num_points: int, ratio: float, *, seed: int, steps: int
) -> Tensor:
    """:func:`random_context` of steps ``0 … steps-1`` at once: one hash and one sort for all of them.

    Returns:
        ``[steps, B, n]`` int64; entry ``t`` equals ``random_context(signal_ids, …, step=t)``.
    """
    step_ids = torch.arange(steps, device=signal_ids.device, dtype=torch.int64)
    keys = _point_keys(signal_ids, num_points, seed=seed, step=step_ids)  # [steps, B, N]
    n = context_size(num_points, ratio)
    return torch.argsort(keys, dim=-1, stable=True)[..., :n]


def _point_keys(signal_ids: Tensor, num_points: int, *, seed: int, step: int | Tensor) -> Tensor:
    """``[B, N]`` int64 key in [0, 2^32) of every coordinate of every signal at this step; ``[T, B, N]`` for
    ``step`` a ``[T]`` tensor of steps."""
    base = torch.full_like(signal_ids, seed & _MASK32, dtype=torch.int64)
    h = _mix32(_mix32(base) ^ (signal_ids.to(torch.int64) & _MASK32))  # [B]
    if isinstance(step, Tensor):
        h = h[None, :] ^ (step[:, None] & _MASK32)  # [T, B]
    else:
        h = h ^ (step & _MASK32)
    h = _mix32(h)
    points = torch.arange(num_points, device=signal_ids.device, dtype=torch.int64) * _GOLDEN  # [N]
    return _mix32((h[..., None] + points) & _MASK32)


def observed_context_weights(
    signal_ids: Tensor, observed: Tensor, ratio: float, *, seed: int, step: int
) -> Tensor:
    """Weights of a random γ-subset of each signal's *observed* points, relative to its observed-point mean.

    The subset of signal s holds the ``context_size(m_s, γ)`` observed points with the smallest keys (the
    keys of :func:`random_context`), so with every point observed it is exactly that function's subset.

    Args:
        signal_ids: ``[B]`` int64 stream ids.
        observed: ``[B, N]`` bool, True where the signal was observed (every row has at least one True).
        ratio: γ in (0, 1].
        seed: as for :func:`random_context`.
        step: as for :func:`random_context`.

    Returns:
        ``[B, N]`` float32: ``m_s / n_s`` on the subset, 0 elsewhere (a mean over the subset, written as a
        weighted mean over the m_s observed points).
    """
    N = observed.shape[1]
    keys = _point_keys(signal_ids, N, seed=seed, step=step).masked_fill_(~observed, 1 << 33)  # unobserved last
    order = torch.argsort(keys, dim=1, stable=True)  # [B, N]
    m = observed.sum(dim=1)  # [B]
    n = torch.clamp((ratio * m.to(torch.float64)).floor().to(torch.int64), min=1)  # context_size per signal
    ranks = torch.arange(N, device=observed.device)[None, :]
    scale = (m.to(torch.float64) / n.to(torch.float64)).to(torch.float32)  # [B]
    chosen = (ranks < n[:, None]).to(torch.float32) * scale[:, None]  # [B, N] in key order
    return torch.zeros(observed.shape, dtype=torch.float32, device=observed.device).scatter_(1, order, chosen)


def gather_context(coords: Tensor, values: Tensor, index: Tensor) -> tuple[Tensor, Tensor]:
    """Select each signal's context.

    Args:
        coords: ``[N, C]`` shared grid.
        values: ``[B, N, D]``.
        index: ``[B, n]`` int64 point indices (:func:`random_context`).

    Returns:
        ``([B, n, C], [B, n, D])`` coordinates and target values of each signal's context.
    """
    D = values.shape[-1]
    sub_values = torch.gather(values, 1, index[..., None].expand(-1, -1, D))
    return coords[index], sub_values
