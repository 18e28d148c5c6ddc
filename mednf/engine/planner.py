"""Memory planner: how many signals a meta-iteration may process at once, and how large a fit batch may be,
so that the process stays inside a memory budget — decided from the configuration before anything is
allocated.

The budget (a size, or a safe share of what is free, and what the process already holds) and every probe of
the machine are :mod:`mednf.engine.memory`.

The model (bytes; calibrated on the CPU by ``benchmarks/planner.py calibrate``, see benchmarks/RESULTS.md)
-----------------------------------------------------------------------------------------------------
Notation as in :class:`mednf.engine.config.FieldConfig`: K layers, L hidden units, P latent size, C
coordinate and D value dimensions; N points per signal, n = ⌊γN⌋ context points, G inner steps
(1 when first-order: only one inner graph is alive at a time), U = L·(K-1) (hidden unit × sine layer),
|θ| the bytes of θ in float32, s the precision factor (1 for fp32 and tf32, and for bf16 too: measured at
or below fp32, see :data:`CPU_MODEL`).

One meta-iteration on m signals at a time (a micro-batch) peaks at::

    in_use + F_meta + m · S_meta
    S_meta = s · (INNER · G · n · U + OUTER · N · U + POINT · N · (C + D))          one signal's graph
    F_meta = THETA · |θ| + RUNTIME + BATCH · B_local · N · D                          fixed

INNER is the second-order graph of one inner step: the forward's z_k, h_k and the backward's cos z_k,
∂z_k, ∂h_k that ``create_graph`` keeps — 19.7 B per (context point, unit, sine layer, inner step) counted
with ``torch.autograd.graph.saved_tensors_hooks``, ≈ 5 float32 tensors — plus the gradients of them that
the double backward holds and the allocator's share: **36 B** measured. OUTER is the full-grid forward
(z_k, h_k: 8 B saved) and the working set of the backward: **15 B** per (point, unit, sine layer). POINT
(16 B) the per-point tensors (targets, coordinates, errors, context indices). THETA covers θ, its gradient, AdamW's two
moments, the folded copy of θ (:func:`mednf.engine.field.prepare`) and its gradient, and the temporaries of clipping and
the (foreach) AdamW step (**10** |θ|); RUNTIME (104 MiB) is what autograd and the optimizer allocate on first
use; BATCH (5 B) the local batch of signals as uint8 and float32 (it is loaded whole and then sliced into
micro-batches). The paper's 2D configuration (K15 L256 P2048, 64², G10 γ .25) thus costs 1.44 GiB per
signal plus 0.41 GiB fixed; with 0.25 GiB in use and the margin, an 8 GB budget runs B = 24 as 6 parts of 4.

A fit batch of b signals (:func:`mednf.engine.fit.fit_batch`; the latent gradient runs in chunks of
``chunk_rows`` (signal, point) rows, all points at once when ``chunk_rows`` is None) peaks at::

    in_use + F_fit + b · S_fit
    S_fit = FIT_SIGNAL · N · L + FIT_POINT · N · (1 + D)  [+ FIT_CHUNK · N · U unchunked]
    F_fit = FIT_THETA · |θ| + FIT_CHUNK · rows · U + RUNTIME + 3 · rows_out · P · 4

FIT_SIGNAL (16 B) is the final, unchunked evaluation of the fitted field (``h``, a product and a sine per
layer at a time: three ``[b, N, L]`` tensors), FIT_POINT (8 B) the subset keys, weights, targets and the
reconstruction, FIT_CHUNK (5 B) the cosines and activations of one chunk of the hand-written backward
(:mod:`mednf.engine.latent_grad`), FIT_THETA (3) θ and its fold, rows_out the latents kept for a block of
rows. A build plans its fits again when they start (:func:`fit_batch_now`): freed pages of the autograd
graphs are given back to the OS first (``malloc_trim``), and what the process then holds (θ, AdamW, what
the allocator kept) is the new ``in_use``.

Small parts on the CPU
----------------------
On the CPU (glibc, without ``MEDNF_MALLOC=keep``), when the whole batch's ``[B, N, L]`` float32 activation
reaches glibc's largest mmap threshold (32 MiB) and one signal's is within :data:`HEAP_TENSOR_BYTES`
(16 MiB), the micro-batch is also capped so that one ``[m, N, L]`` activation stays within 16 MiB. glibc serves blocks
above its mmap threshold (at most 32 MiB) with a fresh ``mmap``, and every page of such a block is faulted in and zeroed
by the kernel on first touch, on every meta-iteration (:mod:`mednf.engine.allocator`); smaller blocks are
reused from the heap. Measured at the paper 2D config, B = 8, on the 2-core Xeon (benchmarks/RESULTS.md,
issue #10, "Small parts"): the whole batch (32 MiB tensors) 8.4–10.1 s and ≈ 7·10⁵ page faults per
iteration, parts of 4 (16 MiB) 6.4–7.3 s and 2–3·10⁵, parts of 2 6.7–7.3 s and 1·10⁵, with peak RSS 8.0 /
5.0 / 3.0 GiB and the same loss to 7 digits. The parts change only the order in which the meta-gradient is
summed (tests/test_meta_gradient.py checks it against the whole batch in float64). The small presets are
not split (their whole batches are below 32 MiB: cpu-small-3d at 28³, B4, is 22 MiB), nor are configurations
whose single signal is above 16 MiB (2d-224, 3d-32 at 28³ and 32³: parts of one would not help; 2d-128's
16 MiB per signal runs in parts of one, not measured); CUDA is never capped (its caching allocator reuses blocks).

Every estimate is multiplied by ``1 + MARGIN`` (0.15: single peaks scatter by up to ±15 % around the
least-squares fit, because of the C allocator) before it is compared with the budget. The micro-batch is the largest
that fits, balanced over the parts (24 signals with room for 7 run as 4 parts of 6). When a single signal does not fit,
:func:`plan_memory` raises a one-line :class:`~mednf.errors.ConfigError` naming the estimate, the budget and the fixes —
before any tensor of the run is allocated, so an unbounded ``--size`` or latent size ends there too.

CUDA: the same coefficients are used (not calibrated on a GPU; the CPU numbers include the C allocator's
overhead, so they should over-estimate ``max_memory_allocated``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from mednf.engine.allocator import keeps_memory
from mednf.engine.config import EngineConfig, FieldConfig, FitConfig, MetaConfig
from mednf.engine.context import context_size
from mednf.engine.memory import MemoryBudget, format_bytes, is_glibc, memory_in_use, release_free_memory
from mednf.errors import ConfigError

# A fit after meta-learning in the same process (K5 L96 P512 on 16³, 15–16 signals, budget 600 MiB, 13 runs of
# tests/test_planner.py's probe with its 3D spec, 2026-12-02): 147–287 MiB above the resident set it planned
# beside, against 201 MiB modelled (up to 1.43×; a fit in a fresh process stays within 0.88× of the model),
# which put tests/test_planner.py's run over its budget once. What the fit adds must fit with this margin
# too; with it, 8 runs planned 10–11 signals and peaked at 489–555 MiB.
FIT_AFTER_META_MARGIN = 0.6
HEAP_TENSOR_BYTES = 16 * 2**20  # on the CPU, one [m, N, L] float32 activation of a meta micro-batch at most
MMAP_THRESHOLD_MAX = 32 * 2**20  # glibc's largest mmap threshold on 64-bit: blocks at least this big are mmapped
CPU_CHUNK_ROWS = 2048  # (signal, point) rows per chunk of the fit's latent gradient on the CPU (cache-sized)
# Fit batches are capped (a choice, not a memory limit): on the CPU a chunk of the latent gradient holds
# CPU_CHUNK_ROWS / b points per signal (64 at b = 32), on CUDA a block of rows is 1024 signals.
FIT_MAX_BATCH = {"cpu": 32, "cuda": 1024}

@dataclass(frozen=True)
class MemoryModel:
    """Coefficients of the memory model (module docstring); bytes per the unit each one names."""

    inner: float  # per (context point, unit, sine layer, inner step) of one signal
    outer: float  # per (point, unit, sine layer) of one signal
    point: float  # per (point, coordinate or value dimension) of one signal
    theta: float  # per byte of θ (float32)
    runtime: int  # bytes, once
    batch: float  # per (point, channel) of every signal of the local batch
    fit_signal: float  # per (point, unit) of one fit signal
    fit_point: float  # per (point, 1 + D) of one fit signal
    fit_chunk: float  # per (row, unit, sine layer) of one latent-gradient chunk
    fit_theta: float  # per byte of θ in the fit
    margin: float  # relative safety margin on every estimate
    bf16: float  # activation factor s of bf16 precision (fp32 and tf32: 1)


# Calibrated 2026-12-01 with `python benchmarks/planner.py calibrate` on the 2-core Intel Xeon machine
# (torch 2.13.0+cpu, glibc malloc; 13 configurations × 3-4 micro-batch sizes, peak RSS in a fresh process):
# non-negative least squares on the relative error gave inner 33.1, outer 13.8, point 0, θ 9.5, runtime
# 104 MiB (meta) and fit_signal 10.8, fit_point 7.5, fit θ 2.6 (fit); the coefficients below are those raised
# by ≈ 9 % (inner, outer; fit_signal to 16: the final evaluation holds three [B, N, L] tensors, 12 B, plus
# the allocator's share, and a fit that follows meta-learning lands beside its freed pages) so that the worst measured /
# modelled over the grid (1.11 meta, 1.04 fit) stays inside the 15 % margin; the allocator makes single peaks scatter by
# ±15 % around the fit. bf16 measured at or below fp32 (K15 L256 G2 on 32², m = 1 and 4: 0.93× and 0.87×), so it is
# planned as fp32. Numbers and per-configuration ratios: benchmarks/RESULTS.md, "Memory planner".
CPU_MODEL = MemoryModel(inner=36.0, outer=15.0, point=16.0, theta=10.0, runtime=104 * 2**20, batch=5.0,
                        fit_signal=16.0, fit_point=8.0, fit_chunk=5.0, fit_theta=3.0, margin=0.15, bf16=1.0)


def model_for(device: torch.device) -> MemoryModel:
    """The model for a device type (CUDA uses the CPU calibration, see the module docstring)."""
    return CPU_MODEL


# ---------------------------------------------------------------------------------------------- the model


def _precision_factor(cfg: FieldConfig, model: MemoryModel) -> float:
    return model.bf16 if getattr(cfg, "precision", "fp32") == "bf16" else 1.0


def theta_bytes(cfg: FieldConfig) -> int:
    """Bytes of θ in float32: K-1 sine layers, the stacked shift map and the output layer."""
    L, P = cfg.hidden_dim, cfg.latent_dim
    numel = (cfg.in_dims * L + L) + (cfg.num_layers - 2) * (L * L + L)
    numel += cfg.modulation_dim * (P + 1) + cfg.out_dims * (L + 1)
    return 4 * numel


def meta_signal_bytes(cfg: FieldConfig, meta: MetaConfig, num_points: int, model: MemoryModel = CPU_MODEL) -> int:
    """S_meta: the second-order graph of one signal in one meta-iteration (module docstring)."""
    n = num_points if meta.context_ratio >= 1.0 else context_size(num_points, meta.context_ratio)
    steps = 1 if meta.first_order else meta.inner_steps
    units = cfg.hidden_dim * cfg.num_sine_layers
    per = model.inner * steps * n * units + model.outer * num_points * units
    per += model.point * num_points * (cfg.in_dims + cfg.out_dims)
    return math.ceil(_precision_factor(cfg, model) * per)


def meta_fixed_bytes(cfg: FieldConfig, num_points: int, local_batch: int, model: MemoryModel = CPU_MODEL) -> int:
    """F_meta: θ with AdamW and gradients, runtime, and the local batch of signals."""
    return int(model.theta * theta_bytes(cfg) + model.runtime + model.batch * local_batch * num_points * cfg.out_dims)


def fit_signal_bytes(cfg: FieldConfig, num_points: int, chunk_rows: int | None, model: MemoryModel = CPU_MODEL) -> int:
    """S_fit: what one more signal in a fit batch costs."""
    per = model.fit_signal * num_points * cfg.hidden_dim + model.fit_point * num_points * (1 + cfg.out_dims)
    if chunk_rows is None:
        per += model.fit_chunk * num_points * cfg.hidden_dim * cfg.num_sine_layers
    return math.ceil(_precision_factor(cfg, model) * per)


def fit_fixed_bytes(cfg: FieldConfig, chunk_rows: int | None, rows_out: int, model: MemoryModel = CPU_MODEL) -> int:
    """F_fit: θ (and its fold), one chunk's working set, runtime and the latents of ``rows_out`` signals."""
    chunk = 0 if chunk_rows is None else model.fit_chunk * chunk_rows * cfg.hidden_dim * cfg.num_sine_layers
    return int(model.fit_theta * theta_bytes(cfg) + chunk + model.runtime + 3 * rows_out * cfg.latent_dim * 4)


def fit_chunk_rows(device: torch.device) -> int | None:
    """The fit's chunk of (signal, point) rows on a device: cache-sized on the CPU, everything on CUDA."""
    return CPU_CHUNK_ROWS if device.type == "cpu" else None


@dataclass(frozen=True)
class MemoryPlan:
    """What :func:`plan_memory` decided, with the estimates it decided on (all sizes in bytes)."""

    budget: MemoryBudget
    in_use: int  # what the process held when it planned
    local_batch: int  # signals of this rank per meta-iteration
    micro_batch: int  # signals per part of a meta-iteration
    fit_batch: int  # signals per fit batch (re-planned before each fit, see :func:`fit_batch_now`)
    meta_fixed: int
    meta_signal: int
    fit_fixed: int
    fit_signal: int
    margin: float
    rows_out: int = 1024
    heap_capped: bool = False  # the micro-batch was lowered to keep tensors on glibc's heap (module docstring)

    @property
    def parts(self) -> int:
        """Micro-batches per meta-iteration (the local batch in parts of at most ``micro_batch``)."""
        return -(-self.local_batch // self.micro_batch)

    @property
    def meta_peak(self) -> int:
        """Estimated peak of a meta-iteration (margin included), ``in_use`` included."""
        return int(self.in_use + (1 + self.margin) * (self.meta_fixed + self.micro_batch * self.meta_signal))

    @property
    def fit_peak(self) -> int:
        """Estimated peak of a fit batch (margin included), ``in_use`` included."""
        return int(self.in_use + (1 + self.margin) * (self.fit_fixed + self.fit_batch * self.fit_signal))

    def describe(self) -> str:
        """One line for build.log."""
        small = f" (small parts: tensors ≤ {format_bytes(HEAP_TENSOR_BYTES)} stay on the heap)"
        return (f"memory: budget {self.budget}, {format_bytes(self.in_use)} in use; meta-iteration of "
                f"{self.local_batch} signals in {self.parts} micro-batch(es) of ≤ {self.micro_batch}"
                f"{small if self.heap_capped else ''}"
                f" (estimated "
                f"peak {format_bytes(self.meta_peak)}: {format_bytes(self.meta_signal)} per signal); fit batches of "
                f"{self.fit_batch} (estimated peak {format_bytes(self.fit_peak)})")

    def to_dict(self) -> dict[str, Any]:
        """The plan and its estimated peaks as JSON-ready fields (for the manifest)."""
        return {"budget_bytes": self.budget.bytes, "budget": self.budget.origin, "in_use_bytes": self.in_use,
                "local_batch": self.local_batch, "micro_batch": self.micro_batch, "fit_batch": self.fit_batch,
                "heap_capped": self.heap_capped,
                "estimated_meta_peak_bytes": self.meta_peak, "estimated_fit_peak_bytes": self.fit_peak}


def _describe_config(f: FieldConfig, m: MetaConfig | None, spatial: Sequence[int]) -> str:
    text = f"K={f.num_layers} L={f.hidden_dim} P={f.latent_dim} on {'×'.join(str(s) for s in spatial)} points"
    if m is not None:
        text += f", G={m.inner_steps} γ={m.context_ratio:g}" + (", first-order" if m.first_order else "")
    return text


def _count(room: float, fixed: int, signal: int) -> int:
    """How many signals of ``signal`` bytes fit in ``room`` beside ``fixed``."""
    return math.floor((room - fixed) / signal) if room > fixed else 0


def _refuse(what: str, budget: MemoryBudget, in_use: int, fixed: int, signal: int, config: str,
            margin: float) -> None:
    need = int(in_use + (1 + margin) * (fixed + signal))
    raise ConfigError(
        f"memory budget {budget} is too small for {what} of {config}: the planner estimates a peak of "
        f"{format_bytes(need)} ({format_bytes(in_use)} already in use + {format_bytes(fixed)} fixed + "
        f"{format_bytes(signal)} per signal, + {margin:.0%} margin); use a smaller preset or --size, a lower "
        f"--batch-size, build on a GPU (--gpu N), or give a larger --memory-budget if the machine has it"
    )


def plan_memory(
    cfg: EngineConfig,
    spatial: Sequence[int],
    *,
    budget: MemoryBudget,
    device: torch.device | str = "cpu",
    local_batch: int | None = None,
    in_use: int | None = None,
    rows_out: int = 1024,
    model: MemoryModel | None = None,
    small_parts: bool | None = None,
) -> MemoryPlan:
    """Choose the meta micro-batch and the fit batch for ``cfg`` on signals of shape ``spatial``.

    Args:
        cfg: the engine configuration (field, meta-learning and fit).
        spatial: the signals' spatial shape, e.g. ``(64, 64)``; N is its product.
        budget: see :func:`mednf.engine.memory.resolve_budget`.
        device: where the engine runs.
        local_batch: this rank's signals per meta-iteration (default ``cfg.meta.batch_size``).
        in_use: what the process holds now (default :func:`memory_in_use`).
        rows_out: signals whose latents a fit call returns at once (a build's block of rows).
        model: the coefficients (default :func:`model_for` the device).
        small_parts: cap the micro-batch at :func:`heap_micro_batch` (module docstring, "Small parts on the
            CPU"); default on the CPU unless ``MEDNF_MALLOC=keep``.

    Returns:
        :class:`MemoryPlan`. Raises a one-line ConfigError when one meta signal or one fit signal does
        not fit. The fit is planned beside the meta-learner's θ, gradient and AdamW moments, which a build
        keeps while it fits; an explicit ``cfg.fit.batch_size`` is lowered to what fits.
    """
    device = torch.device(device)
    model = model or model_for(device)
    num_points = math.prod(int(s) for s in spatial)
    batch = cfg.meta.batch_size if local_batch is None else max(1, int(local_batch))
    in_use = memory_in_use(device) if in_use is None else int(in_use)
    room = budget.bytes / (1 + model.margin) - in_use

    meta_fixed = meta_fixed_bytes(cfg.field, num_points, batch, model)
    meta_signal = meta_signal_bytes(cfg.field, cfg.meta, num_points, model)
    fits = _count(room, meta_fixed, meta_signal)
    if fits < 1:
        _refuse("one meta-learning signal", budget, in_use, meta_fixed, meta_signal,
                _describe_config(cfg.field, cfg.meta, spatial), model.margin)
    if small_parts is None:
        small_parts = device.type == "cpu" and is_glibc() and not keeps_memory()
    heap_cap = heap_micro_batch(cfg.field, num_points, batch) if small_parts else batch
    parts = -(-batch // min(fits, heap_cap, batch))
    micro = -(-batch // parts)  # balanced: 24 signals with room for 7 → 4 parts of 6
    capped = parts > -(-batch // min(fits, batch))

    chunk_rows = fit_chunk_rows(device)
    fit_fixed = fit_fixed_bytes(cfg.field, chunk_rows, rows_out, model) + 4 * theta_bytes(cfg.field)
    fit_signal = fit_signal_bytes(cfg.field, num_points, chunk_rows, model)
    fit_fits = _count(room, fit_fixed, fit_signal)
    if fit_fits < 1:
        _refuse("fitting one signal", budget, in_use, fit_fixed, fit_signal, _describe_config(cfg.field, None, spatial),
                model.margin)
    fit_batch = _fit_batch(cfg.fit, device, fit_fits, rows_out)
    return MemoryPlan(budget, in_use, batch, micro, fit_batch, meta_fixed, meta_signal, fit_fixed, fit_signal,
                      model.margin, rows_out, heap_capped=capped)


def heap_micro_batch(cfg: FieldConfig, num_points: int, batch: int) -> int:
    """Signals per part that keep one ``[m, N, L]`` float32 activation within :data:`HEAP_TENSOR_BYTES` —
    ``batch`` (no cap) when the whole batch's tensor is below glibc's largest mmap threshold already (the heap
    serves it) or when one signal alone is above the cap (parts cannot help)."""
    per_signal = num_points * cfg.hidden_dim * 4
    if batch * per_signal < MMAP_THRESHOLD_MAX or per_signal > HEAP_TENSOR_BYTES:
        return batch
    return max(1, HEAP_TENSOR_BYTES // per_signal)


def _fit_batch(fit: FitConfig, device: torch.device, fits: int, rows_out: int) -> int:
    wanted = fit.batch_size or FIT_MAX_BATCH.get(device.type, FIT_MAX_BATCH["cpu"])
    return max(1, min(wanted, fits, rows_out))


def plan_fit_batch(cfg: FieldConfig, fit: FitConfig, num_points: int, device: torch.device, *,
                   budget: MemoryBudget, in_use: int | None = None, rows_out: int = 1024,
                   chunk_rows: int | None = None, model: MemoryModel | None = None, refuse: bool = True,
                   growth_margin: float | None = None) -> int:
    """Signals per fit batch inside ``budget`` beside what the process holds (``in_use``, default now).

    ``chunk_rows`` is the chunking the fit will use (None: all points at once). When one signal does not
    fit: the one-line ConfigError, or (``refuse=False``, for a build whose start plan already checked one
    signal) a batch of one. An explicit ``fit.batch_size`` is lowered to what fits. ``growth_margin``: the
    estimate of what the fit adds must also fit in what is left with this margin (:data:`FIT_AFTER_META_MARGIN`).
    """
    device = torch.device(device)
    model = model or model_for(device)
    in_use = memory_in_use(device) if in_use is None else int(in_use)
    room = budget.bytes / (1 + model.margin) - in_use
    if growth_margin is not None:
        room = min(room, (budget.bytes - in_use) / (1 + growth_margin))
    fixed = fit_fixed_bytes(cfg, chunk_rows, rows_out, model)
    signal = fit_signal_bytes(cfg, num_points, chunk_rows, model)
    fits = _count(room, fixed, signal)
    if fits < 1 and refuse:
        _refuse("fitting one signal", budget, in_use, fixed, signal, _describe_config(cfg, None, (num_points,)),
                model.margin)
    return _fit_batch(fit, device, fits, rows_out)


def fit_batch_now(plan: MemoryPlan, cfg: EngineConfig, spatial: Sequence[int], device: torch.device | str) -> int:
    """The fit batch for a fit that starts now, in a build planned by ``plan``: free heap pages are returned
    first (:func:`release_free_memory`), then the batch is planned beside what the process holds now (θ,
    the optimizer, what earlier phases left), at least one signal. On the CPU with the wider
    :data:`FIT_AFTER_META_MARGIN`: the heap that meta-learning fragmented makes the same fit peak higher and
    less predictably than in a fresh process."""
    device = torch.device(device)
    release_free_memory()
    return plan_fit_batch(cfg.field, cfg.fit, math.prod(int(s) for s in spatial), device, budget=plan.budget,
                          rows_out=plan.rows_out, chunk_rows=fit_chunk_rows(device), refuse=False,
                          growth_margin=FIT_AFTER_META_MARGIN if device.type == "cpu" else None)


__all__ = ["CPU_CHUNK_ROWS", "CPU_MODEL", "MemoryModel", "MemoryPlan", "fit_batch_now", "fit_fixed_bytes",
           "fit_signal_bytes", "meta_fixed_bytes", "meta_signal_bytes", "plan_fit_batch", "plan_memory", "theta_bytes"]
