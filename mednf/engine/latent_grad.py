"""∇_φ of the per-signal MSE with θ frozen, by a hand-written backward pass in point chunks.

The test-time fit needs only the gradient w.r.t. the latents, and the MSE is a sum over points, so the
points can be processed in chunks: forward through all layers keeping cos(z) of the chunk, backward
to the per-layer biases, accumulate, next chunk. The working set is one chunk's activations instead of
the whole ``[B, N, L]`` stack per layer, which keeps the memory-bound elementwise work in cache on CPU and
bounds memory on GPU. The layer maths (``h_k = h_{k-1} + sin(z_k)``, ``z_k = W'_k h_{k-1} + bias_k(φ)``):

    ∂L/∂z_k      = ∂L/∂h_k ⊙ cos(z_k)
    ∂L/∂h_{k-1}  = ∂L/∂h_k + ∂L/∂z_k W'_k          (k ≥ 1, residual)
    ∂L/∂bias_k   = Σ_points ∂L/∂z_k
    ∂L/∂φ        = [∂L/∂bias_1 … ∂L/∂bias_{K-1}] · shift_weight

Each point's backward is independent of the others, so the gradient of the MSE on a subset of the
points (the official code's test-time gradient rescaling) is a weighted sum of the same per-point terms:
``subset_weights`` (N/n on the subset, 0 elsewhere) gives it from the same pass, with no second forward.
For the same reason a signal observed only at some points (a mask, or padding of irregular point sets)
is fitted by ``point_weights``: N/m on its m observed points and 0 elsewhere turn the mean over all N
points into the mean over the observed ones.

It is tested against autograd (tests/test_latent_grad.py). In bf16 precision (a field prepared with a
bf16 :class:`~mednf.engine.precision.Precision`) the hidden products, forward and backward, run in bf16 through
:func:`mednf.engine.field.preactivation` / :func:`~mednf.engine.field.input_gradient`; cosines, sums over
points, the residual stream and ∂L/∂φ stay fp32.
"""

from __future__ import annotations

import torch
from torch import Tensor

from mednf.engine.field import PreparedField, check_coords, input_gradient, layer_biases, preactivation


@torch.no_grad()
def latent_gradient(
    field: PreparedField,
    latents: Tensor,
    coords: Tensor,
    targets: Tensor,
    *,
    chunk_rows: int | None = None,
    subset_weights: Tensor | None = None,
    point_weights: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor]:
    """Gradient of ``Σ_signals MSE_signal`` w.r.t. the latents, and the per-signal MSE.

    Args:
        field: prepared θ.
        latents: ``[B, P]``.
        coords: ``[N, C]`` or ``[B, N, C]``.
        targets: ``[B, N, D]``.
        chunk_rows: about how many (signal, point) rows to process at once; None → all points at once.
        subset_weights: ``[B, N]``, N/n on each signal's subset of n points and 0 elsewhere, to also get
            the gradient of the subset MSE (with ``point_weights``: m/n on a subset of the m observed points).
        point_weights: ``[B, N]``, N/m on each signal's m observed points and 0 elsewhere: the loss is the
            MSE over the observed points only. None: every point counts.

    Returns:
        ``(∇_φ [B, P], ∇_φ of the subset MSE [B, P] or None, MSE [B])`` — MSE of the raw (unclamped) output
        (over the observed points with ``point_weights``).
    """
    cfg = field.cfg
    B, N, D = targets.shape
    check_coords(coords, cfg, B)
    layers = cfg.num_sine_layers
    biases = layer_biases(field, latents)  # [B, K-1, 1, L]
    lowp, dtype = field.lowp_weights is not None, latents.dtype
    sums = 1 if subset_weights is None else 2  # full-context gradient, and the subset one
    bias_grad = latents.new_zeros(B, sums, layers, cfg.hidden_dim)
    squared = latents.new_zeros(B)
    step = N if chunk_rows is None else max(1, chunk_rows // B)
    scale = 2.0 / (N * D)  # ∂(mean squared error)/∂output
    for start in range(0, N, step):
        stop = min(start + step, N)
        chunk = coords[..., start:stop, :]
        if subset_weights is not None:  # [B, 2, n]: row 0 sums every point, row 1 weighs the subset
            weights = torch.stack([torch.ones_like(subset_weights[:, start:stop]), subset_weights[:, start:stop]], 1)
        cosines = []
        h = preactivation(field, 0, chunk, biases[:, 0])  # [B, n, L]
        cosines.append(torch.cos(h).to(dtype))
        h = h.sin_().to(dtype)
        for k in range(1, layers):
            if lowp:
                z = preactivation(field, k, h, biases[:, k])
                cosines.append(torch.cos(z).to(dtype))
            else:
                z = torch.matmul(h, field.weights[k].t()).add_(biases[:, k])
                cosines.append(torch.cos(z))
            h.add_(z.sin_())
        error = torch.matmul(h, field.last_weight.t()).add_(field.last_bias).sub_(targets[:, start:stop])  # [B, n, D]
        if point_weights is None:
            squared += error.square().sum(dim=(1, 2))
        else:
            seen = point_weights[:, start:stop, None]  # [B, n, 1]
            squared += error.square().mul_(seen).sum(dim=(1, 2))
            error.mul_(seen)
        grad_h = torch.matmul(error.mul_(scale), field.last_weight)  # [B, n, L]
        for k in range(layers - 1, -1, -1):
            grad_z = cosines[k].mul_(grad_h)
            if subset_weights is None:  # add_ on the view (``+=`` on an indexed view copies it back too)
                bias_grad[:, 0, k].add_(grad_z.sum(dim=1))
            else:
                bias_grad[:, :, k].add_(torch.bmm(weights, grad_z))  # [B, 2, L]
            if k > 0:
                grad_h.add_(input_gradient(field, k, grad_z))
    bias_grad = bias_grad.view(B, sums, -1)
    if field.precision.bf16 and field.precision.shift_bf16:
        grads = torch.matmul(bias_grad.to(torch.bfloat16), field.shift_weight.to(torch.bfloat16)).to(dtype)
    else:
        grads = torch.matmul(bias_grad, field.shift_weight)  # [B, sums, P]
    return grads[:, 0], (grads[:, 1] if sums == 2 else None), squared / (N * D)
