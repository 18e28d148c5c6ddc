"""Meta-training for a build: resumable, validated, data-parallel under torchrun.

Wraps :class:`mednf.engine.meta.MetaLearner` with what a long run needs:

- **Batches** are a pure function of (seed, iteration): position ``t·B + j`` of the training stream is
  element ``(t·B + j) mod N`` of the permutation of epoch ``(t·B + j) // N``. Inner-loop contexts are
  keyed the same way (:mod:`mednf.engine.context`). There is no RNG state to save: a resumed run continues
  with exactly the batches and subsets the uninterrupted run would have drawn.
- **Checkpoints** (θ, AdamW moments, scheduler, iteration, validation history) go into one safetensors
  file with the scalars as JSON metadata, written atomically every ``checkpoint_every`` iterations.
- **Validation**: every ``val_every`` iterations and at the end, the fixed val subset is fitted with the
  test-time fit (H steps) and its mean PSNR (and SSIM) recorded; the best θ is kept (paper §4.3) and returned.
- **Baseline check**: a best validation PSNR not clearly above the mean-image baseline of the val subset
  (:func:`mednf.engine.baselines.learns_per_sample`) is a ``warning:`` line with the likely fix, as soon
  as the validations stall below it (from the second on; once) and again at the end. The fix depends on the
  cause (:func:`mednf.engine.baselines.diagnose_no_learning`: a diverging meta-gradient norm, or fitted
  latents that shift the sine arguments by more than half a period, mean α is too large; otherwise it is too
  small); the norms come from ``training.csv`` and the shifts from the validation history, so a resumed run
  sees all.
- **Curves**: every iteration and validation is a row of ``training.csv`` (:mod:`mednf.building.curves`),
  cut back to the checkpoint on resume, so each iteration is in it once; with ``tensorboard`` the same
  scalars, and a reconstruction grid at each validation, go to a TensorBoard log too.
- **Data parallel**: rank r takes positions ``r::world`` of each global batch, gradients are summed
  across ranks before clipping, validation rows are sharded and their PSNR sums all-reduced. Rank 0
  writes the checkpoints.
- **Memory**: a :class:`mednf.engine.planner.MemoryPlan` (made by the build for this rank) sets the
  micro-batch of every meta-iteration; the validation fits are batched to the plan's budget beside what
  the process then holds. Neither changes the result beyond float rounding, so neither is part of the
  checkpoint's identity.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mednf.building.curves import TensorBoardLog, TrainingLog, read_training
from mednf.building.distributed import Dist
from mednf.building.identity import differences, engine_identity
from mednf.engine import field as nf
from mednf.engine.baselines import (
    MARGIN_DB,
    LearningDiagnosis,
    diagnose_no_learning,
    latent_shift_rms,
    learns_per_sample,
)
from mednf.engine.config import EngineConfig
from mednf.engine.execution import Execution
from mednf.engine.fit import as_float_signals, fit_latents
from mednf.engine.memory import release_free_memory
from mednf.engine.meta import MetaLearner, MetaStats, read_stats
from mednf.engine.metrics import check_signals
from mednf.engine.planner import MemoryPlan, fit_batch_now
from mednf.engine.transfer import upload
from mednf.errors import BuildError
from mednf.format.tensors import load_tensors, save_tensors
from mednf.sources.spec import BuildSettings

LAST = "meta-last.safetensors"
BEST = "meta-best.safetensors"
CURVES = "training.csv"
PREVIEW = 8  # validation reconstructions shown in TensorBoard
STALLED_DB = 0.1  # a validation gaining less than this over the previous one has stalled
STATS_EVERY = 25  # on a GPU, the iterations' statistics are read every this many iterations (one wait each)


@dataclass
class TrainSummary:
    """What meta-training did: its steps, the best validation and where it was, the history and timings."""

    steps: int
    best_step: int
    best_val_psnr: float
    history: list[dict[str, float]] = field(default_factory=list)  # validation points
    seconds: float = 0.0  # wall time of this process's meta-training (all runs of a resumed build)
    resumed_from: int = 0
    learns_per_sample: bool | None = None  # best validation clearly above the mean image (None: no baseline)
    diagnosis: LearningDiagnosis | None = None  # why not, when learns_per_sample is False
    # the learning-rate schedule as run: segments {"from": first iteration, "length": the meta.steps whose
    # schedule it follows from there}; more than one after `mednf build --continue-to` (mednf.building.continuation)
    schedule: list[dict[str, int]] = field(default_factory=list)
    compiled: dict[str, Any] | None = None  # the compiled meta-gradient's self-check (mednf.engine.compiled), if run


def batch_positions(seed: int, iteration: int, batch: int, num_samples: int) -> np.ndarray:
    """Training-set indices of global batch ``iteration`` ``[B]``: epoch-wise permutations, no RNG state."""
    stream = np.arange(iteration * batch, (iteration + 1) * batch, dtype=np.int64)
    epochs, offsets = np.divmod(stream, num_samples)
    out = np.empty(batch, dtype=np.int64)
    for epoch in np.unique(epochs):
        mask = epochs == epoch
        out[mask] = epoch_permutation(seed, int(epoch), num_samples)[offsets[mask]]
    return out


@functools.lru_cache(maxsize=4)
def epoch_permutation(seed: int, epoch: int, num_samples: int) -> np.ndarray:
    """The order of the training set in ``epoch`` (read-only; drawn once, not once per iteration)."""
    perm = np.random.default_rng([seed, epoch]).permutation(num_samples)
    perm.flags.writeable = False
    return perm


def stats_interval(device: torch.device) -> int:
    """Iterations whose statistics are read together: every one on the CPU (reading waits for nothing there),
    :data:`STATS_EVERY` on a GPU."""
    return 1 if device.type == "cpu" else STATS_EVERY


class BatchFeeder:
    """This rank's signals of every meta-iteration, on the learner's device.

    The rows of :func:`batch_positions` are gathered from the training images in host memory; uint8 images
    travel as bytes (the learner scales them on the device), float ones are checked for NaN/Inf here, in
    host memory. On CUDA the next iteration's batch is gathered and its upload queued (pinned memory,
    :mod:`mednf.engine.transfer`) as soon as the current one is handed out, so the copy overlaps the current
    iteration's kernels.
    """

    def __init__(self, images: np.ndarray, seed: int, batch: int, mine: np.ndarray, device: torch.device, *,
                 steps: int, ahead: bool | None = None) -> None:
        """``steps``: the run's last iteration (none is prepared beyond it); ``ahead``: prepare the next batch when
        one is handed out (default: on CUDA)."""
        self.images, self.seed, self.batch, self.mine, self.device = images, seed, batch, mine, device
        self.steps = steps
        self.ahead = device.type == "cuda" if ahead is None else ahead
        self._next: tuple[int, torch.Tensor] | None = None

    def __call__(self, iteration: int) -> torch.Tensor:
        """The signals ``[b, D, *spatial]`` (uint8 or float32) of meta-iteration ``iteration`` on the device."""
        if self._next is not None and self._next[0] == iteration:
            ready = self._next[1]
        else:
            ready = self._load(iteration)
        self._next = (iteration + 1, self._load(iteration + 1)) if self.ahead and iteration + 1 < self.steps else None
        return ready

    def _load(self, iteration: int) -> torch.Tensor:
        rows = batch_positions(self.seed, iteration, self.batch, len(self.images))[self.mine]
        signals = torch.from_numpy(np.ascontiguousarray(self.images[rows]))
        if signals.dtype != torch.uint8:
            signals = as_float_signals(signals)
            check_signals(signals, f"the training images of meta-iteration {iteration + 1}")
        return upload(signals, self.device)


def _optimizer_tensors(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimizer state_dict into tensors (for safetensors) and JSON-able rest."""
    tensors, scalars = {}, {}
    for idx, entry in state["state"].items():
        for key, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{idx}.{key}"] = value
            else:
                scalars[f"{idx}.{key}"] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _optimizer_state(tensors: dict[str, torch.Tensor], rest: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        _, idx, key = name.split(".", 2)
        state.setdefault(int(idx), {})[key] = value
    for name, value in rest["scalars"].items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": rest["param_groups"]}


class MetaTrainer:
    """Runs meta-training from the last checkpoint in ``work`` to ``cfg.meta.steps``."""

    def __init__(self, cfg: EngineConfig, settings: BuildSettings, train_images: np.ndarray,
                 val_images: np.ndarray, work: Path, *, seed: int, execution: Execution, dist: Dist,
                 log: Callable[[str], None] = print, plan: MemoryPlan | None = None,
                 val_baseline: float | None = None, tensorboard: Path | None = None) -> None:
        self.tensorboard = tensorboard  # a TensorBoard log folder (mednf.building.curves.TensorBoardLog), or None
        self.cfg, self.settings, self.work, self.seed = cfg, settings, work, seed
        self.val_baseline = val_baseline  # mean-image PSNR of the validation subset
        self.plan = plan
        self.micro_batch = plan.micro_batch if plan is not None else None  # None: the whole local batch
        self.train_images = train_images  # [N, D, *spatial] uint8 or float
        self.val_images = val_images[: settings.val_samples]
        self.execution, self.dist, self.log = execution, dist, log  # device and resolved precision
        self.device = execution.device
        self.learner = MetaLearner(cfg.field, cfg.meta, seed=seed, execution=execution)
        self.history: list[dict[str, float]] = []
        self.best_step, self.best_psnr = -1, float("-inf")
        self.seconds = 0.0
        self.resumed_from = 0
        self.schedule = [{"from": 1, "length": cfg.meta.steps}]
        self.grad_norms: list[float] = []  # meta-gradient norm of every iteration so far (kept in checkpoints)
        self.last_shift_rms = float("nan")  # of the last validation (see validate)
        self.last_train_psnr = float("nan")  # of the last iteration whose statistics were read

    # ------------------------------------------------------------------ checkpoints
    def _save(self, path: Path, *, with_optimizer: bool) -> None:
        state = self.learner.state_dict()
        tensors = {f"theta.{k}": v for k, v in state["params"].items()}
        meta: dict[str, Any] = {"iteration": state["iteration"], "seed": state["seed"], "history": self.history,
                                "best_step": self.best_step, "best_val_psnr": self.best_psnr,
                                "seconds": self.seconds, "engine": self.cfg.to_dict(), "schedule": self.schedule,
                                "grad_norms": self.grad_norms}  # exact: the baseline check of a resumed build
        if with_optimizer:
            opt_tensors, opt_rest = _optimizer_tensors(state["optimizer"])
            tensors.update(opt_tensors)
            meta.update(optimizer=opt_rest, scheduler=state["scheduler"])
        save_tensors(path, tensors, meta)

    def _resume(self) -> None:
        path = self.work / LAST
        if not path.is_file():
            return
        tensors, meta = load_tensors(path)
        if differences(engine_identity(meta["engine"]), engine_identity(self.cfg)):
            raise BuildError(f"{path} was written with other hyper-parameters than this build's; rerun with the "
                             "same options, or pass --restart to discard the unfinished build")
        params = {k.removeprefix("theta."): v for k, v in tensors.items() if k.startswith("theta.")}
        optim = _optimizer_state({k: v for k, v in tensors.items() if k.startswith("optim.")}, meta["optimizer"])
        self.learner.load_state_dict({"params": params, "optimizer": optim, "scheduler": meta["scheduler"],
                                      "iteration": meta["iteration"], "seed": meta["seed"]})
        self.history = meta["history"]
        self.best_step, self.best_psnr = meta["best_step"], meta["best_val_psnr"]
        self.seconds = meta["seconds"]
        self.resumed_from = meta["iteration"]
        self.schedule = meta.get("schedule") or self.schedule
        self.grad_norms = [float(g) for g in meta.get("grad_norms", [])]  # older checkpoints: from the CSV below
        if self.resumed_from >= self.cfg.meta.steps:
            self.log(f"meta-training finished in an earlier run ({self.resumed_from} iterations)")
        else:
            self.log(f"resuming meta-training at iteration {self.resumed_from} from {path}")

    # ------------------------------------------------------------------ validation
    def validate(self, preview: int = 0) -> tuple[float, float, np.ndarray | None]:
        """Mean PSNR and SSIM (NaN where undefined) of the fixed val subset after the test-time fit (sharded
        over ranks), and on rank 0 with ``preview`` the first ``preview`` reconstructions ``[n, D, *spatial]``.
        Also sets :attr:`last_shift_rms`, the mean RMS bias shift of the fitted latents (the baseline check's
        evidence, :func:`mednf.engine.baselines.latent_shift_rms`)."""
        n, world, rank = len(self.val_images), self.dist.world, self.dist.rank
        start, stop = rank * n // world, (rank + 1) * n // world  # contiguous: keys match one process's
        mine = self.val_images[start:stop]
        total = torch.zeros(5, dtype=torch.float64, device=self.dist.device)  # PSNR, count, SSIM, count, shift sums
        recon = None
        if len(mine):
            fit = self.cfg.fit
            if self.plan is not None:  # planned beside what meta-learning holds now (freed pages returned first)
                batch = fit_batch_now(self.plan, self.cfg, mine.shape[2:], self.device)
                fit = dataclasses.replace(fit, batch_size=batch)
            result = fit_latents(self.learner.detached_params(), mine, self.cfg.field, fit,
                                 execution=self.execution, seed=self.seed, first_index=start, with_ssim=True)
            ssim = result.ssim.double()
            defined = torch.isfinite(ssim)
            prepared = nf.prepare({k: v.cpu() for k, v in self.learner.detached_params().items()}, self.cfg.field)
            shift = latent_shift_rms(prepared.shift_weight, result.latents.cpu())  # [n] radians
            total += torch.tensor([float(result.psnr.double().sum()), float(len(mine)),
                                   float(ssim[defined].sum()), float(defined.sum()), float(shift.double().sum())],
                                  device=total.device)
            if preview and start == 0:
                theta = {k: v.cpu() for k, v in self.learner.detached_params().items()}
                recon = nf.decode(theta, result.latents[:preview], self.cfg.field, mine.shape[2:]).numpy()
            release_free_memory()  # the fit's pages, before the next meta-iteration
        self.dist.sum_([total])
        self.last_shift_rms = float(total[4] / total[1])
        return (float(total[0] / total[1]), float(total[2] / total[3]) if total[3] > 0 else float("nan"),
                recon if preview and start == 0 and len(mine) else None)

    # ------------------------------------------------------------------ loop
    def run(self, *, progress: bool = True) -> TrainSummary:
        """Meta-train to ``meta.steps`` (resuming from the last checkpoint), validating and checkpointing on the
        way; every rank calls it."""
        self._resume()
        meta, dist = self.cfg.meta, self.dist
        steps, batch = meta.steps, meta.batch_size
        mine = np.arange(dist.rank, batch, dist.world)  # this rank's positions in every global batch
        positions = torch.from_numpy(mine).to(self.device)  # uploaded once
        bar = tqdm(total=steps, initial=self.learner.iteration, desc="meta-training", unit="it",
                   disable=not (progress and dist.is_main), dynamic_ncols=True)
        reduce = dist.sum_ if dist.enabled else None
        curves = TrainingLog(self.work / CURVES) if dist.is_main else None
        if curves is not None:
            curves.resume(self.learner.iteration)
            if len(self.grad_norms) != self.learner.iteration:  # a checkpoint of an older mednf: 6 digits, not exact
                self.grad_norms = [float(row["grad_norm"] or "nan") for row in read_training(curves.path)
                                   if row["kind"] == "train"]
        board = TensorBoardLog(self.tensorboard) if dist.is_main and self.tensorboard is not None else None
        feed = BatchFeeder(self.train_images, self.seed, batch, mine, self.device, steps=steps)
        pending: list[tuple[int, MetaStats]] = []  # iterations whose statistics are still on the device
        stats_every = stats_interval(self.device)
        block_started = 0.0
        warned = False
        while self.learner.iteration < steps:
            started = time.perf_counter()
            if not pending:
                block_started = started
            signals = feed(self.learner.iteration)
            pending.append((self.learner.iteration + 1, self.learner.step(
                signals, positions=positions, global_batch=batch, reduce_grads=reduce, micro_batch=self.micro_batch)))
            done = self.learner.iteration
            validated = done % self.settings.val_every == 0 or done == steps
            checkpoint = validated or done % self.settings.checkpoint_every == 0
            if checkpoint or len(pending) >= stats_every:  # the rows, the norms and the bar, read in one transfer
                self._record(pending, (time.perf_counter() - block_started) / len(pending), curves, board, bar)
            if validated:
                self._validation(done, self.last_train_psnr, curves, board)
                if done == steps or (not warned and len(self.history) >= 2
                                     and self.history[-1]["val_psnr"] - self.history[-2]["val_psnr"] < STALLED_DB):
                    warned = self._check_baseline(done) or warned
            self.seconds += time.perf_counter() - started
            # with every validation too, so a newer meta-best never outlives the run it came from
            if dist.is_main and checkpoint:
                self._save(self.work / LAST, with_optimizer=True)
            bar.update(1)
        bar.close()
        for log in (curves, board):
            if log is not None:
                log.close()
        dist.barrier()
        learns = (None if self.val_baseline is None or not self.history
                  else learns_per_sample(self.best_psnr, self.val_baseline))
        diagnosis = self._diagnosis() if learns is False else None
        return TrainSummary(steps, self.best_step, self.best_psnr, self.history, self.seconds, self.resumed_from,
                            learns, diagnosis, self.schedule, self.learner.compile_report)

    def _record(self, pending: list[tuple[int, MetaStats]], seconds: float, curves: TrainingLog | None,
                board: TensorBoardLog | None, bar: tqdm) -> None:
        """Read the statistics of the ``pending`` iterations (one transfer) into the gradient norms, the curves,
        TensorBoard and the progress bar; ``seconds`` per iteration (the block's wall time, shared: on a GPU an
        iteration's own time is not known without waiting for it)."""
        for (done, _), stats in zip(pending, read_stats([stats for _, stats in pending])):
            self.grad_norms.append(stats["grad_norm"])
            if curves is not None:
                curves.train(done, stats, seconds)
            if board is not None:
                board.train(done, stats)
            self.last_train_psnr = stats["psnr"]
            bar.set_postfix(loss=f"{stats['loss']:.4f}", psnr=f"{stats['psnr']:.2f}", refresh=False)
        pending.clear()

    def _validation(self, done: int, train_psnr: float, curves: TrainingLog | None,
                    board: TensorBoardLog | None) -> None:
        """Validate θ after ``done`` iterations: into the history, the curves and TensorBoard; kept as the best θ
        when it beats every earlier validation; one line in the log."""
        started = time.perf_counter()
        val, val_ssim, recon = self.validate(preview=PREVIEW if board is not None else 0)
        if curves is not None:
            curves.val(done, val, val_ssim, time.perf_counter() - started)
        if board is not None:
            board.val(done, val, val_ssim, as_float_signals(self.val_images[:PREVIEW]).numpy(), recon)
        self.history.append({"step": done, "val_psnr": val, "train_psnr": train_psnr,
                             "shift_rms": self.last_shift_rms if math.isfinite(self.last_shift_rms) else None}
                            | ({"val_ssim": val_ssim} if np.isfinite(val_ssim) else {}))
        improved = val > self.best_psnr
        if improved:
            self.best_step, self.best_psnr = done, val
            if self.dist.is_main:
                self._save(self.work / BEST, with_optimizer=False)
        self.log(f"iteration {done}: val PSNR {val:.2f} dB (fit H={self.cfg.fit.steps}) "
                 f"{'new best' if improved else f'best {self.best_psnr:.2f} dB at {self.best_step}'}")

    def _diagnosis(self) -> LearningDiagnosis:
        """Why the latents do not learn: the gradient norms and the largest latent shift of the validations."""
        shifts = [h["shift_rms"] for h in self.history if "shift_rms" in h]  # None: not finite
        worst = None if not shifts else math.nan if None in shifts else max(shifts)
        return diagnose_no_learning(self.grad_norms, worst)

    def _check_baseline(self, done: int) -> bool:
        """A ``warning:`` line (and True) if the best validation is not clearly above the mean-image baseline."""
        if self.val_baseline is None or learns_per_sample(self.best_psnr, self.val_baseline):
            return False
        self.log(f"warning: the best validation PSNR {self.best_psnr:.2f} dB after {done} iterations is not "
                 f"{MARGIN_DB:g} dB above the mean-image baseline {self.val_baseline:.2f} dB: "
                 + self._diagnosis().advice())
        return True

    def best_params(self) -> dict[str, torch.Tensor]:
        """θ of the best validation (the final θ if there was no validation yet)."""
        path = self.work / BEST
        if path.is_file():
            tensors, _ = load_tensors(path)
            return {k.removeprefix("theta."): v for k, v in tensors.items() if k.startswith("theta.")}
        return {k: v.cpu() for k, v in self.learner.detached_params().items()}
