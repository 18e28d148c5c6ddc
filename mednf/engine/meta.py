"""CAVIA meta-learning of the shared weights θ (paper Algorithm 1), batched over signals.

One meta-iteration on a batch of B signals:

1. φ₀ = 0 for every signal (``[B, P]``);
2. G inner SGD steps ``φ ← φ − α ∇_φ MSE(context)``, each on a fresh random context of γ·N coordinates
   per signal (:mod:`mednf.engine.context`). The B signals are independent, so the inner loss is the *sum* of
   the per-signal MSEs: its gradient w.r.t. the ``[B, P]`` latent holds each signal's own gradient;
3. meta-loss = mean over signals of the MSE on the **full** context at φ_G;
4. its gradient flows into θ *through* the inner loop (``create_graph=True``: second order), unless
   ``first_order`` is set (ablation); AdamW(β), cosine annealing, gradient-norm clipping.

Plain batched autograd was chosen over ``torch.func.vmap(grad(...))``: it gives the same gradient and was
faster in eager mode on CPU (measured and written down in ../shared/NOTES-ecosystem.md).

**Micro-batches.** The meta-gradient is a sum over signals of independent terms (each signal has its own
inner loop), so a batch can be processed ``micro_batch`` signals at a time, every part backpropagated into
θ's ``.grad`` before clipping and the AdamW step (:func:`accumulate_meta_gradient`). Each part's loss is its
sum of MSEs divided by the *whole* batch size, and each signal's contexts are keyed by its slot in the whole
batch, so the accumulated gradient is the full batch's gradient up to float rounding, and the memory of
the second-order graph is that of one micro-batch. :mod:`mednf.engine.planner` chooses the micro-batch.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.optim.optimizer as torch_optimizer
from torch import Tensor

from mednf.engine import field as nf
from mednf.engine.allocator import graph_memory
from mednf.engine.compiled import EAGER, modes, self_check, wanted
from mednf.engine.config import FieldConfig, MetaConfig
from mednf.engine.context import gather_context, random_contexts
from mednf.engine.execution import Execution, given_or_resolved
from mednf.engine.inner_grad import inner_gradient
from mednf.engine.metrics import check_signals, mse_to_psnr, signal_mse
from mednf.engine.precision import FP32, Precision, matmul_switches
from mednf.errors import ConfigError


def inner_loop(
    field: nf.PreparedField,
    targets: Tensor,
    coords: Tensor,
    *,
    lr: float,
    contexts: list[Tensor | None],
    create_graph: bool,
    latents: Tensor | None = None,
    explicit: bool = True,
    kernel: str = EAGER,
) -> tuple[Tensor, Tensor]:
    """Run ``len(contexts)`` SGD steps on the latents of a batch.

    Args:
        field: θ folded by :func:`mednf.engine.field.prepare` (once per meta-iteration).
        targets: ``[B, N, D]`` values on the full grid ``coords``.
        coords: ``[N, C]``, the full grid.
        lr: the inner learning rate α.
        contexts: per step, ``[B, n]`` context indices, or ``None`` for the full context.
        create_graph: keep the graph of each step (second-order meta-gradients).
        latents: starting φ ``[B, P]`` (default the field's φ₀: zeros, or the learned initial latent).
        explicit: with ``create_graph``, take each step's gradient from
            :class:`mednf.engine.inner_grad.InnerGradient` (explicit formulas, hand-written second-order
            backward; bf16 products as :mod:`mednf.engine.precision` says) instead of differentiating autograd's
            backward (used for the measurement-only bf16 parts).
            Both give the same meta-gradient (tests/test_meta_gradient.py); the explicit one is faster.
        kernel: the explicit gradient's bodies, ``"eager"`` or a ``torch.compile`` mode (:mod:`mednf.engine.compiled`).

    Returns:
        ``(φ [B, P], MSE of the last step's context [B])``.
    """
    B = targets.shape[0]
    phi = latents if latents is not None else field.start_latents(B, targets)
    if not phi.requires_grad:
        phi = phi.requires_grad_(True)
    last_mse = targets.new_zeros(B)
    for index in contexts:
        if index is None:
            sub_coords, sub_targets = coords, targets
        else:
            sub_coords, sub_targets = gather_context(coords, targets, index)
        if create_graph and explicit and not field.precision.measures_parts:
            grad, mse = inner_gradient(field, phi, sub_coords, sub_targets, kernel=kernel)  # hand-written 2nd order
        else:
            mse = signal_mse(nf.forward_prepared(field, phi, sub_coords), sub_targets)  # [B]
            (grad,) = torch.autograd.grad(mse.sum(), phi, create_graph=create_graph)
        phi = phi - field.latent_step(lr, grad)
        last_mse = mse.detach()
    return phi, last_mse


@dataclass
class MetaOutput:
    """One batch's meta-loss (scalar, with its graph) and per-signal statistics ``[B]``, latents ``[B, P]``."""

    loss: Tensor  # scalar meta-loss (mean over signals of the full-context MSE at φ_G)
    outer_mse: Tensor  # [B] detached
    inner_mse: Tensor  # [B] MSE of the last inner step's context, detached
    latents: Tensor  # [B, P] φ_G


def meta_objective(
    params: nf.Params,
    targets: Tensor,
    coords: Tensor,
    cfg: FieldConfig,
    meta: MetaConfig,
    contexts: list[Tensor | None],
    loss_divisor: int | None = None,
    explicit: bool = True,
    precision: Precision = FP32,
    kernel: str = EAGER,
) -> MetaOutput:
    """Meta-loss of one batch, differentiable w.r.t. θ (second order unless ``meta.first_order``).

    Args:
        params: θ, leaves with ``requires_grad``.
        targets: ``[B, N, D]``.
        coords: ``[N, C]``.
        cfg: the field's configuration.
        meta: the meta-learning configuration (inner steps and learning rate, first or second order).
        contexts: G entries of ``[B, n]`` indices (or None), from :func:`sample_contexts`.
        loss_divisor: None → mean over the B signals; else sum / divisor (a rank's share of a global
            batch of that size, so that summing the ranks' gradients gives the global mean).
        explicit: see :func:`inner_loop` (False: autograd's double backward, kept as a reference).
        precision: the resolved precision of the products (:func:`mednf.engine.field.prepare`).
        kernel: see :func:`inner_loop`.
    """
    field = nf.prepare(params, cfg, precision)
    phi, inner_mse = inner_loop(
        field, targets, coords, lr=meta.inner_lr, contexts=contexts, create_graph=not meta.first_order,
        explicit=explicit, kernel=kernel,
    )
    outer = signal_mse(nf.forward_prepared(field, phi, coords), targets)  # [B]
    loss = outer.mean() if loss_divisor is None else outer.sum() / loss_divisor
    return MetaOutput(loss, outer.detach(), inner_mse, phi)


def sample_contexts(
    meta: MetaConfig, batch: int, num_points: int, *, seed: int, iteration: int, device: torch.device,
    positions: Tensor | None = None, global_batch: int | None = None,
) -> list[Tensor | None]:
    """The G context index sets of one meta-iteration (``None`` entries when γ = 1).

    Subsets are keyed by each signal's slot ``iteration · global_batch + position`` in the global batch,
    so a rank that holds positions ``r::world`` of the batch draws the same subsets as one process would.
    """
    if meta.context_ratio >= 1.0:
        return [None] * meta.inner_steps
    if positions is None:
        positions = torch.arange(batch, dtype=torch.int64, device=device)
    slots = positions.to(device, torch.int64) + iteration * (global_batch or batch)
    return list(random_contexts(slots, num_points, meta.context_ratio, seed=seed, steps=meta.inner_steps))


def accumulate_meta_gradient(
    params: nf.Params,
    targets: Tensor,
    coords: Tensor,
    cfg: FieldConfig,
    meta: MetaConfig,
    *,
    seed: int,
    iteration: int,
    positions: Tensor | None = None,
    global_batch: int | None = None,
    micro_batch: int | None = None,
    explicit: bool = True,
    precision: Precision = FP32,
    kernel: str = EAGER,
) -> MetaOutput:
    """Backpropagate one meta-iteration's loss into the ``.grad`` of ``params``, ``micro_batch`` signals at a time.

    Args:
        params: θ, leaves with ``requires_grad``; their ``.grad`` is added to (zero it before).
        targets: ``[B, N, D]`` values of this process's B signals on the grid ``coords``.
        coords: ``[N, C]``.
        cfg: the field's configuration.
        meta: the meta-learning configuration.
        seed: keys the random contexts, with ``iteration`` and each signal's slot (:func:`sample_contexts`).
        iteration: the meta-iteration, as for ``seed``.
        positions: ``[B]`` positions of the signals in the global batch (default ``0..B-1``).
        global_batch: size of the global batch (default B): every part's loss is its sum of per-signal
            MSEs divided by it, so the parts' gradients add up to the gradient of the global mean.
        micro_batch: signals per part (None: all B at once). Part ``[s, e)`` draws the contexts of slots
            ``positions[s:e]``, exactly those a whole-batch call draws for these signals.
        explicit: see :func:`inner_loop`.
        precision: the resolved precision of the products (:func:`meta_objective`).
        kernel: see :func:`inner_loop`.

    Returns:
        :class:`MetaOutput` of the whole batch: the loss summed over parts (detached), ``outer_mse [B]``,
        ``inner_mse [B]`` and ``latents [B, P]`` (detached).
    """
    B, N = targets.shape[:2]
    if positions is None:
        positions = torch.arange(B, dtype=torch.int64, device=targets.device)  # made where it is used: no upload
    total = B if global_batch is None else global_batch
    size = B if micro_batch is None else max(1, min(int(micro_batch), B))
    loss = targets.new_zeros(())
    outer, inner, latents = [], [], []
    for start in range(0, B, size):
        stop = min(start + size, B)
        contexts = sample_contexts(meta, stop - start, N, seed=seed, iteration=iteration, device=targets.device,
                                   positions=positions[start:stop], global_batch=total)
        out = meta_objective(params, targets[start:stop], coords, cfg, meta, contexts, loss_divisor=total,
                             explicit=explicit, precision=precision, kernel=kernel)
        out.loss.backward()  # frees this part's graph before the next part builds its own
        loss = loss + out.loss.detach()
        outer.append(out.outer_mse)
        inner.append(out.inner_mse)
        latents.append(out.latents.detach())
    return MetaOutput(loss, torch.cat(outer), torch.cat(inner), torch.cat(latents))


def outer_groups(params: nf.Params, field_cfg: FieldConfig, meta_cfg: MetaConfig) -> list[dict[str, Any]]:
    """AdamW's parameter groups: one at β (θ's ``latent.*`` entries in one without weight decay, at
    β·``meta.latent_lr_scale``: AdamW moves a parameter by about its rate per step, so at β = 1e-4 rates that
    start at 1 move 2 % in 200 iterations); with
    ``meta.omega_lr`` sine layer k's weight and bias in a group of its own at β·ω_1/ω_k (a layer's effective
    step grows with its ω_k — the paper's Eq. 12 — so the deep, high-ω layers are slowed to the first layer's
    pace). The first group is always the β one (the reported learning rate)."""
    layer = {f"layers.{k}.{part}": k for k in range(field_cfg.num_sine_layers) for part in ("weight", "bias")}
    own = {name for name in params if name.startswith("latent.")} | (set(layer) if meta_cfg.omega_lr else set())
    groups: list[dict[str, Any]] = [{"params": [p for name, p in params.items() if name not in own]}]
    latent = [p for name, p in params.items() if name.startswith("latent.")]
    if latent:  # Meta-SGD's rates and a learned φ₀: no weight decay (it would pull the rates towards 0)
        groups.append({"params": latent, "weight_decay": 0.0, "lr": meta_cfg.meta_lr * meta_cfg.latent_lr_scale})
    if not meta_cfg.omega_lr:
        return groups
    omegas = field_cfg.omegas
    for k in range(field_cfg.num_sine_layers):
        groups.append({"params": [params[f"layers.{k}.weight"], params[f"layers.{k}.bias"]],
                       "lr": meta_cfg.meta_lr * omegas[0] / omegas[k]})
    return groups


def _kept(result: tuple[MetaOutput, dict[str, Tensor]]) -> tuple[MetaOutput, dict[str, Tensor]]:
    """A meta-gradient's output with copies of its grads (the next run of the self-check overwrites .grad)."""
    return result[0], {name: grad.clone() for name, grad in result[1].items()}


def _fused_adamw(device: torch.device) -> bool | None:
    """AdamW's fused kernel on an accelerator: its step counters live on the device, where the other
    implementations keep them on the host. The CPU keeps torch's default (the numbers of earlier builds)."""
    supported = torch_optimizer._get_fused_kernels_supported_devices()  # torch's own list
    return True if device.type != "cpu" and device.type in supported else None


STAT_NAMES = ("loss", "psnr", "psnr_inner", "grad_norm")


class MetaStats(Mapping[str, float]):
    """One meta-iteration's statistics (:data:`STAT_NAMES` and ``"lr"``), a mapping of floats.

    The values stay on the device until one is looked at; then all four are read at once (on CUDA: one
    transfer that waits for the iteration). :func:`read_stats` reads the values of many iterations together.
    """

    def __init__(self, values: Tensor, lr: float) -> None:
        self.tensor = values  # [4] on the learner's device, in STAT_NAMES order
        self.lr = lr
        self._read: dict[str, float] | None = None

    def _fill(self, numbers: list[float]) -> None:
        self._read = dict(zip(STAT_NAMES, numbers)) | {"lr": self.lr}

    def __getitem__(self, key: str) -> float:
        if self._read is None:
            self._fill(self.tensor.tolist())
        assert self._read is not None  # for mypy: _fill set it
        return self._read[key]

    def __iter__(self) -> Iterator[str]:
        return iter((*STAT_NAMES, "lr"))

    def __len__(self) -> int:
        return len(STAT_NAMES) + 1


def read_stats(stats: Sequence[MetaStats]) -> list[dict[str, float]]:
    """The values of several iterations' :class:`MetaStats`, read from the device in one transfer."""
    if not stats:
        return []
    for row, numbers in zip(stats, torch.stack([s.tensor for s in stats]).tolist()):
        row._fill(numbers)
    return [dict(row) for row in stats]


def lr_factor(meta_cfg: MetaConfig, iteration: int) -> float:
    """Learning rate of meta-iteration ``iteration`` (0-based) as a fraction of β: cosine annealing over
    ``meta.steps`` iterations, or constant; times a linear warm-up over ``meta.warmup_steps`` if set."""
    warmup = min(1.0, (iteration + 1) / meta_cfg.warmup_steps) if meta_cfg.warmup_steps else 1.0
    if meta_cfg.lr_schedule == "constant":
        return warmup
    return warmup * 0.5 * (1.0 + math.cos(math.pi * min(iteration, meta_cfg.steps) / meta_cfg.steps))


class MetaLearner:
    """Holds θ, AdamW and the learning-rate schedule; :meth:`step` runs one meta-iteration."""

    def __init__(
        self,
        field_cfg: FieldConfig,
        meta_cfg: MetaConfig,
        *,
        params: nf.Params | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
        explicit: bool = True,
        execution: Execution | None = None,
    ) -> None:
        """``execution``: device and resolved precision of every step (a build resolves it once); without
        one, ``field_cfg.precision`` is resolved here for ``device`` (default CPU).
        ``explicit``: the hand-written second-order inner gradient (default; False: autograd's double
        backward, the reference path, for benchmarks). Both give the same meta-gradient."""
        self.explicit = explicit
        self.field_cfg = field_cfg
        self.meta_cfg = meta_cfg
        self.seed = seed
        self.execution = given_or_resolved(execution, field_cfg.precision, device, stacklevel=2)
        self.device = self.execution.device
        if params is None:
            gen = torch.Generator().manual_seed(seed)
            params = nf.init_params(field_cfg, generator=gen, device=self.device)
        self.params = {k: v.detach().to(self.device).clone().requires_grad_(True) for k, v in params.items()}
        fused = _fused_adamw(self.device)
        self.optimizer = torch.optim.AdamW(
            outer_groups(self.params, field_cfg, meta_cfg), lr=meta_cfg.meta_lr, weight_decay=meta_cfg.weight_decay,
            fused=fused,
        )
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda i: lr_factor(meta_cfg, i))
        self.iteration = 0
        # the inner gradient's bodies: decided by the self-check of the first step where compiling is wanted
        compiles = explicit and not meta_cfg.first_order and not self.execution.precision.measures_parts
        self.kernel: str | None = None if compiles and wanted(self.device) else EAGER
        self.compile_report: dict[str, Any] | None = None  # what that self-check found (None: not wanted)
        self._grids: dict[tuple[tuple[int, ...], torch.dtype], Tensor] = {}

    def grid(self, spatial: tuple[int, ...], dtype: torch.dtype = torch.float32) -> Tensor:
        """Cached coordinate grid ``[N, C]`` for a spatial shape."""
        key = (spatial, dtype)
        if key not in self._grids:
            self._grids[key] = nf.coordinate_grid(spatial, device=self.device, dtype=dtype)
        return self._grids[key]

    def step(
        self,
        signals: Tensor,
        *,
        positions: Tensor | None = None,
        global_batch: int | None = None,
        reduce_grads: Callable[[list[Tensor]], None] | None = None,
        micro_batch: int | None = None,
    ) -> MetaStats:
        """One meta-iteration on channels-first signals ``[B, D, *spatial]`` in [0, 1].

        Data-parallel use (one call per rank, same iteration): ``positions`` ``[B]`` are the signals'
        positions in the global batch of size ``global_batch``, and ``reduce_grads`` sums the gradient
        tensors over the ranks in place (an all-reduce) before clipping. The update then equals one
        process's step on the whole global batch.

        ``micro_batch`` signals are processed at a time (None: the whole local batch), their gradients
        accumulated before the all-reduce, clipping and AdamW (:func:`accumulate_meta_gradient`): the same
        step up to float rounding, with the memory of one micro-batch (:mod:`mednf.engine.planner`).

        ``signals`` may be uint8 (0..255, scaled on the device: a quarter of the bytes to upload) or float in
        [0, 1]; a float batch in host memory is checked for NaN/Inf here, one already on the device is not.

        Returns :class:`MetaStats`: the (local) meta-loss, mean PSNR on the full context after G steps, mean
        PSNR of the last inner context, the gradient norm before clipping and the learning rate used — left
        on the device until read, so that an iteration waits for nothing (:func:`read_stats` reads many at
        once).
        """
        cfg = self.field_cfg
        if signals.dim() != cfg.in_dims + 2 or signals.shape[1] != cfg.out_dims:
            raise ConfigError(
                f"signals shape = {tuple(signals.shape)} is invalid: expected [B, {cfg.out_dims}, "
                f"{', '.join(['S'] * cfg.in_dims)}] for in_dims={cfg.in_dims}, out_dims={cfg.out_dims}; "
                "check the channel count and dimensionality of the data"
            )
        dtype = self.params["last.bias"].dtype  # float32, or float64 for exactness tests
        if signals.is_floating_point() and signals.device.type == "cpu":
            check_signals(signals)  # in host memory: no device sync (a batch on the device is its maker's to check)
        signals = signals.to(self.device, non_blocking=True)
        if signals.dtype == torch.uint8:  # uploaded as bytes (4× fewer), scaled on the device as as_float_signals does
            signals = signals.to(torch.float32) / 255.0
        signals = signals.to(dtype)
        spatial = tuple(signals.shape[2:])
        coords = self.grid(spatial, dtype)
        targets = nf.to_points(signals)  # [B, N, D]
        allocator = graph_memory() if self.device.type == "cpu" else contextlib.nullcontext()
        precision = self.execution.precision
        def meta_gradient(kernel: str) -> tuple[MetaOutput, dict[str, Tensor]]:  # into .grad; returns the grads too
            self.optimizer.zero_grad(set_to_none=True)
            out = accumulate_meta_gradient(
                self.params, targets, coords, cfg, self.meta_cfg, seed=self.seed, iteration=self.iteration,
                positions=positions, global_batch=global_batch, micro_batch=micro_batch, explicit=self.explicit,
                precision=precision, kernel=kernel,
            )
            return out, {name: p.grad for name, p in self.params.items() if p.grad is not None}

        with matmul_switches(precision), allocator:  # allocator: no page fault per large tensor on the CPU
            if self.kernel is None:  # the first step where compiling is wanted: compiled only if it agrees
                self.kernel, (out, grads), report = self_check(
                    "meta-gradient", lambda kernel: _kept(meta_gradient(kernel)),
                    lambda result: list(result[1].values()), modes(self.device, graphs=False), precision.effective)
                self.compile_report = report.to_dict()
                for name, param in self.params.items():
                    param.grad = grads.get(name)  # the grads of the kernel chosen (the last one run may be another)
            else:
                out, _ = meta_gradient(self.kernel)
        if reduce_grads is not None:
            reduce_grads([p.grad for p in self.params.values() if p.grad is not None])  # all have one
        grad_norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.meta_cfg.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        values = torch.stack([out.loss.detach(), mse_to_psnr(out.outer_mse).mean(), mse_to_psnr(out.inner_mse).mean(),
                              grad_norm.to(out.loss.dtype)])  # [4] on the device: read when first looked at
        return MetaStats(values, float(lr))

    def detached_params(self) -> nf.Params:
        """θ without autograd history (for fitting and saving)."""
        return {k: v.detach() for k, v in self.params.items()}

    def state_dict(self) -> dict[str, Any]:
        """θ (detached), the optimizer's and scheduler's states, the iteration and the seed, for a checkpoint."""
        return {
            "params": self.detached_params(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iteration": self.iteration,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict` in place (θ copied into the existing tensors)."""
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.iteration = int(state["iteration"])
        self.seed = int(state["seed"])
