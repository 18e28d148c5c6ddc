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
Both are computed as ``sin((ω_k W_k) h + bias_k)`` with a per-signal ``bias_k [B, L]``, which saves one
elementwise pass over the ``[B, N, L]`` activations per layer.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from mednf.config import ConfigError, FieldConfig

Params = dict[str, Tensor]


def param_shapes(cfg: FieldConfig) -> dict[str, tuple[int, ...]]:
    """Name → shape of every tensor in θ."""
    L, P = cfg.hidden_dim, cfg.latent_dim
    shapes: dict[str, tuple[int, ...]] = {}
    for k in range(cfg.num_sine_layers):
        shapes[f"layers.{k}.weight"] = (L, cfg.in_dims if k == 0 else L)
        shapes[f"layers.{k}.bias"] = (L,)
    shapes["shift.weight"] = (cfg.modulation_dim, P)
    shapes["shift.bias"] = (cfg.modulation_dim,)
    shapes["last.weight"] = (cfg.out_dims, L)
    shapes["last.bias"] = (cfg.out_dims,)
    return shapes


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
    """ω_k repeated over each layer's L shift rows: [(K-1)·L]."""
    omegas = torch.tensor(cfg.omegas, dtype=like.dtype, device=like.device)
    return omegas.repeat_interleave(cfg.hidden_dim)


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
            f"mednf.field.coordinate_grid(shape) for a {cfg.in_dims}-D signal"
        )


def forward(params: Params, latents: Tensor, coords: Tensor, cfg: FieldConfig) -> Tensor:
    """Evaluate the field.

    Args:
        params: θ (see module docstring).
        latents: φ, ``[B, P]``.
        coords: ``[N, C]`` shared by the batch, or ``[B, N, C]`` per signal, in [-1, 1].
    Returns:
        values ``[B, N, D]``.
    """
    B = latents.shape[0]
    check_coords(coords, cfg, B)
    shifts = torch.addmm(params["shift.bias"], latents, params["shift.weight"].t())  # [B, (K-1)·L]
    shifts = shifts.view(B, cfg.num_sine_layers, cfg.hidden_dim)  # [B, K-1, L]
    inside = cfg.shift_mode == "inside"
    h: Tensor | None = None
    for k, omega in enumerate(cfg.omegas):
        weight = params[f"layers.{k}.weight"] * omega  # [L, n]
        layer_bias = params[f"layers.{k}.bias"]
        if inside:
            bias = (layer_bias + shifts[:, k]) * omega  # [B, L]
        else:
            bias = layer_bias * omega + shifts[:, k]
        z = torch.matmul(coords if h is None else h, weight.t())  # [N, L] or [B, N, L]
        y = torch.sin(z + bias[:, None, :])  # [B, N, L]
        h = y if h is None else h + y
    assert h is not None
    return torch.matmul(h, params["last.weight"].t()) + (params["last.bias"] + 0.5)  # [B, N, D]


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
