"""One-call GPU check of the mednf engine: exactness on CUDA (the paper config too), speed, memory and PSNR
per precision and per arm, the memory planner under a budget, run-to-run determinism, a roofline and a
profile, decode throughput — one command, one results file, ≤ 9 minutes.

Command (GPU machine, repository root; copy ``breastmnist_64.npz`` into a git-ignored folder of the checkout
and name it in ``carry``, since ``../shared`` does not travel; benchmarks/gpu/run.sh does all of this)::

    python benchmarks/gpu_check.py --medmnist-root ../shared/data/medmnist --out $OUT

Smoke run on a CPU (tiny config, same code path, well under a minute; the test runs it)::

    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check

"The paper config" is ``get_preset("2d-64")`` (K15 L256 P2048, ω 20→400, G10, γ .25, B 24, H 20, 64²); the dry
run shrinks it to K4 L16 P8, B 4, 8² ("the run config" below is whichever of the two runs). "Real images" are
BreastMNIST 64² (``--medmnist-root``; area-downsampled to 8² in the dry run, fabricated smooth images there when
the file is absent; on the GPU without the file the timings use random images and the PSNRs are skipped).

What it measures, most important first (each part, and each check / precision / arm inside it, is timed and
guarded: an exception is recorded with its text and the next one runs):

1. **exactness**
   a. ``meta_gradient``: ∂θ of :func:`mednf.engine.meta.meta_objective` (second order, float64, on the device)
      against a per-signal reference written here (small config K5 L32 G3, one signal at a time, per-layer
      official-style forward, autograd, the same contexts): relative error ≤ 1e-6;
      ``micro_batch``: :func:`~mednf.engine.meta.accumulate_meta_gradient` with ``micro_batch=2`` for B = 5
      against the whole batch and against the reference: ≤ 1e-6.
   b. ``fit_batch_independence``: :func:`mednf.engine.fit.fit_latents` (grad_rescale on) with batch size 1 vs 7
      on 9 signals, float32: relative latent difference ≤ 1e-5.
   c. ``cpu_gpu``: 20 meta-iterations of a tiny :class:`~mednf.engine.meta.MetaLearner` on CPU and on the device
      (float32, same seed, same images): relative θ difference ≤ 1e-4, and the test PSNR of a fit with
      each θ on its own device: |Δ| ≤ 0.05 dB.
   d. ``paper_cpu_gpu``: the run config in float64 on B = 2 real images: the meta-gradient
      (:func:`~mednf.engine.meta.accumulate_meta_gradient`, θ₀, whole batch) and the latents of a 3-step fit
      (:func:`~mednf.engine.fit.fit_batch`, grad_rescale as the preset) on the CPU and on the device: relative
      error of each ≤ 1e-9 (measured on the CPU at the paper config 2026-12-07: another summation order
      (micro-batches of 1) moves the meta-gradient by 4.5e-14, float32 instead of float64 by 4.5e-5; the fitted
      latents 1.5e-14 and 2.6e-5).
   In ``--dry-run`` the "device" side is the CPU too.
2. **memory_budget**: a budget (:class:`~mednf.engine.memory.MemoryBudget`) below the unsplit plan's peak, with
   room for about a quarter of B = 24: the micro-batch :func:`~mednf.engine.planner.plan_memory` chooses, one
   meta-iteration (fp32, θ₀, real images) at that micro-batch and one unsplit, each with its peak allocated and
   reserved against the budget and the plan's estimate, and the meta-gradient (``.grad`` after the step, clipped)
   split vs unsplit: relative difference ≤ 1e-3 (float32: 3.5e-5 measured on the CPU at the paper config,
   B = 4, parts of 1 vs whole, 2026-12-07), plus the difference of the two AdamW updates.
3. **determinism**: the same short run twice (fp32, θ₀, seed 0, the same real batches: 5 meta-iterations, then a
   fit of 32 test images): θ and the latents compared byte for byte (``identical``, the count of differing
   values, the largest absolute difference). Nothing is forced: on CUDA some backward kernels of index
   operations accumulate with atomics; ``torch.are_deterministic_algorithms_enabled()`` and
   ``CUBLAS_WORKSPACE_CONFIG`` are recorded as they were.
4. **engine**, for each arm (``eager``: ``MEDNF_COMPILE=off`` and ``MEDNF_FIT_KERNEL=eager``, then ``compiled``:
   ``MEDNF_COMPILE=on`` and ``MEDNF_FIT_KERNEL`` unset, set while the arm creates and runs its learner and fits,
   restored after; the learner's and the fit's ``compile_report`` are recorded when they have one) and each
   ``field.precision`` (fp32 / tf32 / bf16; first the precision's plan, its n×n GEMM peak and the test PSNR at
   θ₀), from the same θ₀ on the same real batches:
   ``meta_iters`` meta-iterations at B = 24 on uint8 batches uploaded ahead (micro-batch from the planner at the
   device's default budget; the first ``meta_warmup`` one by one, the first holding any compiling, then the rest
   back to back as a build runs them, without a host wait, timed as one block: s per iteration = block / count),
   peak allocated and reserved against the planner's meta estimate, achieved TFLOP/s (FLOP model of
   benchmarks/engine.py) and the fraction of the format's n×n GEMM peak; fit images/s at the planner's fit batch
   (``plan_memory(...).fit_batch``: one full batch of random images, after a warm-up fit), peak against the fit
   estimate (should that batch run out of device memory, that is recorded and half of it is measured); the test
   split's PSNR after those meta-iterations. ``meta.steps`` stays the preset's 250 000 (the cosine schedule's
   length), so lr ≈ β = 3e-6 throughout.
5. **roofline**: engine-shaped GEMMs in fp32 / tf32 / bf16 (the meta-iteration's context and full-grid products
   ``[B·n, L] × [L, L]`` and ``[B·N, L] × [L, L]``, the fit's ``[b·N, L] × [L, L]`` at the planner's fit batch b,
   rows capped at 2²²), the device's copy bandwidth (``copy_`` of a large buffer, read + write bytes), and a
   ``torch.profiler`` summary of one steady-state meta-iteration and one fit step (fp32, eager arm): events of the
   device (CUDA kernels and copies; on the CPU the CPU ops), their busy time (union of intervals) against the
   wall time (idle share; the profiler's own host overhead is inside the wall time), the top kernels.
6. **decode**: :func:`mednf.engine.field.decode` of a batch of latents at 64², images/s (always fp32).

Results: ``gpu_check.json`` (every number, the configs, the environment) and ``gpu_check.md`` (one table) in
``--out`` (default ``$OUT``, else benchmarks/gpu_check_results/), rewritten after every part, so that a run cut
short still leaves what it measured.

Every part but the engine's compiled arms runs in the eager arm's environment (``auto``, the default, would
compile on CUDA in every new learner and fit).

Time: ``--time-budget`` (default 480 s from the start of ``main``, 90 s in the dry run) bounds the whole run: a
part does not start once it is spent; the engine part starts a precision's setup or an arm only while the time
left covers the longest step of that kind so far (before the first, the longest of any kind, at first
``arm_guess_s``) plus ``reserve_s`` for the parts after it, and stops an arm's meta-iterations once those after
the warm-up (which holds any compiling) pass ``cap_s`` (``truncated`` then says so); the other parts are short.
The dry run compiles only the first precision's compiled arm (on a 2-core CPU compiling takes seconds per
configuration: 17 s for fp32's meta-gradient on 2026-12-07).

Exit code: 0 every part ran and every check passed; 1 an exactness check or the split meta-gradient failed; 2
a part, a check or an arm raised (its error is in the results); 3 the device cannot be used (one line on stderr).

Imports only the standard library, numpy, torch and ``mednf.engine.*`` (the GPU machine has no zarr,
numcodecs, datasets or medmnist); the BreastMNIST file is read with numpy.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import functools
import importlib.util
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import traceback
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mednf.engine import field as nf
from mednf.engine.config import EngineConfig, FieldConfig, FitConfig, MetaConfig
from mednf.engine.context import context_size
from mednf.engine.fit import fit_batch, fit_latents
from mednf.engine.memory import MemoryBudget, memory_in_use, resolve_budget
from mednf.engine.meta import MetaLearner, accumulate_meta_gradient, meta_objective, sample_contexts
from mednf.engine.planner import MemoryPlan, plan_memory
from mednf.engine.precision import PrecisionWarning, matmul_switches, resolve_precision
from mednf.engine.presets import get_preset
from mednf.engine.transfer import upload

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "medmnist"
BREAST_FILE = "breastmnist_64.npz"
MIB = 2**20
Result = dict[str, Any]

META_GRAD_TOL = 1e-6  # relative, float64
FIT_BATCH_TOL = 1e-5  # relative, float32
CPU_GPU_THETA_TOL = 1e-4  # relative, float32 after 20 AdamW steps
CPU_GPU_PSNR_TOL = 0.05  # dB
PAPER_F64_TOL = 1e-9  # relative, float64, the run config (module docstring, 1d)
SPLIT_GRAD_TOL = 1e-3  # relative, float32, micro-batches vs the whole batch (module docstring, 2)
COMPILE_ENV = "MEDNF_COMPILE"  # read when a MetaLearner or a fit is created: on, off, auto
FIT_KERNEL_ENV = "MEDNF_FIT_KERNEL"  # eager: no compiled fit kernel, whatever MEDNF_COMPILE says
# arm → the environment it runs in (None: unset): the eager engine, or everything MEDNF_COMPILE=on compiles
ARMS: dict[str, dict[str, str | None]] = {"eager": {COMPILE_ENV: "off", FIT_KERNEL_ENV: "eager"},
                                          "compiled": {COMPILE_ENV: "on", FIT_KERNEL_ENV: None}}
ENGINE_ENVIRONMENT = (COMPILE_ENV, FIT_KERNEL_ENV, "MEDNF_MALLOC")  # recorded as the run found them


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: the paper config on a GPU, or a tiny one for ``--dry-run``."""

    engine: EngineConfig  # every part but the small exactness checks
    size: int  # image side
    meta_warmup: int  # meta-iterations of an arm left out of its median
    meta_iters: int  # meta-iterations per precision and arm (fewer when the arm passes cap_s)
    cap_s: float  # time cap of one arm's meta-iterations
    arm_guess_s: float  # what the first precision × arm is assumed to take (time planning)
    reserve_s: float  # time kept for the parts after the engine
    compiled_precisions: int | None  # precisions whose compiled arm runs (None: all)
    paper_batch: int  # 1d: signals of the float64 CPU-vs-device check
    paper_fit_steps: int  # 1d: steps of its fit
    determinism_iters: int  # 3: meta-iterations of each run
    determinism_fit: int  # 3: test images fitted in each run
    decode_batch: int
    decode_reps: int
    gemm_size: int  # n of the n×n GEMM peak
    gemm_reps: int
    gemm_rows_max: int  # roofline: rows of the fit-shaped GEMM at most
    copy_bytes: int  # roofline: size of the copied buffer
    fabricate: bool  # fabricate BreastMNIST when the file is absent


def settings_for(args: argparse.Namespace) -> Settings:
    """GPU mode: the paper's 2D preset. Dry run: the same preset shrunk to K4 L16 P8, 8², B4."""
    paper = get_preset("2d-64")
    if not args.dry_run:
        return Settings(paper, 64, meta_warmup=2, meta_iters=args.meta_iters or 50, cap_s=40.0, arm_guess_s=45.0,
                        reserve_s=45.0, compiled_precisions=None, paper_batch=2, paper_fit_steps=3,
                        determinism_iters=5, determinism_fit=32, decode_batch=256, decode_reps=5, gemm_size=8192,
                        gemm_reps=20, gemm_rows_max=2**22, copy_bytes=2**30, fabricate=False)
    tiny = paper.replace(field={"num_layers": 4, "hidden_dim": 16, "latent_dim": 8}, meta={"batch_size": 4})
    return Settings(tiny, 8, meta_warmup=1, meta_iters=args.meta_iters or 4, cap_s=5.0, arm_guess_s=3.0,
                    reserve_s=3.0, compiled_precisions=1, paper_batch=2, paper_fit_steps=3, determinism_iters=5,
                    determinism_fit=8, decode_batch=64, decode_reps=3, gemm_size=256, gemm_reps=3,
                    gemm_rows_max=2**16, copy_bytes=16 * MIB, fabricate=True)


# ---------------------------------------------------------------------------------------------- device helpers


def synchronize(device: torch.device) -> None:
    """Wait for queued device work, so that the host clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    """Start a peak-memory window (CUDA; the CPU's peak RSS cannot be reset)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    """CUDA: ``max_memory_allocated`` since :func:`reset_peak`. CPU: the process's peak RSS (cumulative)."""
    if device.type == "cuda":
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) / MIB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def peak_record(device: torch.device, estimate_bytes: int | None = None) -> Result:
    """The peak since :func:`reset_peak`: allocated (:func:`peak_mib`), reserved by the caching allocator
    (``max_memory_reserved``; None on the CPU) and, with an estimate, the estimate and allocated / estimate."""
    out: Result = {"peak_allocated_mib": peak_mib(device),
                   "peak_reserved_mib": (torch.cuda.max_memory_reserved(device) / MIB
                                         if device.type == "cuda" else None)}
    if estimate_bytes is not None:
        out["estimated_peak_mib"] = estimate_bytes / MIB
        out["allocated_over_estimate"] = out["peak_allocated_mib"] * MIB / estimate_bytes
    return out


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return ("torch.cuda.max_memory_allocated / max_memory_reserved after reset_peak_memory_stats; "
                "estimates: the memory planner's (its CPU calibration)")
    return "process peak RSS (ru_maxrss), cumulative since the process started; no reserved figure"


def timed(device: torch.device, fn: Callable[[], Any]) -> tuple[float, Any]:
    """Seconds ``fn()`` takes with the device synchronised before and after, and its result."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def _repeat(fn: Callable[[], Any], reps: int) -> None:
    """Call ``fn`` ``reps`` times, keeping no result alive."""
    for _ in range(reps):
        fn()


def relative(a: dict[str, Tensor] | Tensor, b: dict[str, Tensor] | Tensor) -> float:
    """‖a − b‖ / ‖b‖ over all tensors (dicts matched by key), in float64 on the CPU."""
    if isinstance(b, Tensor):
        a, b = {"x": a}, {"x": b}
    num = sum(float((a[k].double().cpu() - b[k].double().cpu()).pow(2).sum()) for k in b)
    den = sum(float(b[k].double().cpu().pow(2).sum()) for k in b)
    return math.sqrt(num) / max(math.sqrt(den), 1e-300)


def verdict(value: float, threshold: float, **extra: Any) -> Result:
    """A check's record; NaN fails."""
    return {"value": value, "threshold": threshold, "passed": bool(value <= threshold), **extra}


def guarded(fn: Callable[[], Result], device: torch.device) -> Result:
    """Run one part or check: its result with ``seconds``, or ``status: error`` with the error text."""
    start = time.perf_counter()
    try:
        out = fn()
        out.setdefault("status", "ok")
    except Exception as err:  # noqa: BLE001 - a failure is recorded and the next part runs
        out = {"status": "error", "error": f"{type(err).__name__}: {err}", "traceback": traceback.format_exc()[-3000:]}
    if device.type == "cuda":
        torch.cuda.empty_cache()
    out["seconds"] = round(time.perf_counter() - start, 3)
    return out


@contextlib.contextmanager
def arm_environment(arm: str) -> Iterator[None]:
    """The environment variables of ``arm`` (:data:`ARMS`) set inside, restored after."""
    def put(settings: dict[str, str | None]) -> None:
        for name, value in settings.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value

    before = {name: os.environ.get(name) for name in ARMS[arm]}
    put(ARMS[arm])
    try:
        yield
    finally:
        put(before)


def compile_report(obj: object) -> Any:
    """``obj.compile_report`` when it has one (the engine's self-check: a dict, or an object with ``to_dict``),
    else None."""
    report = getattr(obj, "compile_report", None)
    if hasattr(report, "to_dict"):
        return report.to_dict()
    return dict(report) if isinstance(report, dict) else report


def default_plan(cfg: EngineConfig, size: int, device: torch.device) -> MemoryPlan:
    """The memory plan a build makes at the device's default budget (80 % of free GPU memory)."""
    return plan_memory(cfg, (size, size), budget=resolve_budget(None, device), device=device)


# ---------------------------------------------------------------------------------------------- data


def smooth_images(count: int, size: int, seed: int) -> Tensor:
    """Images made of a few random Gaussian blobs, in [0, 1]: ``[count, 1, size, size]`` float32."""
    gen = torch.Generator().manual_seed(seed)
    axis = torch.linspace(-1.0, 1.0, size)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")  # [S, S]
    centres = torch.rand(count, 4, 2, generator=gen) * 1.6 - 0.8
    widths = torch.rand(count, 4, generator=gen) * 0.4 + 0.15
    weights = torch.rand(count, 4, generator=gen) + 0.2
    dist = (yy[None, None] - centres[..., 0, None, None]) ** 2 + (xx[None, None] - centres[..., 1, None, None]) ** 2
    images = (weights[..., None, None] * torch.exp(-dist / (2 * widths[..., None, None] ** 2))).sum(1)
    images = images / images.flatten(1).amax(1)[:, None, None]
    return images[:, None].clamp(0.0, 1.0)


def random_signals(count: int, cfg: EngineConfig, size: int, gen: torch.Generator) -> Tensor:
    """Uniform [0, 1] images ``[count, D, size, size]`` on the CPU (timing only)."""
    return torch.rand((count, cfg.field.out_dims, size, size), generator=gen)


def downsample(images: np.ndarray, size: int) -> np.ndarray:
    """Area-average ``[N, S, S]`` uint8 images to ``[N, size, size]`` (S a multiple of size)."""
    side = images.shape[-1]
    if side == size:
        return images
    if side % size:
        raise ValueError(f"cannot area-downsample {side}² images to {size}²")
    f = side // size
    blocks = images.reshape(len(images), size, f, size, f).astype(np.float32).mean(axis=(2, 4))
    return np.rint(blocks).astype(np.uint8)


def breastmnist_data(root: Path, size: int, fabricate: bool) -> tuple[Tensor, Tensor, str] | str:
    """``(train [N, 1, size, size] uint8, test [M, 1, size, size] uint8, source)`` from ``root/breastmnist_64.npz``,
    fabricated smooth images when the file is absent and ``fabricate``, else the note saying why it is skipped."""
    path = root / BREAST_FILE
    if path.is_file():
        with np.load(path) as data:
            train, test = data["train_images"], data["test_images"]  # [N, 64, 64] uint8
        train, test = downsample(train, size), downsample(test, size)
        return torch.from_numpy(train[:, None].copy()), torch.from_numpy(test[:, None].copy()), str(path)
    if not fabricate:
        return (f"skipped: {path} is absent (the GPU machine gets only the working tree: copy {BREAST_FILE} into a "
                "git-ignored folder of the checkout, name it in carry and pass it as --medmnist-root)")
    train, test = ((smooth_images(n, size, seed=seed) * 255).round().to(torch.uint8)
                   for n, seed in ((48, 10), (16, 11)))
    return train, test, f"fabricated (smooth random images; {path} is absent)"


@dataclass(frozen=True)
class Images:
    """The images of the run: ``train`` / ``test`` ``[N, 1, S, S]`` uint8 on the CPU; ``test`` None when there
    are no real images (random ``train`` for the timings, no PSNR)."""

    train: Tensor
    test: Tensor | None
    source: str


def load_images(s: Settings, root: Path) -> Images:
    """BreastMNIST at ``s.size`` (or fabricated in the dry run), else random images for the timings."""
    data = breastmnist_data(root, s.size, s.fabricate)
    if isinstance(data, str):
        gen = torch.Generator().manual_seed(12)
        train = (torch.rand(96, 1, s.size, s.size, generator=gen) * 255).round().to(torch.uint8)
        return Images(train, None, f"random images ({data}); PSNRs skipped")
    return Images(*data)


def batch_order(count: int, batch: int, iters: int, seed: int = 0) -> list[Tensor]:
    """The indices ``[batch]`` of ``iters`` batches drawn from ``count`` images in shuffled epochs."""
    gen = torch.Generator().manual_seed(seed)
    order, batches = torch.empty(0, dtype=torch.int64), []
    for _ in range(iters):
        while len(order) < batch:  # a new epoch: a fresh permutation
            order = torch.cat([order, torch.randperm(count, generator=gen)])
        batches.append(order[:batch])
        order = order[batch:]
    return batches


def as_unit(images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 images → ``dtype`` in [0, 1], in host memory (where a build's loader gives a meta-iteration its batch)."""
    return images.to(dtype) / 255.0


# ---------------------------------------------------------------------------------------------- FLOP model
def _load_flop_model() -> tuple[Callable[[EngineConfig, int], int], Callable[[EngineConfig, int], int], str]:
    """``(meta_flops_per_signal, fit_flops_per_signal, origin)``: benchmarks/engine.py's model, or the same
    formulas here when that file cannot be imported."""
    try:
        spec = importlib.util.spec_from_file_location("mednf_bench_engine", Path(__file__).with_name("engine.py"))
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
        return module.meta_flops_per_signal, module.fit_flops_per_signal, "benchmarks/engine.py"
    except Exception:  # noqa: BLE001 - fall back to the copy below
        return _meta_flops, _fit_flops, "copy of benchmarks/engine.py's model in gpu_check.py"


def _forward_flops(cfg: EngineConfig, points: int) -> int:
    f = cfg.field
    return points * f.flops_per_point() + 2 * f.latent_dim * f.num_sine_layers * f.hidden_dim


def _meta_flops(cfg: EngineConfig, num_points: int) -> int:
    n = num_points if cfg.meta.context_ratio >= 1.0 else context_size(num_points, cfg.meta.context_ratio)
    inner, outer = 2 * cfg.meta.inner_steps * _forward_flops(cfg, n), _forward_flops(cfg, num_points)
    return inner + 3 * outer if cfg.meta.first_order else 3 * (inner + outer)


def _fit_flops(cfg: EngineConfig, num_points: int) -> int:
    return (2 * cfg.fit.steps + 1) * _forward_flops(cfg, num_points)


META_FLOPS, FIT_FLOPS, FLOP_MODEL = _load_flop_model()


# ---------------------------------------------------------------------------------------------- 1. exactness


def check_config(P: int = 16) -> tuple[FieldConfig, MetaConfig]:
    """The small config of the exactness checks: K5 L32, ω 10→30, G3, γ 0.5 (12×12 images)."""
    cfg = FieldConfig(in_dims=2, out_dims=1, num_layers=5, hidden_dim=32, latent_dim=P, omega_first=10.0,
                      omega_last=30.0)
    return cfg, MetaConfig(inner_steps=3, context_ratio=0.5, inner_lr=1e-2, batch_size=5)


def reference_forward(params: dict[str, Tensor], cfg: FieldConfig, coords: Tensor, phi: Tensor) -> Tensor:
    """One signal, layer by layer as the official code: coords ``[n, C]``, φ ``[P]`` → ``[n, D]``
    (``sin(ω_k (W_k x + b_k + M_k φ + c_k))``, residual after the first layer, linear output + 0.5)."""
    L, x = cfg.hidden_dim, coords
    for k, omega in enumerate(cfg.omegas):
        rows = slice(k * L, (k + 1) * L)
        shift = params["shift.weight"][rows] @ phi + params["shift.bias"][rows]
        y = torch.sin(omega * (x @ params[f"layers.{k}.weight"].t() + params[f"layers.{k}.bias"] + shift))
        x = y if k == 0 else x + y
    return x @ params["last.weight"].t() + params["last.bias"] + 0.5


def reference_meta_gradient(params: dict[str, Tensor], cfg: FieldConfig, meta: MetaConfig, coords: Tensor,
                            targets: Tensor, contexts: list[Tensor | None]) -> dict[str, Tensor]:
    """∂θ of the mean over signals of the full-context MSE after G inner steps, one signal at a time:
    its own φ = 0 ``[P]``, its own context rows ``contexts[g][b]``, its own second-order graph.
    targets ``[B, N, D]`` → gradients in θ's naming."""
    assert cfg.shift_mode == "inside"
    theta = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
    B = targets.shape[0]
    for b in range(B):
        phi = torch.zeros(cfg.latent_dim, dtype=targets.dtype, device=targets.device, requires_grad=True)
        for index in contexts:
            rows = slice(None) if index is None else index[b]
            loss = (reference_forward(theta, cfg, coords[rows], phi) - targets[b][rows]).pow(2).mean()
            (grad,) = torch.autograd.grad(loss, phi, create_graph=True)
            phi = phi - meta.inner_lr * grad
        ((reference_forward(theta, cfg, coords, phi) - targets[b]).pow(2).mean() / B).backward()
    return {k: v.grad for k, v in theta.items()}


def _meta_problem(device: torch.device, B: int, seed: int) -> tuple[FieldConfig, MetaConfig, dict[str, Tensor],
                                                                     Tensor, Tensor]:
    """float64 θ, coords ``[144, 2]`` and random targets ``[B, 144, 1]`` on ``device``."""
    cfg, meta = check_config()
    gen = torch.Generator().manual_seed(seed)
    params = nf.init_params(cfg, generator=gen, dtype=torch.float64, device=device)
    coords = nf.coordinate_grid((12, 12), device=device, dtype=torch.float64)
    targets = torch.rand(B, coords.shape[0], 1, generator=gen, dtype=torch.float64).to(device)
    return cfg, meta, params, coords, targets


def check_meta_gradient(device: torch.device) -> Result:
    """1a: batched second-order meta-gradient vs the per-signal reference (float64, B = 4)."""
    cfg, meta, params, coords, targets = _meta_problem(device, B=4, seed=0)
    contexts = sample_contexts(meta, 4, coords.shape[0], seed=0, iteration=0, device=device)
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    out = meta_objective(theta, targets, coords, cfg, meta, contexts)
    grads = dict(zip(theta, torch.autograd.grad(out.loss, list(theta.values()))))
    ref = reference_meta_gradient(params, cfg, meta, coords, targets, contexts)
    return verdict(relative(grads, ref), META_GRAD_TOL, dtype="float64", batch=4, config=_field_text(cfg, meta))


def check_micro_batch(device: torch.device) -> Result:
    """1a: ``accumulate_meta_gradient(micro_batch=2)`` for B = 5 vs the whole batch and vs the reference."""
    cfg, meta, params, coords, targets = _meta_problem(device, B=5, seed=2)
    grads = {}
    for micro in (2, None):
        theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
        accumulate_meta_gradient(theta, targets, coords, cfg, meta, seed=7, iteration=3, micro_batch=micro)
        grads[micro] = {k: v.grad for k, v in theta.items()}
    contexts = sample_contexts(meta, 5, coords.shape[0], seed=7, iteration=3, device=device)
    ref = reference_meta_gradient(params, cfg, meta, coords, targets, contexts)
    vs_whole, vs_ref = relative(grads[2], grads[None]), relative(grads[2], ref)
    return verdict(max(vs_whole, vs_ref), META_GRAD_TOL, vs_whole_batch=vs_whole, vs_reference=vs_ref,
                   dtype="float64", batch=5, micro_batch=2)


def check_fit_batches(device: torch.device) -> Result:
    """1b: ``fit_latents`` with batch size 1 vs 7 on 9 signals (float32, grad_rescale on, H = 10)."""
    cfg, _ = check_config(P=32)
    params = nf.init_params(cfg, generator=torch.Generator().manual_seed(1))
    images = smooth_images(9, 16, seed=3)
    fit = FitConfig(steps=10, lr=1e-2, grad_rescale=True, rescale_ratio=0.25)
    one = fit_latents(params, images, cfg, replace(fit, batch_size=1), device=device)
    seven = fit_latents(params, images, cfg, replace(fit, batch_size=7), device=device)
    return verdict(relative(seven.latents, one.latents), FIT_BATCH_TOL, dtype="float32", signals=9,
                   psnr_mean=float(one.psnr.mean()))


def _learn_and_fit(device: torch.device) -> tuple[dict[str, Tensor], float]:
    """20 meta-iterations of a tiny MetaLearner on ``device`` (float32), then a fit of 8 held-out images:
    ``(θ on the CPU, test PSNR mean)``."""
    cfg = FieldConfig(in_dims=2, out_dims=1, num_layers=4, hidden_dim=32, latent_dim=32, omega_first=20.0,
                      omega_last=60.0)
    meta = MetaConfig(inner_steps=3, context_ratio=0.25, meta_lr=1e-3, batch_size=8, steps=20, lr_schedule="constant")
    train, test = smooth_images(32, 16, seed=4), smooth_images(8, 16, seed=5)
    learner = MetaLearner(cfg, meta, seed=0, device=device)
    for i in range(meta.steps):
        learner.step(train[(i % 4) * 8:(i % 4 + 1) * 8])
    theta = learner.detached_params()
    fitted = fit_latents(theta, test, cfg, FitConfig(steps=10, grad_rescale=True, batch_size=8), device=device)
    return {k: v.cpu() for k, v in theta.items()}, float(fitted.psnr.mean())


def check_cpu_gpu(device: torch.device) -> Result:
    """1c: the same short meta-learning run on the CPU and on ``device``: θ and the fit's PSNR."""
    theta_cpu, psnr_cpu = _learn_and_fit(torch.device("cpu"))
    theta_dev, psnr_dev = _learn_and_fit(device)
    diff = abs(psnr_dev - psnr_cpu)
    out = verdict(relative(theta_dev, theta_cpu), CPU_GPU_THETA_TOL, psnr_cpu=psnr_cpu, psnr_device=psnr_dev,
                  psnr_diff_db=diff, psnr_threshold_db=CPU_GPU_PSNR_TOL, dtype="float32", meta_iterations=20)
    out["passed"] = out["passed"] and diff <= CPU_GPU_PSNR_TOL
    return out


def initial_theta(cfg: EngineConfig, dtype: torch.dtype = torch.float32) -> dict[str, Tensor]:
    """θ₀ as :class:`MetaLearner` draws it with ``seed=0`` (on the CPU)."""
    return nf.init_params(cfg.field, generator=torch.Generator().manual_seed(0), dtype=dtype)


def _paper_side(params: dict[str, Tensor], images: Tensor, cfg: EngineConfig, fit: FitConfig,
                device: torch.device) -> tuple[dict[str, Tensor], Tensor]:
    """1d on one device: the float64 meta-gradient of ``images`` ``[B, 1, S, S]`` at θ₀ and the latents
    ``[B, P]`` of a fit from θ₀, both back on the CPU."""
    theta = {k: v.to(device).requires_grad_(True) for k, v in params.items()}
    targets = nf.to_points(as_unit(images, torch.float64).to(device))  # [B, N, 1]
    coords = nf.coordinate_grid(tuple(images.shape[2:]), device=device, dtype=torch.float64)
    accumulate_meta_gradient(theta, targets, coords, cfg.field, cfg.meta, seed=0, iteration=0)
    grads = {k: v.grad.cpu() for k, v in theta.items() if v.grad is not None}
    ids = torch.arange(len(images), device=device)
    latents = fit_batch({k: v.detach() for k, v in theta.items()}, targets, coords, cfg.field, fit, ids).latents
    return grads, latents.cpu()


def check_paper_cpu_gpu(s: Settings, images: Callable[[], Images], device: torch.device) -> Result:
    """1d: the run config in float64 on ``s.paper_batch`` real images, CPU vs device: meta-gradient and latents."""
    cfg, batch = s.engine, images().train[: s.paper_batch]
    params = initial_theta(cfg, torch.float64)
    fit = replace(cfg.fit, steps=s.paper_fit_steps)
    cpu_s, (grads_cpu, latents_cpu) = timed(torch.device("cpu"), partial(_paper_side, params, batch, cfg, fit,
                                                                         torch.device("cpu")))
    dev_s, (grads_dev, latents_dev) = timed(device, partial(_paper_side, params, batch, cfg, fit, device))
    grad_err, latent_err = relative(grads_dev, grads_cpu), relative(latents_dev, latents_cpu)
    return verdict(max(grad_err, latent_err), PAPER_F64_TOL, meta_gradient=grad_err, latents=latent_err,
                   dtype="float64", batch=len(batch), fit_steps=fit.steps, config=_field_text(cfg.field, cfg.meta),
                   size=s.size, seconds_cpu=cpu_s, seconds_device=dev_s)


EXACTNESS: dict[str, Callable[[torch.device], Result]] = {
    "meta_gradient": check_meta_gradient,
    "micro_batch": check_micro_batch,
    "fit_batch_independence": check_fit_batches,
    "cpu_gpu": check_cpu_gpu,
}


def part_exactness(device: torch.device, extra: dict[str, Callable[[torch.device], Result]] | None = None) -> Result:
    """Part 1: every check (those of :data:`EXACTNESS`, then ``extra``) guarded; status ``failed`` if one failed,
    ``error`` if one raised."""
    checks = {name: guarded(lambda fn=fn: fn(device), device) for name, fn in {**EXACTNESS, **(extra or {})}.items()}
    return {"status": checks_status(checks), "checks": checks}


def checks_status(checks: Result) -> str:
    """``failed`` when a check that ran did not pass, else ``error`` when one raised, else ``ok``."""
    if any(c["status"] == "ok" and not c["passed"] for c in checks.values()):
        return "failed"
    return "error" if any(c["status"] == "error" for c in checks.values()) else "ok"


# ---------------------------------------------------------------------------------------------- 2. memory budget


def _grads(learner: MetaLearner) -> dict[str, Tensor] | None:
    """The learner's ``.grad`` after a step (on the CPU), or None when the step did not leave them."""
    grads = {k: p.grad for k, p in learner.params.items()}
    if any(g is None for g in grads.values()):
        return None
    return {k: g.detach().cpu() for k, g in grads.items() if g is not None}


def part_memory_budget(s: Settings, images: Callable[[], Images], device: torch.device) -> Result:
    """Part 2: a budget that makes the planner split B into micro-batches; one step split and one unsplit."""
    cfg, spatial = s.engine, (s.size, s.size)
    B = cfg.meta.batch_size
    in_use = memory_in_use(device)
    whole = plan_memory(cfg, spatial, budget=MemoryBudget(2**60, "unbounded"), device=device, in_use=in_use,
                        small_parts=False)
    target = max(1, B // 4)  # room for target + ½ signals (and for one fit signal)
    room = max(whole.meta_fixed + (target + 0.5) * whole.meta_signal, whole.fit_fixed + 1.5 * whole.fit_signal)
    budget = MemoryBudget(int((1 + whole.margin) * (in_use + room)), f"gpu_check: room for ≈ {target}.5 of {B} signals")
    plan = plan_memory(cfg, spatial, budget=budget, device=device, in_use=in_use)
    batch = as_unit(images().train[:B])
    theta0 = initial_theta(cfg)
    runs: Result = {}
    grads: dict[str, dict[str, Tensor] | None] = {}
    updates: dict[str, dict[str, Tensor]] = {}
    for label, micro, estimate in (("split", plan.micro_batch, plan.meta_peak), ("whole", B, whole.meta_peak)):
        learner = MetaLearner(cfg.field, cfg.meta, params=theta0, seed=0, device=device)
        reset_peak(device)
        seconds, stats = timed(device, partial(learner.step, batch, micro_batch=micro))
        runs[label] = {"micro_batch": micro, "parts": -(-B // micro), "seconds": seconds, "loss": float(stats["loss"]),
                       **peak_record(device, estimate)}
        grads[label] = _grads(learner)
        updates[label] = {k: v.cpu() - theta0[k] for k, v in learner.detached_params().items()}
        del learner
    split_grads, whole_grads = grads["split"], grads["whole"]
    update_err = relative(updates["split"], updates["whole"])
    grad_err = relative(split_grads, whole_grads) if split_grads is not None and whole_grads is not None else None
    check = verdict(grad_err if grad_err is not None else update_err, SPLIT_GRAD_TOL,
                    compared="meta-gradient (.grad after the step)" if grad_err is not None else
                    "AdamW update (the step left no .grad)", meta_gradient=grad_err, update=update_err,
                    dtype="float32")
    split_peak = runs["split"]["peak_allocated_mib"] * MIB
    return {"status": "ok" if check["passed"] and plan.micro_batch < B else "failed", "split": plan.micro_batch < B,
            "budget_mib": budget.bytes / MIB, "budget": budget.origin, "in_use_mib": in_use / MIB,
            "plan": plan.to_dict(), "micro_batch": plan.micro_batch, "parts": plan.parts, "batch": B,
            "unsplit_estimated_peak_mib": whole.meta_peak / MIB, "within_budget": bool(split_peak <= budget.bytes),
            "runs": runs, "check": check, "memory": memory_kind(device)}


# ---------------------------------------------------------------------------------------------- 3. determinism


def _bytes_equal(a: Tensor, b: Tensor) -> Result:
    """Byte-for-byte comparison of two tensors of one shape and dtype: identical, differing values, max |a − b|."""
    a, b = a.detach().cpu().contiguous(), b.detach().cpu().contiguous()
    same_bytes = a.shape == b.shape and a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    differing = int((a != b).sum()) if a.shape == b.shape else a.numel()
    return {"identical": bool(same_bytes), "differing_values": differing, "numel": a.numel(),
            "max_abs_diff": float((a.double() - b.double()).abs().max()) if a.numel() else 0.0}


def _short_run(s: Settings, images: Images, device: torch.device, micro: int, fit: FitConfig) -> tuple[Tensor, Tensor]:
    """Part 3's run: θ₀ (seed 0), ``s.determinism_iters`` meta-iterations on fixed batches, a fit of test images:
    ``(θ flattened, latents)`` on the CPU."""
    cfg = s.engine
    learner = MetaLearner(cfg.field, cfg.meta, seed=0, device=device)
    for index in batch_order(len(images.train), cfg.meta.batch_size, s.determinism_iters):
        learner.step(as_unit(images.train[index]), micro_batch=micro)
    theta = learner.detached_params()
    held_out = images.test if images.test is not None else images.train
    fitted = fit_latents(theta, held_out[: s.determinism_fit], cfg.field, fit, device=device)
    flat = torch.cat([v.reshape(-1).cpu() for _, v in sorted(theta.items())])
    return flat, fitted.latents


def part_determinism(s: Settings, images: Callable[[], Images], device: torch.device) -> Result:
    """Part 3: the same short run twice, compared byte for byte (nothing forced to be deterministic)."""
    plan = default_plan(s.engine, s.size, device)
    fit = replace(s.engine.fit, batch_size=min(plan.fit_batch, s.determinism_fit))
    first = _short_run(s, images(), device, plan.micro_batch, fit)
    second = _short_run(s, images(), device, plan.micro_batch, fit)
    theta, latents = _bytes_equal(first[0], second[0]), _bytes_equal(first[1], second[1])
    return {"identical": theta["identical"] and latents["identical"], "theta": theta, "latents": latents,
            "meta_iterations": s.determinism_iters, "fit_images": len(first[1]), "micro_batch": plan.micro_batch,
            "deterministic_algorithms": torch.are_deterministic_algorithms_enabled(),
            "cublas_workspace_config": os.environ.get("CUBLAS_WORKSPACE_CONFIG"),
            "cudnn_deterministic": torch.backends.cudnn.deterministic}


# ---------------------------------------------------------------------------------------------- 4. engine


def gemm_rate(rows: int, inner: int, cols: int, precision: str, device: torch.device, min_s: float,
              max_reps: int = 50) -> Result:
    """TFLOP/s of ``[rows, inner] × [inner, cols]`` in ``precision`` as the engine runs it (inside
    ``matmul_switches``), repeated for about ``min_s`` seconds; its arithmetic intensity (FLOP per byte moved)."""
    policy = resolve_precision(precision, device, warn=False)
    with matmul_switches(policy):
        dtype = torch.bfloat16 if policy.bf16 else torch.float32
        a, b = (torch.randn(shape, device=device, dtype=dtype) for shape in ((rows, inner), (inner, cols)))
        out = torch.empty(rows, cols, device=device, dtype=dtype)
        gemm = partial(torch.matmul, a, b, out=out)
        first, _ = timed(device, gemm)  # warm-up (and the first call's cost: kernel selection)
        once, _ = timed(device, gemm)
        reps = max(1, min(max_reps, math.ceil(min_s / max(once, 1e-6))))
        seconds, _ = timed(device, partial(_repeat, gemm, reps))
    flops, moved = 2 * rows * inner * cols, (rows * inner + inner * cols + rows * cols) * a.element_size()
    return {"shape": [rows, inner, cols], "dtype": str(dtype).removeprefix("torch."), "effective": policy.effective,
            "reps": reps, "seconds_per_gemm": seconds / reps, "tflops": flops * reps / seconds / 1e12,
            "intensity_flop_per_byte": flops / moved}


def gemm_peak(precision: str, device: torch.device, n: int, reps: int) -> Result:
    """TFLOP/s of an n×n GEMM in ``precision`` (the format's peak as measured here)."""
    return {"n": n, **gemm_rate(n, n, n, precision, device, min_s=0.0, max_reps=reps)}


@dataclass
class Clock:
    """Whether the engine part may start a step of a kind (``setup`` of a precision, or an arm): the time left
    must cover the longest step of that kind so far (before the first: the longest of any kind, else ``guess``)
    and the time reserved for the parts after it."""

    deadline: float
    guess: float
    reserve: float
    taken: dict[str, list[float]] = field(default_factory=dict)

    def allows(self, kind: str) -> bool:
        seen = self.taken.get(kind) or [t for times in self.taken.values() for t in times] or [self.guess]
        return self.deadline - time.perf_counter() >= max(seen) + self.reserve

    def record(self, kind: str, seconds: float) -> None:
        self.taken.setdefault(kind, []).append(seconds)


def fit_split(params: dict[str, Tensor], images: Tensor, cfg: EngineConfig, batch: int, device: torch.device) -> Result:
    """Fit every image of a split (H = ``cfg.fit.steps``, batches of ``batch``): PSNR mean / std, time."""
    fit = replace(cfg.fit, batch_size=batch)
    seconds, result = timed(device, lambda: fit_latents(params, images, cfg.field, fit, device=device))
    return {"psnr_mean": float(result.psnr.mean()), "psnr_std": float(result.psnr.std()), "seconds": seconds,
            "images": len(images), "batch_size": batch}


def fit_throughput(cfg: EngineConfig, theta: dict[str, Tensor], plan: MemoryPlan, s: Settings,
                   device: torch.device) -> Result:
    """Fit images/s of one full planned fit batch of random images (after a warm-up fit of a few), its peak
    against the plan's fit estimate. Should the planned batch run out of device memory, that is recorded and
    half of it is measured instead."""
    gen, batch = torch.Generator().manual_seed(1), plan.fit_batch
    out: Result = {"planned_batch": batch}
    fit_latents(theta, random_signals(min(8, batch), cfg, s.size, gen).to(device), cfg.field,
                replace(cfg.fit, batch_size=batch), device=device)
    while True:
        fit = replace(cfg.fit, batch_size=batch)
        signals = random_signals(batch, cfg, s.size, gen).to(device)
        reset_peak(device)
        try:
            seconds, result = timed(device, lambda: fit_latents(theta, signals, cfg.field, fit, device=device))
            break
        except torch.cuda.OutOfMemoryError as err:
            if batch == 1 or "out_of_memory" in out:
                raise
            out["out_of_memory"] = {"batch": batch, **peak_record(device, plan.fit_peak), "error": str(err)[:500]}
            del signals
            batch //= 2
    flops = batch * FIT_FLOPS(cfg, s.size**2)
    return {**out, "images_per_s": batch / seconds, "seconds": seconds, "signals": batch, "batch_size": batch,
            "steps": cfg.fit.steps, "tflops": flops / seconds / 1e12, "kernel": result.kernel,
            "compile_report": compile_report(result), **peak_record(device, plan.fit_peak)}


def bench_arm(cfg: EngineConfig, arm: str, plan: MemoryPlan, s: Settings, data: Images, device: torch.device) -> Result:
    """One precision × arm: meta-iterations from θ₀ on the real batches, the fit throughput, the test PSNR."""
    B = cfg.meta.batch_size
    with arm_environment(arm):
        learner = MetaLearner(cfg.field, cfg.meta, params=initial_theta(cfg), seed=0, device=device)
        out: Result = {"environment": ARMS[arm], "compile_report_at_creation": compile_report(learner)}
        # the batches uploaded ahead as uint8, as a build's loader does (pinned, queued, on CUDA)
        batches = [upload(data.train[index], device) for index in batch_order(len(data.train), B, s.meta_iters)]
        step = partial(learner.step, micro_batch=plan.micro_batch)
        reset_peak(device)
        warmup, stats = [], []
        for batch in batches[: s.meta_warmup]:  # one by one, synchronised: the first holds any compiling
            dt, row = timed(device, partial(step, batch))
            warmup.append(dt)
            stats.append(row)
        synchronize(device)
        start = time.perf_counter()
        for batch in batches[s.meta_warmup:]:  # back to back, as a build runs them: no host wait in between
            if time.perf_counter() - start >= s.cap_s:
                break
            stats.append(step(batch))
        synchronize(device)
        steady, seconds = len(stats) - len(warmup), time.perf_counter() - start
        per_iter = seconds / steady if steady else statistics.median(warmup)
        psnr = [float(row["psnr"]) for row in stats]  # read after the timing
        flops = B * META_FLOPS(cfg, s.size**2)
        out["meta"] = {"iterations": len(stats), "planned_iterations": s.meta_iters,
                       "truncated": len(stats) < s.meta_iters, "first_s": warmup[0] if warmup else None,
                       "warmup_seconds": warmup, "steady_iterations": steady, "steady_seconds": seconds,
                       "s_per_iter": per_iter, "micro_batch": plan.micro_batch, "train_psnr_first": psnr[0],
                       "train_psnr_last": psnr[-1], "flops_per_iter": flops, "tflops": flops / per_iter / 1e12,
                       **peak_record(device, plan.meta_peak)}
        out["compile_report"] = compile_report(learner)
        theta = learner.detached_params()
        del learner
        out["fit"] = fit_throughput(cfg, theta, plan, s, device)
        if data.test is None:
            out["test"] = {"status": "skipped", "note": data.source}
        else:
            out["test"] = fit_split(theta, data.test, cfg, plan.fit_batch, device)
            out["test_psnr_mean"] = out["test"]["psnr_mean"]
    return out


def setup_precision(cfg: EngineConfig, s: Settings, data: Images, device: torch.device,
                    plans: dict[str, MemoryPlan]) -> Result:
    """Part 4 for one precision, before its arms: the plan (kept in ``plans``), the format's GEMM peak, the test
    PSNR at θ₀."""
    precision = cfg.field.precision
    plans[precision] = plan = default_plan(cfg, s.size, device)
    out: Result = {"precision": resolve_precision(precision, device, warn=False).to_dict(), "plan": plan.to_dict(),
                   "gemm_peak": gemm_peak(precision, device, s.gemm_size, s.gemm_reps), "arms": {}}
    if data.test is not None:
        out["test_theta0"] = fit_split(initial_theta(cfg), data.test, cfg, plan.fit_batch, device)
    return out


def part_engine(s: Settings, device: torch.device, precisions: Sequence[str], arms: Sequence[str],
                images: Callable[[], Images], clock: Clock) -> Result:
    """Part 4: arm by arm (every precision eager first, then compiled), each precision's setup and each arm
    guarded; a step is skipped when the clock does not allow it."""
    data = images()
    results: Result = {}
    plans: dict[str, MemoryPlan] = {}
    for arm in arms:
        for index, precision in enumerate(precisions):
            cfg = s.engine.replace(field={"precision": precision})
            if precision not in results:
                if not clock.allows("setup"):
                    results[precision] = {"status": "skipped", "note": "time budget spent"}
                    continue
                results[precision] = guarded(partial(setup_precision, cfg, s, data, device, plans), device)
                clock.record("setup", results[precision]["seconds"])
            bench = results[precision]
            if bench["status"] != "ok":
                continue
            if arm == "compiled" and s.compiled_precisions is not None and index >= s.compiled_precisions:
                bench["arms"][arm] = {"status": "skipped", "note": "dry run: the compiled arm runs for the first "
                                      "precision only (compiling costs seconds per configuration on a small CPU)"}
                continue
            if not clock.allows(arm):
                bench["arms"][arm] = {"status": "skipped", "note": "time budget spent"}
                continue
            result = guarded(partial(bench_arm, cfg, arm, plans[precision], s, data, device), device)
            clock.record(arm, result["seconds"])
            if result["status"] == "ok":
                for what in ("meta", "fit"):
                    result[what]["fraction_of_peak"] = result[what]["tflops"] / bench["gemm_peak"]["tflops"]
            bench["arms"][arm] = result
    return {"status": worst_status(results), "config": s.engine.to_dict(), "size": s.size, "images": data.source,
            "flop_model": FLOP_MODEL, "memory": memory_kind(device), "arms": {a: ARMS[a] for a in arms},
            "precisions": results}


# ---------------------------------------------------------------------------------------------- 5. roofline


def copy_bandwidth(device: torch.device, nbytes: int, min_s: float) -> Result:
    """GB/s of ``dst.copy_(src)`` on the device for a buffer of ``nbytes`` (read + write, and the copy rate)."""
    src = torch.ones(nbytes // 4, device=device)
    dst = torch.empty_like(src)
    copy = partial(dst.copy_, src)
    timed(device, copy)
    once, _ = timed(device, copy)
    reps = max(1, min(100, math.ceil(min_s / max(once, 1e-6))))
    seconds, _ = timed(device, partial(_repeat, copy, reps))
    return {"bytes": src.numel() * 4, "reps": reps, "read_write_gb_per_s": 2 * src.numel() * 4 * reps / seconds / 1e9,
            "copy_gb_per_s": src.numel() * 4 * reps / seconds / 1e9}


def _union_us(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of ``(start, end)`` intervals."""
    total, end = 0.0, -math.inf
    for a, b in sorted(intervals):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def profile_summary(fn: Callable[[], Any], device: torch.device, top: int = 8) -> Result:
    """``torch.profiler`` over one call of ``fn``: the device's events (CUDA kernels, copies, sets; on the CPU
    the CPU ops, nested ones counted too), their busy time against the wall time, the top events by time."""
    from torch.autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    cuda = device.type == "cuda"
    activities = [ProfilerActivity.CPU, *([ProfilerActivity.CUDA] if cuda else [])]
    synchronize(device)
    with profile(activities=activities) as prof:
        start = time.perf_counter()
        fn()
        synchronize(device)
        wall = time.perf_counter() - start
    events = list(prof.events())
    kind = DeviceType.CUDA if cuda else DeviceType.CPU
    mine = [e for e in events if e.device_type == kind]
    busy = _union_us([(e.time_range.start, e.time_range.end) for e in mine]) / 1e6
    totals: dict[str, list[float]] = {}
    for e in mine:
        entry = totals.setdefault(e.name, [0, 0.0])
        entry[0] += 1
        entry[1] += (e.time_range.end - e.time_range.start) / 1e3
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][1])[:top]
    return {"events": "CUDA kernels, copies and sets" if cuda else "CPU ops (an op and the ops it calls each count)",
            "count": len(mine), "host_ops": sum(e.device_type == DeviceType.CPU for e in events),
            "busy_s": busy, "wall_s": wall, "idle_share": max(0.0, 1 - busy / wall) if wall > 0 else None,
            "top": [{"name": name[:120], "count": int(c), "ms": round(ms, 3)} for name, (c, ms) in ranked]}


def _profiled_runs(s: Settings, device: torch.device, images: Images) -> Result:
    """One steady-state meta-iteration (after two) and one fit call of one step on a full planned fit batch
    (after one), fp32, the eager arm, each profiled."""
    cfg = s.engine
    plan = default_plan(cfg, s.size, device)
    out: Result = {"micro_batch": plan.micro_batch, "fit_batch": plan.fit_batch}
    with arm_environment("eager"):
        learner = MetaLearner(cfg.field, cfg.meta, seed=0, device=device)
        batches = [upload(images.train[i], device) for i in batch_order(len(images.train), cfg.meta.batch_size, 3)]
        for batch in batches[:2]:
            learner.step(batch, micro_batch=plan.micro_batch)
        out["meta_iteration"] = profile_summary(partial(learner.step, batches[2], micro_batch=plan.micro_batch),
                                                device)
        theta = learner.detached_params()
        del learner
        fit = replace(cfg.fit, steps=1, batch_size=plan.fit_batch)
        signals = random_signals(plan.fit_batch, cfg, s.size, torch.Generator().manual_seed(3)).to(device)
        fit_latents(theta, signals, cfg.field, fit, device=device)
        out["fit_step"] = profile_summary(partial(fit_latents, theta, signals, cfg.field, fit, device=device), device)
    return out


def part_roofline(s: Settings, device: torch.device, precisions: Sequence[str], images: Callable[[], Images]) -> Result:
    """Part 5: engine-shaped GEMMs per precision, the copy bandwidth, the profiles (each guarded)."""
    cfg, N = s.engine, s.size**2
    B, L = cfg.meta.batch_size, cfg.field.hidden_dim
    plan = default_plan(cfg, s.size, device)
    n = N if cfg.meta.context_ratio >= 1.0 else context_size(N, cfg.meta.context_ratio)
    shapes = {"meta_context": B * n, "meta_full_grid": B * N, "fit": min(plan.fit_batch * N, s.gemm_rows_max)}
    min_s = 0.2 if device.type == "cuda" else 0.01
    gemms = {p: {name: guarded(partial(gemm_rate, rows, L, L, p, device, min_s), device)
                 for name, rows in shapes.items()} for p in precisions}
    copy = guarded(partial(copy_bandwidth, device, s.copy_bytes, min_s), device)
    profiles = guarded(partial(_profiled_runs, s, device, images()), device)
    parts = {"gemms": gemms, "copy": copy, "profile": profiles}
    return {"status": worst_status(parts), "fit_batch": plan.fit_batch, **parts}


# ---------------------------------------------------------------------------------------------- 6. decode


def part_decode(s: Settings, device: torch.device) -> Result:
    """Part 6: ``decode`` of ``s.decode_batch`` latents ``[B, P]`` at ``size²`` (fp32), images/s."""
    cfg = s.engine.field
    gen = torch.Generator().manual_seed(2)
    params = nf.init_params(cfg, generator=gen, device=device)
    latents = (0.1 * torch.randn(s.decode_batch, cfg.latent_dim, generator=gen)).to(device)
    spatial = (s.size, s.size)
    images = nf.decode(params, latents, cfg, spatial)  # warm-up
    reset_peak(device)
    seconds, _ = timed(device, partial(_repeat, partial(nf.decode, params, latents, cfg, spatial), s.decode_reps))
    return {"images_per_s": s.decode_batch * s.decode_reps / seconds, "batch": s.decode_batch, "reps": s.decode_reps,
            "size": s.size, "output_shape": list(images.shape), "peak_mib": peak_mib(device)}


# ---------------------------------------------------------------------------------------------- report


def _statuses(tree: Any) -> Iterator[str]:
    """Every ``status`` value in a nested result (not inside an engine's ``compile_report``)."""
    if isinstance(tree, dict):
        if isinstance(tree.get("status"), str):
            yield tree["status"]
        for key, value in tree.items():
            if not str(key).startswith("compile_report"):
                yield from _statuses(value)


def worst_status(tree: Any) -> str:
    """``failed`` when a check anywhere in ``tree`` failed, else ``error`` when something raised, else ``ok``."""
    found = set(_statuses(tree))
    return "failed" if "failed" in found else "error" if "error" in found else "ok"


def _field_text(cfg: FieldConfig, meta: MetaConfig | None = None) -> str:
    text = f"K{cfg.num_layers} L{cfg.hidden_dim} P{cfg.latent_dim} ω {cfg.omegas[0]:g}→{cfg.omegas[-1]:g}"
    return text + (f" G{meta.inner_steps} γ{meta.context_ratio:g} B{meta.batch_size}" if meta else "")


def _git_commit() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], check=False, cwd=REPO, capture_output=True, text=True,
                             timeout=10)
        dirty = subprocess.run(["git", "status", "--porcelain"], check=False, cwd=REPO, capture_output=True,
                               text=True, timeout=10)
        return out.stdout.strip() + (" (modified)" if dirty.stdout.strip() else "") if out.returncode == 0 else None
    except (OSError, subprocess.SubprocessError):
        return None


def cpu_model() -> str:
    """The CPU model from /proc/cpuinfo, else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: torch.device) -> Result:
    """torch / CUDA versions, device, date, git commit."""
    env: Result = {"torch": torch.__version__, "cuda": torch.version.cuda, "python": platform.python_version(),
                   "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
                   "device": str(device), "threads": torch.get_num_threads(), "git_commit": _git_commit(),
                   "float32_matmul_precision": torch.get_float32_matmul_precision(),
                   "engine_environment": {k: os.environ.get(k) for k in ENGINE_ENVIRONMENT}}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(device_name=props.name, capability=f"{props.major}.{props.minor}",
                   device_memory_gib=round(props.total_memory / 2**30, 1))
    else:
        env["device_name"] = cpu_model()
    return env


def _fmt(value: Any, digits: int = 4) -> str:
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return "—" if value is None else str(value)


Row = tuple[str, str, str, str, str]  # part, check / metric, value, detail, status


def _mib(value: float | None) -> str:
    return "—" if value is None else f"{value:.0f}"


def _check_cell(c: Result) -> str:
    status = c.get("status", "ok")
    return status if status != "ok" else ("PASS" if c["passed"] else "FAIL")


def _exactness_rows(part: Result) -> list[Row]:
    rows = []
    for name, c in part.get("checks", {}).items():
        detail = c.get("error") or f"≤ {_fmt(c.get('threshold'), 1)}"
        if "latents" in c:
            detail += (f" (meta-gradient {_fmt(c['meta_gradient'], 3)}, latents {_fmt(c['latents'], 3)}; "
                       f"{c['config']} at {c['size']}², B {c['batch']}, {c['dtype']})")
        rows.append(("1 exactness", name, _fmt(c.get("value"), 3), detail, _check_cell(c)))
    return rows


def _memory_rows(part: Result) -> list[Row]:
    if "runs" not in part:
        return []
    budget, runs, check = part["budget_mib"], part["runs"], part["check"]
    rows: list[Row] = [("2 memory budget", f"micro-batch of B {part['batch']} in {budget:.0f} MiB",
                        f"{part['micro_batch']} ({part['parts']} parts)",
                        f"unsplit plan's estimate {part['unsplit_estimated_peak_mib']:.0f} MiB",
                        "ok" if part["split"] else "not split")]
    for label, run in runs.items():
        rows.append(("2 memory budget", f"peak allocated / reserved, {label} (micro-batch {run['micro_batch']})",
                     f"{_mib(run['peak_allocated_mib'])} / {_mib(run['peak_reserved_mib'])} MiB",
                     f"estimate {_mib(run['estimated_peak_mib'])} MiB, {run['seconds']:.3g} s",
                     "ok" if label != "split" else ("within budget" if part["within_budget"] else "over budget")))
    rows.append(("2 memory budget", f"split vs unsplit: {check['compared']}", _fmt(check["value"], 3),
                 f"≤ {_fmt(check['threshold'], 1)}; AdamW update {_fmt(check['update'], 3)}", _check_cell(check)))
    return rows


def _determinism_rows(part: Result) -> list[Row]:
    if "theta" not in part:
        return []
    detail = "; ".join(f"{what}: {r['differing_values']} of {r['numel']} differ, max |Δ| {_fmt(r['max_abs_diff'], 3)}"
                       for what, r in (("θ", part["theta"]), ("latents", part["latents"])))
    what = f"two runs of {part['meta_iterations']} meta-iters + a fit of {part['fit_images']}: byte-identical"
    return [("3 determinism", what, "yes" if part["identical"] else "no", detail, part["status"])]


def _arm_rows(p: str, arm: str, r: Result, theta0: Result | None) -> list[Row]:
    name = f"{p} {arm}"
    if r["status"] != "ok":
        return [("4 engine", name, "—", str(r.get("error", r.get("note", ""))), r["status"])]
    m, f = r["meta"], r["fit"]
    iters = f"{m['iterations']} iters{' (truncated)' if m['truncated'] else ''}"
    rows: list[Row] = [
        ("4 engine", f"{name}: s/meta-iter", _fmt(m["s_per_iter"]),
         f"first {_fmt(m['first_s'], 3)} s, {iters}, micro-batch {m['micro_batch']}; {_fmt(m['tflops'], 3)} TFLOP/s "
         f"= {m.get('fraction_of_peak', math.nan):.1%} of the GEMM peak", "ok"),
        ("4 engine", f"{name}: meta peak allocated / reserved", f"{_mib(m['peak_allocated_mib'])} / "
         f"{_mib(m['peak_reserved_mib'])} MiB", f"estimate {_mib(m['estimated_peak_mib'])} MiB", "ok"),
        ("4 engine", f"{name}: fit images/s (batch {f['batch_size']}, H {f['steps']})", _fmt(f["images_per_s"]),
         f"peak {_mib(f['peak_allocated_mib'])} / {_mib(f['peak_reserved_mib'])} MiB, estimate "
         f"{_mib(f['estimated_peak_mib'])} MiB; {_fmt(f['tflops'], 3)} TFLOP/s"
         + (f"; the planned batch {f['planned_batch']} ran out of memory" if "out_of_memory" in f else ""), "ok")]
    if "test_psnr_mean" in r:
        base = f"θ₀ {theta0['psnr_mean']:.3f} dB, " if theta0 else ""
        rows.append(("4 engine", f"{name}: test PSNR ({r['test']['images']} images)", f"{r['test_psnr_mean']:.3f} dB",
                     f"{base}after {m['iterations']} meta-iters from the same θ₀", "ok"))
    for what, report in (("meta-gradient", r.get("compile_report")), ("fit", f.get("compile_report"))):
        if report is not None:
            used = report.get("used", "?") if isinstance(report, dict) else "?"
            rows.append(("4 engine", f"{name}: {what} compile report", str(used),
                         json.dumps(report, default=str)[:300], "ok"))
    return rows


def _engine_rows(part: Result) -> list[Row]:
    rows: list[Row] = []
    for p, r in part.get("precisions", {}).items():
        if r["status"] != "ok":
            rows.append(("4 engine", p, "—", r.get("error", r.get("note", "")), r["status"]))
            continue
        g = r["gemm_peak"]
        rows.append(("4 engine", f"{p} (eff. {r['precision']['effective']}): {g['n']}² GEMM peak",
                     f"{g['tflops']:.3g} TFLOP/s", f"plan: micro-batch {r['plan']['micro_batch']}, fit batch "
                     f"{r['plan']['fit_batch']}", "ok"))
        for arm, a in r["arms"].items():
            rows += _arm_rows(p, arm, a, r.get("test_theta0"))
    return rows


def _profile_row(what: str, r: Result) -> Row:
    if r.get("status", "ok") != "ok" or "count" not in r:
        return ("5 roofline", what, "—", r.get("error", ""), r.get("status", "?"))
    idle = "—" if r["idle_share"] is None else f"{r['idle_share']:.0%}"
    return ("5 roofline", what, f"{r['count']} events", f"{r['events']}: busy {_fmt(r['busy_s'], 3)} s of "
            f"{_fmt(r['wall_s'], 3)} s wall (idle {idle}); {r['host_ops']} host ops", "ok")


def _roofline_rows(part: Result) -> list[Row]:
    rows: list[Row] = []
    for p, shapes in part.get("gemms", {}).items():
        for name, g in shapes.items():
            if g["status"] != "ok":
                rows.append(("5 roofline", f"{p} GEMM {name}", "—", g.get("error", ""), g["status"]))
                continue
            shape = "×".join(str(x) for x in g["shape"])
            rows.append(("5 roofline", f"{p} GEMM {name} [{shape}]", f"{g['tflops']:.3g} TFLOP/s",
                         f"{g['dtype']}, {g['intensity_flop_per_byte']:.0f} FLOP/B", "ok"))
    copy = part.get("copy")
    if copy:
        value = f"{copy['read_write_gb_per_s']:.0f} GB/s" if copy["status"] == "ok" else "—"
        detail = copy.get("error") or f"read + write, copy_ of {copy['bytes'] / MIB:.0f} MiB"
        rows.append(("5 roofline", "copy bandwidth", value, detail, copy["status"]))
    profile = part.get("profile", {})
    if profile.get("status") == "ok":
        rows.append(_profile_row(f"profile: 1 meta-iteration (micro-batch {profile['micro_batch']})",
                                 profile["meta_iteration"]))
        rows.append(_profile_row(f"profile: 1 fit step ({profile['fit_batch']} images)", profile["fit_step"]))
    elif profile:
        rows.append(_profile_row("profile", profile))
    return rows


def _decode_rows(part: Result) -> list[Row]:
    what = f"images/s at {part.get('size', '?')}² (batch {part.get('batch', '?')})"
    return [("6 decode", what, _fmt(part.get("images_per_s")), "", part["status"])]


PART_ROWS: dict[str, Callable[[Result], list[Row]]] = {
    "exactness": _exactness_rows, "memory_budget": _memory_rows, "determinism": _determinism_rows,
    "engine": _engine_rows, "roofline": _roofline_rows, "decode": _decode_rows,
}


def markdown(results: Result) -> str:
    """A short Markdown summary: environment and config lines, one table of every part's headline numbers."""
    env, parts = results["environment"], results["parts"]
    rows: list[Row] = []
    for name, part in parts.items():
        if "error" in part or part["status"] == "skipped":  # the part raised as a whole, or did not start
            rows.append((name, "part", "—", part.get("error", part.get("note", "")), part["status"]))
        rows += PART_ROWS[name](part)
    paper, engine = get_preset("2d-64"), parts.get("engine", {})
    run = EngineConfig.from_dict(results["config"])
    done = "" if results["complete"] else f" (incomplete: {len(parts)} of {len(PART_ROWS)} parts)"
    machine = (f"{env.get('device_name')} ({env['device']}), torch {env['torch']} (CUDA {env['cuda']}), "
               f"{env['date']}, commit {env.get('git_commit')}; total {results['total_seconds']:.1f} s, "
               f"exit code {results['exit_code']}{done}.")
    configs = (f"Paper config: {_field_text(paper.field, paper.meta)}; run config: "
               f"{_field_text(run.field, run.meta)} at {results['size']}²; images: {engine.get('images', '—')}; "
               f"FLOP model: {results['flop_model']}; memory: {memory_kind(torch.device(env['device']))}.")
    lines = [f"# mednf GPU check ({'dry run' if results['dry_run'] else 'GPU'})", "", machine, configs, "",
             "| part | check / metric | value | detail | status |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def exit_code(parts: Result) -> int:
    """1 when a check failed (exactness, the split meta-gradient), else 2 when anything raised, else 0."""
    return {"failed": 1, "error": 2}.get(worst_status(parts), 0)


def write_results(results: Result, out: Path) -> str:
    """``gpu_check.json`` and ``gpu_check.md`` in ``out`` (rewritten after every part, so that a run cut short
    still leaves what it measured); returns the Markdown."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu_check.json").write_text(json.dumps(results, indent=2, ensure_ascii=False, default=str) + "\n",
                                        encoding="utf-8")
    try:
        text = markdown(results)
    except Exception as err:  # noqa: BLE001 - the JSON above holds every number anyway
        text = (f"# mednf GPU check\n\nthe table could not be rendered ({type(err).__name__}: {err}); "
                "see gpu_check.json\n")
    (out / "gpu_check.md").write_text(text, encoding="utf-8")
    return text


# ---------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    p.add_argument("--device", default=None, help="default cuda:0 (cpu with --dry-run)")
    p.add_argument("--dry-run", action="store_true", help="the same code path on the CPU with a tiny config")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default $OUT, else benchmarks/gpu_check_results)")
    p.add_argument("--medmnist-root", type=Path, default=DEFAULT_ROOT, help=f"folder holding {BREAST_FILE}")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds for the whole script (default 480, dry run 90)")
    p.add_argument("--precisions", default="fp32,tf32,bf16", help="comma-separated precisions of parts 4 and 5")
    p.add_argument("--arms", default="eager,compiled", help=f"comma-separated arms of part 4 ({', '.join(ARMS)})")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (dry run default: 1)")
    p.add_argument("--meta-iters", type=int, default=None, help="meta-iterations per precision and arm")
    return p.parse_args(argv)


def resolve_device(args: argparse.Namespace) -> torch.device | str:
    """The device, or the one-line reason it cannot be used."""
    device = torch.device(args.device or ("cpu" if args.dry_run else "cuda:0"))
    if device.type == "cuda" and not torch.cuda.is_available():
        return (f"gpu_check: --device {device} but torch {torch.__version__} sees no CUDA device "
                "(torch.cuda.is_available() is False); run on the GPU machine or pass --dry-run")
    return device


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    device = resolve_device(args)
    if isinstance(device, str):
        print(device, file=sys.stderr)
        return 3
    arms = _names(args.arms)
    if unknown := [a for a in arms if a not in ARMS]:
        print(f"gpu_check: --arms {args.arms!r}: unknown {unknown}; expected {', '.join(ARMS)}", file=sys.stderr)
        return 2
    warnings.simplefilter("ignore", PrecisionWarning)  # the resolved precision is recorded instead
    if args.dry_run and args.threads is None:
        args.threads = 1  # tiny tensors: a second thread only adds barrier waits on a busy 2-core machine
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    s = settings_for(args)
    budget = args.time_budget if args.time_budget is not None else (90.0 if args.dry_run else 480.0)
    deadline = start + budget
    out = args.out or Path(os.environ.get("OUT") or REPO / "benchmarks" / "gpu_check_results")
    precisions = _names(args.precisions)
    images = functools.cache(partial(load_images, s, args.medmnist_root))
    clock = Clock(deadline, s.arm_guess_s, s.reserve_s)
    runs: dict[str, Callable[[], Result]] = {
        "exactness": lambda: part_exactness(device, {"paper_cpu_gpu": partial(check_paper_cpu_gpu, s, images)}),
        "memory_budget": lambda: part_memory_budget(s, images, device),
        "determinism": lambda: part_determinism(s, images, device),
        "engine": lambda: part_engine(s, device, precisions, arms, images, clock),
        "roofline": lambda: part_roofline(s, device, precisions, images),
        "decode": lambda: part_decode(s, device),
    }
    results: Result = {"dry_run": bool(args.dry_run), "complete": False, "environment": environment(device),
                       "time_budget_s": budget, "flop_model": FLOP_MODEL, "config": s.engine.to_dict(), "size": s.size,
                       "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                       "parts": {}}
    for name, run in runs.items():
        if time.perf_counter() >= deadline:
            results["parts"][name] = {"status": "skipped", "note": "time budget spent", "seconds": 0.0}
        else:
            with arm_environment("eager"):  # compiled only inside the engine's compiled arms
                results["parts"][name] = guarded(run, device)
        results["complete"] = len(results["parts"]) == len(runs)
        results["exit_code"] = exit_code(results["parts"])
        results["total_seconds"] = time.perf_counter() - start
        text = write_results(results, out)
        print(f"[{results['total_seconds']:6.1f} s] {name}: {results['parts'][name]['status']}", flush=True)
    print(text)
    print(f"results: {out / 'gpu_check.json'}, {out / 'gpu_check.md'}")
    return results["exit_code"]


if __name__ == "__main__":
    raise SystemExit(main())
