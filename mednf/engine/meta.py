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
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from mednf.engine import field as nf
from mednf.engine.config import FieldConfig, MetaConfig
from mednf.engine.context import gather_context, random_context
from mednf.errors import ConfigError


def check_signals(values: Tensor, what: str = "signals") -> None:
    """Refuse non-finite values with a message that says how many and where to look."""
    finite = torch.isfinite(values)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise ConfigError(
            f"{what} contain {bad} NaN/Inf value(s): expected finite values in [0, 1]; "
            f"clean or drop those samples before meta-learning or fitting"
        )


def signal_mse(pred: Tensor, target: Tensor) -> Tensor:
    """Per-signal mean squared error over points and channels: ``[B, N, D]`` × 2 → ``[B]``."""
    return (pred - target).pow(2).mean(dim=(1, 2))


def mse_to_psnr(mse: Tensor) -> Tensor:
    """PSNR in dB for signals with data range 1: ``[B]`` → ``[B]``."""
    return -10.0 * torch.log10(mse.clamp_min(1e-12))


def inner_loop(
    field: nf.PreparedField,
    targets: Tensor,
    coords: Tensor,
    *,
    lr: float,
    contexts: list[Tensor | None],
    create_graph: bool,
    latents: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Run ``len(contexts)`` SGD steps on the latents of a batch.

    Args:
        field: θ folded by :func:`mednf.engine.field.prepare` (once per meta-iteration).
        targets: ``[B, N, D]`` values on the full grid ``coords [N, C]``.
        contexts: per step, ``[B, n]`` context indices, or ``None`` for the full context.
        create_graph: keep the graph of each step (second-order meta-gradients).
        latents: starting φ ``[B, P]`` (default zeros).
    Returns:
        ``(φ [B, P], MSE of the last step's context [B])``.
    """
    B = targets.shape[0]
    phi = latents if latents is not None else targets.new_zeros(B, field.cfg.latent_dim)
    if not phi.requires_grad:
        phi = phi.requires_grad_(True)
    last_mse = targets.new_zeros(B)
    for index in contexts:
        if index is None:
            sub_coords, sub_targets = coords, targets
        else:
            sub_coords, sub_targets = gather_context(coords, targets, index)
        mse = signal_mse(nf.forward_prepared(field, phi, sub_coords), sub_targets)  # [B]
        (grad,) = torch.autograd.grad(mse.sum(), phi, create_graph=create_graph)
        phi = phi - lr * grad
        last_mse = mse.detach()
    return phi, last_mse


@dataclass
class MetaOutput:
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
) -> MetaOutput:
    """Meta-loss of one batch, differentiable w.r.t. θ (second order unless ``meta.first_order``).

    Args:
        targets: ``[B, N, D]``; coords: ``[N, C]``; contexts: G entries of ``[B, n]`` indices (or None).
        loss_divisor: None → mean over the B signals; else sum / divisor (a rank's share of a global
            batch of that size, so that summing the ranks' gradients gives the global mean).
    """
    field = nf.prepare(params, cfg)
    phi, inner_mse = inner_loop(
        field, targets, coords, lr=meta.inner_lr, contexts=contexts, create_graph=not meta.first_order
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
        positions = torch.arange(batch, dtype=torch.int64)
    slots = positions.to(device, torch.int64) + iteration * (global_batch or batch)
    return [
        random_context(slots, num_points, meta.context_ratio, seed=seed, step=g) for g in range(meta.inner_steps)
    ]


class MetaLearner:
    """Holds θ, AdamW and the learning-rate schedule; :meth:`step` runs one meta-iteration."""

    def __init__(
        self,
        field_cfg: FieldConfig,
        meta_cfg: MetaConfig,
        *,
        params: nf.Params | None = None,
        seed: int = 0,
        device: torch.device | str = "cpu",
    ) -> None:
        self.field_cfg = field_cfg
        self.meta_cfg = meta_cfg
        self.seed = seed
        self.device = torch.device(device)
        if params is None:
            gen = torch.Generator().manual_seed(seed)
            params = nf.init_params(field_cfg, generator=gen, device=self.device)
        self.params = {k: v.detach().to(self.device).clone().requires_grad_(True) for k, v in params.items()}
        self.optimizer = torch.optim.AdamW(
            list(self.params.values()), lr=meta_cfg.meta_lr, weight_decay=meta_cfg.weight_decay
        )
        steps = meta_cfg.steps

        def factor(i: int) -> float:
            if meta_cfg.lr_schedule == "constant":
                return 1.0
            return 0.5 * (1.0 + math.cos(math.pi * min(i, steps) / steps))

        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, factor)
        self.iteration = 0
        self._grids: dict[tuple[int, ...], Tensor] = {}

    def grid(self, spatial: tuple[int, ...]) -> Tensor:
        """Cached coordinate grid ``[N, C]`` for a spatial shape."""
        if spatial not in self._grids:
            self._grids[spatial] = nf.coordinate_grid(spatial, device=self.device)
        return self._grids[spatial]

    def step(
        self,
        signals: Tensor,
        *,
        positions: Tensor | None = None,
        global_batch: int | None = None,
        reduce_grads: Callable[[list[Tensor]], None] | None = None,
    ) -> dict[str, float]:
        """One meta-iteration on channels-first signals ``[B, D, *spatial]`` in [0, 1].

        Data-parallel use (one call per rank, same iteration): ``positions`` ``[B]`` are the signals'
        positions in the global batch of size ``global_batch``, and ``reduce_grads`` sums the gradient
        tensors over the ranks in place (an all-reduce) before clipping. The update then equals one
        process's step on the whole global batch.

        Returns the (local) meta-loss, mean PSNR on the full context after G steps, mean PSNR of the last
        inner context, the gradient norm before clipping and the learning rate used.
        """
        cfg = self.field_cfg
        if signals.dim() != cfg.in_dims + 2 or signals.shape[1] != cfg.out_dims:
            raise ConfigError(
                f"signals shape = {tuple(signals.shape)} is invalid: expected [B, {cfg.out_dims}, "
                f"{', '.join(['S'] * cfg.in_dims)}] for in_dims={cfg.in_dims}, out_dims={cfg.out_dims}; "
                "check the channel count and dimensionality of the data"
            )
        signals = signals.to(self.device, torch.float32)
        check_signals(signals)
        spatial = tuple(signals.shape[2:])
        coords = self.grid(spatial)
        targets = nf.to_points(signals)  # [B, N, D]
        contexts = sample_contexts(
            self.meta_cfg, targets.shape[0], coords.shape[0], seed=self.seed, iteration=self.iteration,
            device=self.device, positions=positions, global_batch=global_batch,
        )
        out = meta_objective(self.params, targets, coords, cfg, self.meta_cfg, contexts, loss_divisor=global_batch)
        self.optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        if reduce_grads is not None:
            reduce_grads([p.grad for p in self.params.values()])
        grad_norm = torch.nn.utils.clip_grad_norm_(list(self.params.values()), self.meta_cfg.grad_clip)
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        self.iteration += 1
        return {
            "loss": float(out.loss.detach()),
            "psnr": float(mse_to_psnr(out.outer_mse).mean()),
            "psnr_inner": float(mse_to_psnr(out.inner_mse).mean()),
            "grad_norm": float(grad_norm),
            "lr": float(lr),
        }

    def detached_params(self) -> nf.Params:
        """θ without autograd history (for fitting and saving)."""
        return {k: v.detach() for k, v in self.params.items()}

    def state_dict(self) -> dict[str, Any]:
        return {
            "params": self.detached_params(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "iteration": self.iteration,
            "seed": self.seed,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            for k, v in state["params"].items():
                self.params[k].copy_(v)
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.iteration = int(state["iteration"])
        self.seed = int(state["seed"])
