"""The latent-modulated SIREN of MedFuncta, written as pure functions of (θ, φ, coordinates).

θ is a flat ``dict[str, Tensor]`` (safetensors-ready), φ a batch of latents ``[B, P]``:

- ``layers.{k}.weight`` ``[L, C]`` (k = 0) or ``[L, L]``, ``layers.{k}.bias`` ``[L]`` — the K-1 sine layers;
- ``shift.weight`` ``[(K-1)·L, P]``, ``shift.bias`` ``[(K-1)·L]`` — all K-1 maps m_k(φ) = M_k φ + c_k
  stacked into one linear map, so the shifts of every layer come from one matmul;
- ``last.weight`` ``[D, L]``, ``last.bias`` ``[D]`` — the unmodulated linear output layer (+0.5).

Forward (``shift_mode="inside"``, the official code)::

    h = sin(ω_1 (W_1 x + b_1 + m_1(φ)))
    h = h + sin(ω_k (W_k h + b_k + m_k(φ)))      k = 2..K-1   (residual)
    y = W_K h + b_K + 0.5

With ``shift_mode="outside"`` (paper Eq. 1) the sine arguments are ``ω_k (W_k h + b_k) + m_k(φ)``.
Both are computed as ``sin((ω_k W_k) h + bias_k(φ))`` (:class:`PreparedField`), with one per-signal bias
``[B, L]`` per layer from a single matmul: one add and one sine per layer over the ``[B, N, L]``
activations, nothing else.

Given a bf16 :class:`~mednf.engine.precision.Precision`, :func:`prepare` also keeps bf16 copies of the hidden
weights and the hidden products ``(ω_k W_k) h`` run in bf16 (fp32 accumulation); the first layer, the biases,
the sine argument and the residual stream stay fp32 (see that module). Without one — decoding, the
exactness tests — every operation is the fp32/fp64 one of the formulas above.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mednf.engine.config import FieldConfig, param_shapes
from mednf.engine.precision import FP32, Precision
from mednf.errors import ConfigError

Params = dict[str, Tensor]


def init_params(
    cfg: FieldConfig,
    *,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
) -> Params:
    """Draw θ with the initialisation of Eq. 2 (as in the official code).

    First layer W, b ~ U(-1/n, 1/n); sine layer k > 1 and the output layer W, b ~ U(-√(6/n)/ω, √(6/n)/ω)
    with n the fan-in (the output layer uses the next ω of the schedule, as the official code does);
    the shift map like ``nn.Linear``: U(-1/√P, 1/√P). The shift map must not start at zero: then
    ∂L/∂φ ≡ 0 and the inner loop would do nothing. Drawn for ``"inside"`` and converted for
    ``"outside"``, so both modes start from the same function.
    """
    omegas = cfg.omegas
    next_omega = omegas[-1] + (omegas[-1] - omegas[-2]) if len(omegas) > 1 else omegas[-1]
    params: Params = {}
    for name, shape in param_shapes(cfg).items():
        if name.startswith("latent."):  # Meta-SGD's multipliers of α start at 1, a learned φ₀ at 0: the paper's start
            params[name] = torch.full(shape, 1.0 if name == "latent.lr" else 0.0, dtype=dtype, device=device)
            continue
        if name.startswith("layers."):
            k = int(name.split(".")[1])
            n = cfg.in_dims if k == 0 else cfg.hidden_dim
            bound = 1.0 / n if k == 0 else math.sqrt(6.0 / n) / omegas[k]
        elif name.startswith("last."):
            bound = math.sqrt(6.0 / cfg.hidden_dim) / next_omega
        else:
            bound = 1.0 / math.sqrt(cfg.latent_dim)
        tensor = torch.empty(shape, dtype=dtype, device="cpu")
        tensor.uniform_(-bound, bound, generator=generator)
        params[name] = tensor.to(device)
    if cfg.shift_mode == "outside":
        params = convert_shift_mode(params, cfg, "inside", "outside")
    return params


def _omega_column(cfg: FieldConfig, like: Tensor) -> Tensor:
    """ω_k repeated over each layer's L shift rows: [(K-1)·L], on ``like``'s device (made there once per
    process and configuration: no host → device copy per :func:`prepare`)."""
    return _omega_column_on(tuple(cfg.omegas), cfg.hidden_dim, like.dtype, like.device)


@functools.lru_cache(maxsize=64)
def _omega_column_on(omegas: tuple[float, ...], hidden_dim: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    column = torch.tensor(omegas, dtype=dtype).repeat_interleave(hidden_dim)  # on the host, then one upload
    return column.to(device)


def convert_shift_mode(params: Params, cfg: FieldConfig, source: str, target: str) -> Params:
    """Re-express θ for the other shift placement; the field's outputs stay the same.

    ``sin(ω (Wx + b + Mφ + c)) = sin(ω (Wx + b) + (ωM)φ + ωc)``, so inside → outside multiplies the
    shift rows of layer k by ω_k, and outside → inside divides by it.
    """
    for mode in (source, target):
        if mode not in ("inside", "outside"):
            raise ConfigError(f"shift_mode = {mode!r} is invalid: expected 'inside' or 'outside'; pick one")
    if source == target:
        return dict(params)
    scale = _omega_column(cfg, params["shift.bias"])
    if target == "inside":
        scale = 1.0 / scale
    out = dict(params)
    out["shift.weight"] = params["shift.weight"] * scale[:, None]
    out["shift.bias"] = params["shift.bias"] * scale
    return out


def check_coords(coords: Tensor, cfg: FieldConfig, batch: int) -> None:
    """Raise a clear error unless coords is [N, C] or [B, N, C] with C = cfg.in_dims."""
    ok_rank = coords.dim() == 2 or (coords.dim() == 3 and coords.shape[0] == batch)
    if not ok_rank or coords.shape[-1] != cfg.in_dims:
        raise ConfigError(
            f"coords shape = {tuple(coords.shape)} is invalid: expected [N, {cfg.in_dims}] or "
            f"[{batch}, N, {cfg.in_dims}] (in_dims C = {cfg.in_dims}); build them with "
            f"mednf.engine.field.coordinate_grid(shape) for a {cfg.in_dims}-D signal"
        )


@dataclass(frozen=True)
class PreparedField:
    """θ folded for evaluation: ω_k multiplied into W_k, and every sine layer's bias into the shift map.

    ``bias_k(φ) = shift_weight_k φ + shift_bias_k`` gives each layer's whole per-signal bias at once:
    inside mode ``ω_k (b_k + M_k φ + c_k)``, outside mode ``ω_k b_k + M_k φ + c_k``. Folding once per
    meta-iteration (or per fit batch) instead of once per forward removes 3·(K-1) small ops (and their
    backward) from every inner step; gradients still flow to θ through the fold.

    ``precision`` is the one it was prepared for; with bf16, ``lowp_weights`` holds the bf16 copies of
    ``weights`` (cast once here, differentiable) that the products use.
    """

    weights: tuple[Tensor, ...]  # K-1 tensors [L, n], already multiplied by ω_k
    shift_weight: Tensor  # [(K-1)·L, P]
    shift_bias: Tensor  # [(K-1)·L]
    last_weight: Tensor  # [D, L]
    last_bias: Tensor  # [D], includes the +0.5
    cfg: FieldConfig
    precision: Precision = FP32
    lowp_weights: tuple[Tensor, ...] | None = None  # bf16 copies of ``weights`` (bf16 precision only)
    latent_lr: Tensor | None = None  # [P] multipliers of the latent's learning rate (field.learned_inner_lr)
    latent_init: Tensor | None = None  # [P] the latent every fit starts from (field.learned_init; else zeros)

    def start_latents(self, batch: int, like: Tensor) -> Tensor:
        """φ₀ of ``batch`` signals ``[B, P]``: the learned initial latent (differentiable) or zeros."""
        if self.latent_init is None:
            return like.new_zeros(batch, self.cfg.latent_dim)
        return self.latent_init.to(like.dtype).expand(batch, -1)

    def latent_step(self, lr: float, grad: Tensor) -> Tensor:
        """One SGD step's change of the latents ``[B, P]``: ``α ∇φ``, per dimension ``α · latent.lr ⊙ ∇φ``
        with Meta-SGD's learned rates."""
        return lr * grad if self.latent_lr is None else (lr * self.latent_lr) * grad


def prepare(params: Params, cfg: FieldConfig, precision: Precision = FP32) -> PreparedField:
    """Fold θ for :func:`forward_prepared` (differentiable w.r.t. θ), its products in ``precision`` (the
    resolved one, :class:`mednf.engine.execution.Execution`; default fp32 — ``cfg.precision`` is only the
    request)."""
    omega = _omega_column(cfg, params["shift.bias"])  # [(K-1)·L]
    layer_bias = torch.cat([params[f"layers.{k}.bias"] for k in range(cfg.num_sine_layers)])
    if cfg.shift_mode == "inside":
        shift_weight = params["shift.weight"] * omega[:, None]
        shift_bias = (params["shift.bias"] + layer_bias) * omega
    else:
        shift_weight = params["shift.weight"]
        shift_bias = params["shift.bias"] + layer_bias * omega
    weights = tuple(params[f"layers.{k}.weight"] * w for k, w in enumerate(cfg.omegas))
    lowp = tuple(w.to(torch.bfloat16) for w in weights) if precision.bf16 else None
    return PreparedField(weights, shift_weight, shift_bias, params["last.weight"], params["last.bias"] + 0.5, cfg,
                         precision, lowp, params.get("latent.lr"), params.get("latent.init"))


def layer_biases(field: PreparedField, latents: Tensor) -> Tensor:
    """Every sine layer's per-signal bias ``shift_weight φ + shift_bias``: ``[B, P]`` → ``[B, K-1, 1, L]``."""
    cfg = field.cfg
    if field.precision.bf16 and field.precision.shift_bf16:
        biases = torch.addmm(field.shift_bias.to(torch.bfloat16), latents.to(torch.bfloat16),
                             field.shift_weight.to(torch.bfloat16).t()).to(latents.dtype)
    else:
        biases = torch.addmm(field.shift_bias, latents, field.shift_weight.t())  # [B, (K-1)·L]
    return biases.view(latents.shape[0], cfg.num_sine_layers, 1, cfg.hidden_dim)


def _lowp_weight(field: PreparedField, k: int) -> Tensor | None:
    """Layer k's bf16 weight where its product runs in bf16 (the hidden layers; the first one only when
    asked), else None."""
    if field.lowp_weights is None or not (k > 0 or field.precision.first_layer_bf16):
        return None
    return field.lowp_weights[k]


def preactivation(field: PreparedField, k: int, h: Tensor, bias: Tensor) -> Tensor:
    """The sine argument ``z_k = (ω_k W_k) h + bias_k`` of layer k (h = coords for k = 0), in the field's
    precision: fp32, or a bf16 product added to the fp32 bias (bf16 throughout with ``sine_argument_bf16``)."""
    lowp_weight = _lowp_weight(field, k)
    if lowp_weight is None:
        return torch.matmul(h, field.weights[k].t()) + bias
    product = torch.matmul(h.to(torch.bfloat16), lowp_weight.t())  # fp32 accumulation, bf16 result
    if field.precision.sine_argument_bf16:
        return product + bias.to(torch.bfloat16)
    product = product.to(bias.dtype)  # the sum and the sine in fp32; cast + add beats a promoting add
    return product.add_(bias) if product.dim() == bias.dim() else product + bias


def input_gradient(field: PreparedField, k: int, grad_z: Tensor) -> Tensor:
    """``∂L/∂z_k · (ω_k W_k)``: the gradient back through layer k's product, in the field's precision."""
    lowp_weight = _lowp_weight(field, k)
    if lowp_weight is None:
        return torch.matmul(grad_z, field.weights[k])
    return torch.matmul(grad_z.to(torch.bfloat16), lowp_weight)


def forward_prepared(field: PreparedField, latents: Tensor, coords: Tensor) -> Tensor:
    """Evaluate a prepared field: latents ``[B, P]``, coords ``[N, C]`` or ``[B, N, C]`` → ``[B, N, D]``."""
    cfg = field.cfg
    B = latents.shape[0]
    check_coords(coords, cfg, B)
    biases = layer_biases(field, latents)  # [B, K-1, 1, L]
    if field.lowp_weights is None:  # fp32 (the formulas as written)
        h = torch.sin(torch.matmul(coords, field.weights[0].t()) + biases[:, 0])  # [B, N, L]
        for k in range(1, cfg.num_sine_layers):
            h = h + torch.sin(torch.matmul(h, field.weights[k].t()) + biases[:, k])
    else:
        h = torch.sin(preactivation(field, 0, coords, biases[:, 0])).to(latents.dtype)
        for k in range(1, cfg.num_sine_layers):
            h = h + torch.sin(preactivation(field, k, h, biases[:, k]))  # fp32 residual stream
    return torch.matmul(h, field.last_weight.t()) + field.last_bias  # [B, N, D]


def forward(params: Params, latents: Tensor, coords: Tensor, cfg: FieldConfig) -> Tensor:
    """Evaluate the field.

    Args:
        params: θ (see module docstring).
        latents: φ, ``[B, P]``.
        coords: ``[N, C]`` shared by the batch, or ``[B, N, C]`` per signal, in [-1, 1].
        cfg: the field's configuration (the same one that made ``params``).

    Returns:
        values ``[B, N, D]``.
    """
    return forward_prepared(prepare(params, cfg), latents, coords)


def coordinate_grid(
    shape: Sequence[int], *, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Regular grid in [-1, 1]^C for a signal of spatial ``shape`` (row-major, 'ij'): ``[prod(shape), C]``.

    Any resolution works, so a latent fitted at 64² can be decoded at 32², 128², ….
    """
    if len(shape) not in (1, 2, 3) or any(int(s) < 1 for s in shape):
        raise ConfigError(f"grid shape = {tuple(shape)} is invalid: expected 1 to 3 sizes ≥ 1, e.g. (64, 64)")
    axes = [torch.linspace(-1.0, 1.0, int(s), device=device, dtype=dtype) for s in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1)
    return grid.reshape(-1, len(shape))


def to_points(signals: Tensor) -> Tensor:
    """Channels-first signals ``[B, D, *spatial]`` → point values ``[B, N, D]`` in grid order."""
    B, D = signals.shape[:2]
    return signals.reshape(B, D, -1).transpose(1, 2)


def from_points(values: Tensor, spatial: Sequence[int]) -> Tensor:
    """Point values ``[B, N, D]`` → channels-first signals ``[B, D, *spatial]``."""
    B, _, D = values.shape
    return values.transpose(1, 2).reshape(B, D, *spatial)


DECODE_FLOATS = 1 << 26  # floats of one layer's activations per forward call of decode_in_chunks (256 MiB)


def decode_in_chunks(params: Params, latents: Tensor | Callable[[slice], Tensor], count: int, cfg: FieldConfig,
                     spatial: Sequence[int], *, device: torch.device | str = "cpu",
                     batch_size: int | None = None) -> Tensor:
    """:func:`decode` of ``count`` latents in bounded memory → ``[count, D, *spatial]`` in [0, 1], on the CPU.

    ``latents`` is ``[count, P]`` or a function from a slice of rows to those rows (read on demand). Runs on
    ``device`` in batches of ``batch_size`` signals (None: as many as keep one layer's activations near
    :data:`DECODE_FLOATS`); a single signal larger than that is evaluated in chunks of points.
    """
    rows = latents if callable(latents) else (lambda part: latents[part])
    points, channels = math.prod(int(s) for s in spatial), cfg.out_dims
    point_chunk = min(points, max(1, DECODE_FLOATS // cfg.hidden_dim))
    if batch_size is None:
        batch_size = max(1, DECODE_FLOATS // (point_chunk * cfg.hidden_dim))
    coords = coordinate_grid(spatial, device=device)  # [points, C]
    out = torch.empty((count, channels, points))
    with torch.no_grad():
        for start in range(0, count, batch_size):
            chunk = rows(slice(start, start + batch_size)).to(device, torch.float32)  # [b, P]
            for p in range(0, points, point_chunk):
                values = forward(params, chunk, coords[p:p + point_chunk], cfg).clamp(0.0, 1.0)  # [b, n, D]
                out[start:start + len(chunk), :, p:p + point_chunk] = values.transpose(1, 2).cpu()
    return out.reshape(count, channels, *spatial)


def decode(
    params: Params, latents: Tensor, cfg: FieldConfig, spatial: Sequence[int], *, clamp: bool = True
) -> Tensor:
    """Render latents ``[B, P]`` on a regular grid → signals ``[B, D, *spatial]`` (clamped to [0, 1])."""
    coords = coordinate_grid(spatial, device=latents.device, dtype=latents.dtype)
    with torch.no_grad():
        values = forward(params, latents, coords, cfg)
    if clamp:
        values = values.clamp(0.0, 1.0)
    return from_points(values, spatial)
