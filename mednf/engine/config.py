"""Hyper-parameters of the MedFuncta engine, validated on construction.

Three frozen dataclasses, one per stage:

- :class:`FieldConfig` — the modulated SIREN (K, L, P, C, D, the ω-schedule, where the shift enters);
- :class:`MetaConfig`  — CAVIA meta-learning of the shared weights θ (G, α, γ, β, B, schedule);
- :class:`FitConfig`   — test-time fitting of one latent per signal (H, α, optional gradient rescaling).

Every invalid value raises :class:`ConfigError` (a ``ValueError``) with one line that names the field,
the value, what was expected and how to fix it, so the CLI can print it without a traceback.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal

from mednf.errors import ConfigError, did_you_mean

ShiftMode = Literal["inside", "outside"]
PRECISIONS = ("fp32", "tf32", "bf16")  # see mednf.engine.precision


def check_precision(value: Any) -> str:
    """``value`` if it names a precision, else a one-line ConfigError (with the closest name)."""
    if not isinstance(value, str) or value not in PRECISIONS:
        hint = did_you_mean(value.lower(), PRECISIONS) if isinstance(value, str) else ""
        raise ConfigError(f"precision = {value!r} is invalid: expected one of 'fp32', 'tf32', 'bf16'; "
                          f"use fp32 (default, exact), tf32 (CUDA tensor cores) or bf16{hint}")
    return value


def is_number(value: Any) -> bool:
    """An int or float, never a bool (``True`` is an ``int`` to Python, not a learning rate to us)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _require(ok: bool, name: str, value: Any, expected: str, fix: str) -> None:
    if not ok:
        raise ConfigError(f"{name} = {value!r} is invalid: expected {expected}; {fix}")


def _finite_positive(name: str, value: float, fix: str) -> None:
    _require(
        is_number(value) and math.isfinite(value) and value > 0,
        name, value, "a finite number > 0", fix,
    )


def _positive_int(name: str, value: int, fix: str) -> None:
    _require(isinstance(value, int) and not isinstance(value, bool) and value > 0,
             name, value, "an integer > 0", fix)


def _flag(name: str, value: bool, fix: str) -> None:
    _require(isinstance(value, bool), name, value, "true or false", fix)


@dataclass(frozen=True)
class FieldConfig:
    """The modulated SIREN f_{θ,φ}: coordinates [N, C] → values [N, D], latent φ ∈ R^P.

    ``num_layers`` (K) counts every linear layer: K-1 sine layers (the first one and K-2 residual
    hidden ones), each shifted by ``m_k(φ) = M_k φ + c_k``, and one linear output layer (+0.5).

    The ω-schedule is linear over the K-1 sine layers and can be given either way:

    - paper (Table 1): ``omega_first`` and ``omega_last`` (ω of the first / last sine layer);
    - official configs: ``omega_first`` and ``omega_increment`` (ω_k = ω_1 + (k-1)·increment).

    When ``omega_increment`` is set it wins and ``omega_last`` is set to the ω it implies;
    ``omega_last=None`` and no increment give a constant ω.

    ``shift_mode`` says where the shift enters the sine:

    - ``"inside"`` (default, the official code): ``sin(ω_k · (W x + b + m_k(φ)))``;
    - ``"outside"`` (the paper's Eq. 1): ``sin(ω_k · (W x + b) + m_k(φ))``.

    The two are the same family of functions (``M_k`` rescaled by ω_k, see
    :func:`mednf.engine.field.convert_shift_mode`). The default is ``"inside"`` because the paper's numbers,
    its released weights and its inner learning rate α = 1e-2 all come from that parametrisation.

    ``precision`` is the format of the matrix products while meta-learning and fitting (``"fp32"``,
    ``"tf32"``, ``"bf16"``; :mod:`mednf.engine.precision` says what stays fp32 and what runs where the
    hardware lacks the format). It is a setting of how θ and the latents are computed, not of the function
    they define: decoding always runs fp32. Configs written before it existed load as ``"fp32"``.
    """

    in_dims: int = 2  # C: 1 signal/ECG, 2 image, 3 volume
    out_dims: int = 1  # D: 1 gray, 3 RGB
    num_layers: int = 15  # K
    hidden_dim: int = 256  # L
    latent_dim: int = 2048  # P
    omega_first: float = 20.0
    omega_last: float | None = 400.0
    omega_increment: float | None = None
    shift_mode: ShiftMode = "inside"
    precision: Literal["fp32", "tf32", "bf16"] = "fp32"
    learned_inner_lr: bool = False  # Meta-SGD: θ holds ``latent.lr`` [P], per-dimension multipliers of α (start 1)
    learned_init: bool = False  # θ holds ``latent.init`` [P], the latent inner loop and fit start from (start 0)

    def __post_init__(self) -> None:
        _require(not isinstance(self.in_dims, bool) and self.in_dims in (1, 2, 3), "in_dims (C)", self.in_dims,
                 "1, 2 or 3 coordinate dimensions", "use 1 for signals, 2 for images, 3 for volumes")
        _positive_int("out_dims (D)", self.out_dims, "use 1 for gray or 3 for RGB")
        _require(isinstance(self.num_layers, int) and not isinstance(self.num_layers, bool) and self.num_layers >= 2,
                 "num_layers (K)", self.num_layers, "an integer ≥ 2 (one sine layer and the linear output layer)",
                 "set num_layers to 2 or more (the paper uses 15 for images)")
        _positive_int("hidden_dim (L)", self.hidden_dim, "set the layer width, e.g. 256")
        _positive_int("latent_dim (P)", self.latent_dim, "set the latent size, e.g. 2048")
        _finite_positive("omega_first", self.omega_first, "set ω of the first sine layer, e.g. 20")
        if self.omega_increment is not None:
            _require(is_number(self.omega_increment) and math.isfinite(self.omega_increment),
                     "omega_increment", self.omega_increment, "a finite number",
                     "set the per-layer ω increment, e.g. 5")
            last = self.omega_first + (self.num_sine_layers - 1) * self.omega_increment
            _require(last > 0, "omega_increment", self.omega_increment,
                     f"a schedule whose every ω is > 0 (the last would be {last})",
                     "use a smaller negative increment or a larger omega_first")
            object.__setattr__(self, "omega_last", float(last))  # the increment form wins; keep both in sync
        if self.omega_last is not None:
            _finite_positive("omega_last", self.omega_last, "set ω of the last sine layer, e.g. 400")
        _require(self.shift_mode in ("inside", "outside"), "shift_mode", self.shift_mode,
                 "'inside' (official code) or 'outside' (paper Eq. 1)", "pick one of the two")
        check_precision(self.precision)
        _flag("learned_inner_lr", self.learned_inner_lr, "use false (the paper) or true (Meta-SGD inner rates)")
        _flag("learned_init", self.learned_init, "use false (the paper: φ₀ = 0) or true (a learned φ₀)")

    @property
    def num_sine_layers(self) -> int:
        """K-1: the first layer plus the K-2 residual hidden layers, all shift-modulated."""
        return self.num_layers - 1

    @property
    def omegas(self) -> tuple[float, ...]:
        """ω_k of every sine layer, k = 1..K-1, linear over the layers."""
        n = self.num_sine_layers
        if self.omega_increment is not None:
            return tuple(self.omega_first + k * self.omega_increment for k in range(n))
        if self.omega_last is None or n == 1:  # constant ω
            return (float(self.omega_first),) * n
        step = (self.omega_last - self.omega_first) / (n - 1)
        return tuple(self.omega_first + k * step for k in range(n))

    @property
    def modulation_dim(self) -> int:
        """Number of shift values produced from φ: (K-1)·L."""
        return self.num_sine_layers * self.hidden_dim

    def flops_per_point(self) -> int:
        """Forward FLOPs per coordinate through the network (2·Σ fan_in·fan_out, modulation excluded)."""
        L = self.hidden_dim
        return 2 * (self.in_dims * L + (self.num_layers - 2) * L * L + L * self.out_dims)


@dataclass(frozen=True)
class MetaConfig:
    """CAVIA meta-learning of θ (paper Algorithm 1)."""

    inner_steps: int = 10  # G
    inner_lr: float = 1e-2  # α
    context_ratio: float = 0.25  # γ: fraction of coordinates in each inner step's random context
    meta_lr: float = 3e-6  # β (AdamW)
    weight_decay: float = 0.01  # AdamW's default, as in the official code
    batch_size: int = 24  # B
    steps: int = 100_000  # outer iterations (length of the cosine schedule)
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    grad_clip: float = 1.0
    first_order: bool = False  # ablation switch: drop the second-order terms
    omega_lr: bool = False  # sine layer k's outer learning rate β·ω_1/ω_k (the others β)
    warmup_steps: int = 0  # linear warm-up of the outer learning rate over this many iterations
    latent_lr_scale: float = 1.0  # outer learning rate of θ's latent.* entries (Meta-SGD rates, φ₀) as a multiple of β

    def __post_init__(self) -> None:
        _positive_int("inner_steps (G)", self.inner_steps, "use ≥ 1 inner SGD step (paper: 10)")
        _finite_positive("inner_lr (α)", self.inner_lr, "the paper uses 1e-2")
        _require(is_number(self.context_ratio) and 0 < self.context_ratio <= 1,
                 "context_ratio (γ)", self.context_ratio, "a fraction in (0, 1]",
                 "use 0.25 for images (paper) or 1.0 for the full context")
        _finite_positive("meta_lr (β)", self.meta_lr, "the paper uses 3e-6")
        _require(is_number(self.weight_decay) and math.isfinite(self.weight_decay)
                 and self.weight_decay >= 0, "weight_decay", self.weight_decay, "a finite number ≥ 0",
                 "AdamW's default is 0.01")
        _positive_int("batch_size (B)", self.batch_size, "the paper uses 24 for 64×64 images")
        _positive_int("steps", self.steps, "set the number of meta-iterations")
        _require(self.lr_schedule in ("cosine", "constant"), "lr_schedule", self.lr_schedule,
                 "'cosine' or 'constant'", "pick one of the two")
        _finite_positive("grad_clip", self.grad_clip, "the paper clips the gradient norm at 1.0")
        _flag("first_order", self.first_order, "use false (the paper) or true (the first-order ablation)")
        _flag("omega_lr", self.omega_lr, "use false (the paper: one β) or true (β·ω_1/ω_k for sine layer k)")
        _require(isinstance(self.warmup_steps, int) and not isinstance(self.warmup_steps, bool)
                 and self.warmup_steps >= 0, "warmup_steps", self.warmup_steps, "an integer ≥ 0",
                 "use 0 (the paper) or a few hundred iterations")
        _finite_positive("latent_lr_scale", self.latent_lr_scale,
                         "use 1 (β, as θ's other entries) or e.g. 100 so that rates that start at 1 can move")


@dataclass(frozen=True)
class FitConfig:
    """Test-time adaptation: H SGD steps on φ (θ frozen) from φ₀ = 0, full context."""

    steps: int = 20  # H
    lr: float = 1e-2  # α
    grad_rescale: bool = False  # official code: scale each step by ‖∇ on γ-subset‖ / ‖∇ on full‖
    rescale_ratio: float = 0.25  # γ of the subset used for that rescaling
    batch_size: int | None = None  # None → sized to the memory budget
    memory_budget_mb: float | None = None  # None → device default (see mednf.engine.fit)

    def __post_init__(self) -> None:
        _require(isinstance(self.steps, int) and not isinstance(self.steps, bool) and self.steps >= 0,
                 "steps (H)", self.steps, "an integer ≥ 0", "the paper uses H = 20")
        _finite_positive("lr (α)", self.lr, "the paper uses 1e-2")
        _flag("grad_rescale", self.grad_rescale, "use true (the official code) or false")
        _require(is_number(self.rescale_ratio) and 0 < self.rescale_ratio <= 1,
                 "rescale_ratio (γ)", self.rescale_ratio, "a fraction in (0, 1]", "use 0.25 as the official code")
        if self.batch_size is not None:
            _positive_int("batch_size", self.batch_size, "leave it unset to size batches to memory")
        if self.memory_budget_mb is not None:
            _finite_positive("memory_budget_mb", self.memory_budget_mb, "give the budget in MiB, e.g. 2048")


@dataclass(frozen=True)
class EngineConfig:
    """One complete configuration: field + meta-learning + fitting, as a preset stores it."""

    field: FieldConfig = dataclasses.field(default_factory=FieldConfig)
    meta: MetaConfig = dataclasses.field(default_factory=MetaConfig)
    fit: FitConfig = dataclasses.field(default_factory=FitConfig)

    @property
    def precision(self) -> str:
        """The requested precision of meta-learning and fitting (``field.precision``)."""
        return self.field.precision

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """The three sections as nested plain dicts (the inverse of :meth:`from_dict`)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, dict[str, Any]]) -> EngineConfig:
        """Build from nested dicts; unknown keys are an error that names them."""
        parts: dict[str, Any] = {}
        for key, klass in (("field", FieldConfig), ("meta", MetaConfig), ("fit", FitConfig)):
            values = dict(data.get(key, {}))
            known = [f.name for f in dataclasses.fields(klass)]
            unknown = sorted(set(values) - set(known))
            _require(not unknown, f"[{key}] keys", unknown, f"only {sorted(known)}",
                     "remove or rename the unknown keys" + (did_you_mean(unknown[0], known) if unknown else ""))
            if key == "field" and {"omega_first", "omega_last", "omega_increment"} & set(values):
                # a schedule written in a dict is complete: unnamed parts are absent, not defaults
                values.setdefault("omega_last", None)
                values.setdefault("omega_increment", None)
            parts[key] = klass(**values)
        extra = sorted(set(data) - {"field", "meta", "fit"})
        _require(not extra, "config sections", extra, "only [field], [meta], [fit]", "remove the others")
        return cls(**parts)

    def replace(self, **sections: dict[str, Any]) -> EngineConfig:
        """Copy with some fields overridden, e.g. ``cfg.replace(meta={"steps": 300})``."""
        merged = self.to_dict()
        for key, values in sections.items():
            _require(key in merged, "config section", key, "field, meta or fit",
                     "use one of those" + did_you_mean(key, merged))
            if key == "field" and {"omega_last", "omega_increment"} & set(values):
                merged[key]["omega_last"] = merged[key]["omega_increment"] = None  # the forms exclude each other
            merged[key].update(values)
        return EngineConfig.from_dict(merged)


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
    if cfg.learned_inner_lr:
        shapes["latent.lr"] = (P,)
    if cfg.learned_init:
        shapes["latent.init"] = (P,)
    return shapes
