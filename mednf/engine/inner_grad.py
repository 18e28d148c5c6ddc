"""One inner step's latent gradient ∇_φ MSE as an autograd Function with a hand-written backward.

The second-order meta-gradient needs the derivative of the inner gradient ``g = ∇_φ Σ_b MSE_b`` with
respect to θ and φ. Autograd gets it by differentiating its own backward (``create_graph=True``), which
recomputes ``cos z`` and ``sin z`` of every layer in the second pass, negates, and adds every partial
result in a separate pass over ``[B, n, L]``. Here the forward computes ``g`` with the explicit formulas
of :mod:`mednf.engine.latent_grad` (sine and cosine of each layer once, kept), and :meth:`backward`
is the reverse of those formulas, written out: the same six GEMMs per layer and inner step as autograd,
about half the elementwise passes, products accumulated into their output inside the GEMM (``addmm``).
Tested against the per-signal official-style reference in float64 (tests/test_meta_gradient.py).

Notation (a prepared field, :class:`mednf.engine.field.PreparedField`; layer k = 0..K-2, sine layers):

Forward, per signal (points of the context, ``β = φ Sᵀ + c`` split per layer)::

    z_0 = X W_0ᵀ + β_0,  h_1 = sin z_0;   z_k = h_k W_kᵀ + β_k,  h_{k+1} = h_k + sin z_k  (k ≥ 1)
    y = h_{K-1} W_outᵀ + b_out,  e = y − t,  MSE = mean e²,  e' = 2e / (n·D)
    a_{K-1} = e' W_out;  for k = K-2 … 0:  d_k = a_{k+1} ⊙ cos z_k,  G_k = Σ_points d_k,
                                          a_k = a_{k+1} + d_k W_k  (k ≥ 1)
    g = [G_0 … G_{K-2}] S                                                     [B, P]

Backward, given ḡ = ∂L/∂g ``[B, P]``: ``Ḡ = ḡ Sᵀ``; then the a/d chain in reverse (k ascending: ``d̄_k =
Ḡ_k + ā_k W_kᵀ``, ``W̄_k += d_kᵀ ā_k``, ``ā_{k+1} = ā_k + d̄_k ⊙ cos z_k``, and the cosine's adjoint
``z̄_k = −d̄_k ⊙ a_{k+1} ⊙ sin z_k``), then ``ē' = ā_{K-1} W_outᵀ``, and the forward in reverse with
``ȳ = 2ē'/(n·D)`` (k descending: ``z̄_k += h̄_{k+1} ⊙ cos z_k``, ``h̄_k = h̄_{k+1} + z̄_k W_k``,
``W̄_k += z̄_kᵀ h_k``, ``β̄_k = Σ z̄_k``), and ``φ̄ = β̄ S``, ``S̄ = β̄ᵀ φ + Gᵀ ḡ``, ``c̄ = Σ_b β̄``.

Memory: five ``[B, n, L]`` tensors per layer kept for the backward (``h_k``, ``sin z_k``, ``cos z_k``,
``a_{k+1}``, ``d_k``), as autograd's graph of the same step. The backward is used once
(``once_differentiable``: no third order).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from mednf.engine.compiled import EAGER, compiled
from mednf.engine.field import PreparedField


def _mm_into(accumulate: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``accumulate + a @ b`` for ``[B, n, i]`` tensors and a matrix ``[i, j]``, in one GEMM: ``[B, n, j]``."""
    B, n, i = a.shape
    out = torch.addmm(accumulate.reshape(B * n, -1), a.reshape(B * n, i), b)
    return out.view(B, n, -1)


def _times(x: Tensor, w: Tensor) -> Tensor:
    """``x @ w`` in ``w``'s format (x cast to it: bfloat16 operands, fp32 accumulation), returned in float32."""
    out = torch.matmul(x if x.dtype == w.dtype else x.to(w.dtype), w)
    return out.float() if out.dtype == torch.bfloat16 else out


def _times_into(accumulate: Tensor, x: Tensor, w: Tensor) -> Tensor:
    """``accumulate + x @ w`` (``[B, n, i]`` by ``[i, j]``): one GEMM in fp32/fp64, a bf16 GEMM and an add in bf16."""
    if w.dtype == torch.bfloat16:
        return _times(x, w).add_(accumulate)
    return _mm_into(accumulate, x, w)


def _flat(t: Tensor) -> Tensor:
    """``[B, n, L]`` → ``[B·n, L]``."""
    return t.reshape(-1, t.shape[-1])


def inner_forward(phi: Tensor, coords: Tensor, targets: Tensor, shift_weight: Tensor, shift_bias: Tensor,
                  last_weight: Tensor, last_bias: Tensor, lowp: bool, weights: tuple[Tensor, ...]
                  ) -> tuple[Tensor, Tensor, tuple[Tensor, ...]]:
    """:meth:`InnerGradient.forward`'s body (eager, or compiled by :mod:`mednf.engine.compiled`): ``g [B, P]``,
    the MSE ``[B]`` and what the backward keeps."""
    B, n, D = targets.shape
    layers, L = len(weights), weights[0].shape[0]
    hidden = _hidden_weights(weights, lowp)  # W_k in the format of the hidden products (k ≥ 1)
    beta = torch.addmm(shift_bias, phi, shift_weight.t()).view(B, layers, 1, L)
    inputs, sines, cosines = [], [], []  # h_k (k ≥ 1), sin z_k, cos z_k
    z = torch.matmul(coords, weights[0].t()) + beta[:, 0]  # [B, n, L] (coords may be [n, C])
    sines.append(torch.sin(z))
    cosines.append(torch.cos(z))
    h = sines[0]
    for k in range(1, layers):
        kept = h.to(hidden[k].dtype)  # bf16: the product's operand, kept for W̄_k at half the size
        inputs.append(kept)
        z = _times(kept, hidden[k].t()).add_(beta[:, k])
        sines.append(torch.sin(z))
        cosines.append(torch.cos(z))
        h = h + sines[k]
    error = torch.matmul(h, last_weight.t()).add_(last_bias).sub_(targets)  # [B, n, D]
    mse = error.square().mean(dim=(1, 2))
    error.mul_(2.0 / (n * D))  # e'
    adjoints: list[Tensor] = []  # a_{k+1}, k descending (reversed below)
    deltas: list[Tensor] = []  # d_k, likewise
    a = torch.matmul(error, last_weight)  # a_{K-1}: [B, n, L]
    layer_sums: list[Tensor] = []  # G_k, k descending
    for k in range(layers - 1, -1, -1):
        adjoints.append(a)
        d = a * cosines[k]
        layer_sums.append(d.sum(dim=1))
        if k > 0:
            d = d.to(hidden[k].dtype)
            a = _times_into(a, d, hidden[k])
        deltas.append(d)
    adjoints.reverse()
    deltas.reverse()
    sums = torch.stack(layer_sums[::-1], dim=1)  # G: [B, K-1, L] (one stack: the compiler takes no out= slices)
    grad = torch.matmul(sums.view(B, -1), shift_weight)  # [B, P]
    saved = (phi, coords, shift_weight, last_weight, error, h, sums, *weights, *inputs, *sines, *cosines,
             *adjoints, *deltas)
    return grad, mse, saved


def inner_backward(saved: tuple[Tensor, ...], grad_out: Tensor, layers: int, lowp: bool) -> tuple[Tensor, ...]:
    """:meth:`InnerGradient.backward`'s body (eager, or compiled): the adjoints of φ, S, c, W_out, b_out and the
    K-1 weights, given ``ḡ [B, P]`` and what :func:`inner_forward` kept."""
    K1 = layers
    phi, coords, shift_weight, last_weight, error, h_last, sums = saved[:7]
    rest = saved[7:]
    weights, rest = rest[:K1], rest[K1:]
    inputs, rest = rest[: K1 - 1], rest[K1 - 1:]
    sines, cosines, adjoints, deltas = rest[:K1], rest[K1: 2 * K1], rest[2 * K1: 3 * K1], rest[3 * K1:]
    B, n, D = error.shape
    L = weights[0].shape[0]
    hidden = _hidden_weights(weights, lowp)
    grad_weights: list[Tensor] = [None] * K1  # type: ignore[list-item]

    # the a/d chain, reversed (k ascending); the cosine adjoints go into the sine buffers (z̄_k, negated)
    grad_sums = torch.matmul(grad_out, shift_weight.t()).view(B, K1, 1, L)  # Ḡ
    grad_shift_weight = torch.matmul(sums.view(B, -1).t(), grad_out)  # Gᵀ ḡ: [(K-1)·L, P]
    cosine_parts: list[Tensor] = []  # −z̄_k from the cosine, d̄_k ⊙ a_{k+1} ⊙ sin z_k (the sign comes below)
    d_bar = grad_sums[:, 0].expand(B, n, L)
    a_bar = d_bar * cosines[0]  # ā_k
    cosine_parts.append(torch.mul(d_bar, adjoints[0]).mul_(sines[0]))  # a new tensor: sin z_0 is h_1, kept for W̄_1
    for k in range(1, K1):
        a_low = a_bar.to(hidden[k].dtype)
        d_bar = _times(a_low, hidden[k].t()).add_(grad_sums[:, k])
        grad_weights[k] = _times(_flat(deltas[k]).t(), _flat(a_low))
        a_bar = torch.addcmul(a_bar, d_bar, cosines[k])
        cosine_parts.append(sines[k].mul_(d_bar).mul_(adjoints[k]))
    grad_error = torch.matmul(a_bar, last_weight.t()).mul_(2.0 / (n * D))  # ȳ: [B, n, D]
    grad_last_weight = torch.matmul(_flat(error).t(), _flat(a_bar)) + torch.matmul(_flat(grad_error).t(),
                                                                                  _flat(h_last))
    grad_last_bias = grad_error.sum(dim=(0, 1))

    # the forward, reversed (k descending)
    h_bar = torch.matmul(grad_error, last_weight)  # [B, n, L]
    beta_sums: list[Tensor] = []  # β̄_k, k descending
    for k in range(K1 - 1, -1, -1):
        z_bar = torch.addcmul(cosine_parts[k].neg_(), h_bar, cosines[k])
        beta_sums.append(z_bar.sum(dim=1))
        if k > 0:
            z_low = z_bar.to(hidden[k].dtype)
            grad_weights[k] = grad_weights[k] + _times(_flat(z_low).t(), _flat(inputs[k - 1]))
            h_bar = _times_into(h_bar, z_low, hidden[k])
        elif coords.dim() == 2:
            grad_weights[0] = torch.matmul(z_bar.sum(dim=0).t(), coords)  # [L, C]
        else:
            grad_weights[0] = torch.matmul(_flat(z_bar).t(), _flat(coords))
    grad_beta = torch.stack(beta_sums[::-1], dim=1).view(B, -1)  # [B, (K-1)·L]
    grad_phi = torch.matmul(grad_beta, shift_weight)
    grad_shift_weight.add_(torch.matmul(grad_beta.t(), phi))
    grad_shift_bias = grad_beta.sum(dim=0)
    return (grad_phi, grad_shift_weight, grad_shift_bias, grad_last_weight, grad_last_bias, *grad_weights)


def _body(fn: Callable[..., Any], kernel: str) -> Callable[..., Any]:
    return fn if kernel == EAGER else compiled(fn, kernel)


class InnerGradient(torch.autograd.Function):
    """``(g [B, P], MSE [B]) = InnerGradient.apply(φ, X, t, S, c, W_out, b_out, lowp, kernel, *W)`` (module
    docstring).

    ``X``: context coordinates ``[n, C]`` or ``[B, n, C]``; ``t``: targets ``[B, n, D]``; ``W``: the K-1
    folded sine-layer weights; ``kernel``: ``"eager"`` or the ``torch.compile`` mode of both bodies
    (:mod:`mednf.engine.compiled`). MSE is not differentiable (it is a statistic).
    """

    @staticmethod
    def forward(ctx: FunctionCtx, phi: Tensor, coords: Tensor, targets: Tensor, shift_weight: Tensor,
                shift_bias: Tensor, last_weight: Tensor, last_bias: Tensor, lowp: bool, kernel: str,
                *weights: Tensor) -> tuple[Tensor, Tensor]:
        """The inner gradient ``g [B, P]`` and the per-signal MSE ``[B]``; keeps what :meth:`backward` needs."""
        grad, mse, saved = _body(inner_forward, kernel)(phi, coords, targets, shift_weight, shift_bias, last_weight,
                                                        last_bias, lowp, weights)
        ctx.save_for_backward(*saved)
        ctx.layers, ctx.lowp, ctx.kernel = len(weights), lowp, kernel  # type: ignore[attr-defined]  # custom attributes
        ctx.mark_non_differentiable(mse)
        return grad, mse

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, grad_out: Tensor, _mse_out: Tensor | None) -> tuple[Tensor | None, ...]:
        """The adjoints of the inputs of :meth:`forward` given ``ḡ [B, P]``; None for X, t, ``lowp``, ``kernel``."""
        saved = ctx.saved_tensors  # type: ignore[attr-defined]  # FunctionCtx stubs lack it (the runtime ctx has it)
        if grad_out is None:
            grad_out = saved[0].new_zeros(saved[0].shape)
        grad_phi, *grads = _body(inner_backward, ctx.kernel)(saved, grad_out, ctx.layers,  # type: ignore[attr-defined]
                                                             ctx.lowp)  # type: ignore[attr-defined]
        return (grad_phi, None, None, *grads[:4], None, None, *grads[4:])


def _hidden_weights(weights: tuple[Tensor, ...], lowp: bool) -> list[Tensor]:
    """The sine layers' weights as the hidden products use them: bfloat16 copies when ``lowp`` (index 0, the
    first layer, stays as it is: it runs in fp32 always)."""
    return [w if k == 0 or not lowp else w.detach().to(torch.bfloat16) for k, w in enumerate(weights)]


def inner_gradient(field: PreparedField, latents: Tensor, coords: Tensor, targets: Tensor, *,
                   kernel: str = EAGER) -> tuple[Tensor, Tensor]:
    """``(∇_φ Σ_b MSE_b [B, P], MSE [B])`` of a prepared field on a context, differentiable (second order) with
    respect to the latents ``[B, P]`` and the prepared θ; coords ``[n, C]`` or ``[B, n, C]``, targets
    ``[B, n, D]``; ``kernel``: ``"eager"`` or a ``torch.compile`` mode (:mod:`mednf.engine.compiled`)."""
    lowp = field.lowp_weights is not None
    return InnerGradient.apply(latents, coords, targets, field.shift_weight, field.shift_bias, field.last_weight,
                               field.last_bias, lowp, kernel, *field.weights)


__all__ = ["InnerGradient", "inner_backward", "inner_forward", "inner_gradient"]
