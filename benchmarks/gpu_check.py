"""One-call GPU check of the mednf engine: exactness on CUDA, speed and memory at the paper 2D config,
decode throughput and a short BreastMNIST 64² build — one command, one results file, ≤ 9 minutes.

Command (GPU machine, repository root; copy ``breastmnist_64.npz`` into a git-ignored folder of the checkout
and name it in ``carry`` if part 4 should run there, since ``../shared`` does not travel)::

    python benchmarks/gpu_check.py --medmnist-root ../shared/data/medmnist --out $OUT

Smoke run on a CPU (tiny config, same code path, < 30 s; the test runs it)::

    python benchmarks/gpu_check.py --dry-run --out /tmp/gpu_check

What it measures (each part, and each check / precision inside it, is timed and guarded: an exception is
recorded with its text and the next one runs):

1. **exactness** (small configs, independent of the paper config)
   a. ``meta_gradient``: ∂θ of :func:`mednf.engine.meta.meta_objective` (second order, float64, on the device)
      against a per-signal reference written here (one signal at a time, per-layer official-style forward,
      autograd, the same contexts): relative error ≤ 1e-6;
      ``micro_batch``: :func:`~mednf.engine.meta.accumulate_meta_gradient` with ``micro_batch=2`` for B = 5
      against the whole batch and against the reference: ≤ 1e-6.
   b. ``fit_batch_independence``: :func:`mednf.engine.fit.fit_latents` (grad_rescale on) with batch size 1 vs 7
      on 9 signals, float32: relative latent difference ≤ 1e-5.
   c. ``cpu_gpu``: 20 meta-iterations of a tiny :class:`~mednf.engine.meta.MetaLearner` on CPU and on the device
      (float32, same seed, same images): relative θ difference ≤ 1e-4, and the test PSNR of a fit with
      each θ on its own device: |Δ| ≤ 0.05 dB. (In ``--dry-run`` both sides are the CPU.)
2. **engine** at ``get_preset("2d-64")`` (K15 L256 P2048, 64², B = 24, G = 10, γ = 0.25), for each of
   ``field.precision`` fp32 / tf32 / bf16: s per meta-iteration (median after warm-up, device synchronised
   around each), peak memory (``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``; on the
   CPU the process peak RSS, cumulative), the memory planner's plan and estimate, fit images/s at H = 20
   (``fit_latents`` with the preset's fit config on random 64² images), achieved TFLOP/s from the FLOP model
   of benchmarks/engine.py, and the same format's peak measured here with an n×n GEMM (achieved / peak).
3. **decode**: :func:`mednf.engine.field.decode` of a batch of latents at 64², images/s (always fp32).
4. **breastmnist**: the paper config on ``breastmnist_64.npz`` (``--medmnist-root``): test split fitted at
   θ₀ (baseline), then MetaLearner on the train split for as many meta-iterations as ``--time-budget``
   leaves, then the test split fitted again (H = 20): test PSNR mean. Skipped with a note when the file is
   absent (``--dry-run`` fabricates smooth random images instead). ``meta.steps`` stays the preset's
   100 000 (the cosine schedule's length), so the short run uses lr ≈ β = 3e-6 throughout.
5. Results: ``gpu_check.json`` (every number, the configs, the environment) and ``gpu_check.md`` (a short
   table) in ``--out`` (default ``$OUT``, else benchmarks/gpu_check_results/), rewritten after every part so
   that a run cut short still leaves what it measured.

Time: ``--time-budget`` (default 480 s from the start of ``main``, 25 s in the dry run) bounds the whole run:
part 2 skips a precision with < 90 s left and caps each precision's timed iterations at 45 s; part 4 stops
meta-learning when the next iteration would eat into the time its final fit needs (1.5 × the θ₀ fit + 10 s).

Exit code: 0 every part ran and every exactness check passed; 1 an exactness check failed; 2 a part or a
check raised (its error is in the results); 3 the device cannot be used (one line on stderr).

Imports only the standard library, numpy, torch and ``mednf.engine.*`` (the GPU machine has no zarr,
numcodecs, datasets or medmnist); the BreastMNIST file is read with numpy.
"""

from __future__ import annotations

import argparse
import datetime
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mednf.engine import field as nf
from mednf.engine.config import EngineConfig, FieldConfig, FitConfig, MetaConfig
from mednf.engine.context import context_size
from mednf.engine.fit import auto_batch_size, fit_latents
from mednf.engine.memory import resolve_budget
from mednf.engine.meta import MetaLearner, accumulate_meta_gradient, meta_objective, sample_contexts
from mednf.engine.planner import plan_memory
from mednf.engine.precision import PrecisionWarning, matmul_switches, resolve_precision
from mednf.engine.presets import get_preset

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "medmnist"
BREAST_FILE = "breastmnist_64.npz"
MIB = 2**20
Result = dict[str, Any]

META_GRAD_TOL = 1e-6  # relative, float64
FIT_BATCH_TOL = 1e-5  # relative, float32
CPU_GPU_THETA_TOL = 1e-4  # relative, float32 after 20 AdamW steps
CPU_GPU_PSNR_TOL = 0.05  # dB


# ---------------------------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    """Sizes of one run: the paper config on a GPU, or a tiny one for ``--dry-run``."""

    engine: EngineConfig  # parts 2 and 4
    size: int  # image side of parts 2-4
    meta_warmup: int
    meta_iters: int  # timed meta-iterations per precision (fewer when one precision passes cap_s)
    cap_s: float  # time cap of one precision's timed meta-iterations
    fit_signals: int
    decode_batch: int
    decode_reps: int
    gemm_size: int
    gemm_reps: int
    build_max_iters: int | None  # None: until the time budget is spent
    fabricate: bool  # fabricate BreastMNIST when the file is absent


def settings_for(args: argparse.Namespace) -> Settings:
    """GPU mode: the paper's 2D preset. Dry run: the same preset shrunk to K4 L16 P8, 8², B4."""
    paper = get_preset("2d-64")
    if not args.dry_run:
        return Settings(paper, 64, meta_warmup=2, meta_iters=args.meta_iters or 5, cap_s=45.0,
                        fit_signals=args.fit_signals or 256, decode_batch=256, decode_reps=5, gemm_size=8192,
                        gemm_reps=20, build_max_iters=None, fabricate=False)
    tiny = paper.replace(field={"num_layers": 4, "hidden_dim": 16, "latent_dim": 8}, meta={"batch_size": 4})
    return Settings(tiny, 8, meta_warmup=1, meta_iters=args.meta_iters or 3, cap_s=5.0,
                    fit_signals=args.fit_signals or 16, decode_batch=64, decode_reps=3, gemm_size=256,
                    gemm_reps=3, build_max_iters=10, fabricate=True)


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


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated after reset_peak_memory_stats"
    return "process peak RSS (ru_maxrss), cumulative since the process started"


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


EXACTNESS: dict[str, Callable[[torch.device], Result]] = {
    "meta_gradient": check_meta_gradient,
    "micro_batch": check_micro_batch,
    "fit_batch_independence": check_fit_batches,
    "cpu_gpu": check_cpu_gpu,
}


def part_exactness(device: torch.device) -> Result:
    """Part 1: every check guarded; status ``failed`` if one failed, ``error`` if one raised."""
    checks = {name: guarded(lambda fn=fn: fn(device), device) for name, fn in EXACTNESS.items()}
    status = "ok"
    if any(c["status"] == "error" for c in checks.values()):
        status = "error"
    if any(c["status"] == "ok" and not c["passed"] for c in checks.values()):
        status = "failed"
    return {"status": status, "checks": checks}


# ---------------------------------------------------------------------------------------------- 2. engine


def gemm_peak(precision: str, device: torch.device, n: int, reps: int) -> Result:
    """TFLOP/s of an n×n GEMM in ``precision`` as the engine runs it (inside ``matmul_switches``)."""
    policy = resolve_precision(precision, device)
    with matmul_switches(policy):
        dtype = torch.bfloat16 if policy.bf16 else torch.float32
        gen = torch.Generator().manual_seed(0)
        a, b = (torch.randn(n, n, generator=gen).to(device, dtype) for _ in range(2))
        for _ in range(2):
            torch.matmul(a, b)
        seconds, _ = timed(device, partial(_repeat, partial(torch.matmul, a, b), reps))
    return {"n": n, "dtype": str(dtype).removeprefix("torch."), "effective": policy.effective,
            "tflops": 2 * n**3 * reps / seconds / 1e12}


def bench_meta(cfg: EngineConfig, s: Settings, device: torch.device) -> tuple[Result, dict[str, Tensor]]:
    """Warm-up and timed meta-iterations at ``cfg`` (micro-batch from the planner): numbers and θ."""
    spatial = (s.size, s.size)
    plan = plan_memory(cfg, spatial, budget=resolve_budget(None, device), device=device)
    learner = MetaLearner(cfg.field, cfg.meta, seed=0, device=device)
    gen, B = torch.Generator().manual_seed(0), cfg.meta.batch_size
    reset_peak(device)
    for _ in range(s.meta_warmup):
        learner.step(random_signals(B, cfg, s.size, gen).to(device), micro_batch=plan.micro_batch)
    seconds: list[float] = []
    while len(seconds) < s.meta_iters and (not seconds or sum(seconds) < s.cap_s):
        batch = random_signals(B, cfg, s.size, gen).to(device)
        dt, stats = timed(device, partial(learner.step, batch, micro_batch=plan.micro_batch))
        seconds.append(dt)
    median = statistics.median(seconds)
    flops = B * META_FLOPS(cfg, s.size**2)
    out = {"s_per_iter": median, "s_per_iter_min": min(seconds), "seconds": seconds, "peak_mib": peak_mib(device),
           "planned_micro_batch": plan.micro_batch, "planned_peak_mib": plan.meta_peak / MIB,
           "plan": plan.to_dict(), "flops_per_iter": flops, "tflops": flops / median / 1e12,
           "last_psnr": stats["psnr"]}
    params = learner.detached_params()
    del learner
    return out, params


def bench_fit(cfg: EngineConfig, params: dict[str, Tensor], s: Settings, device: torch.device) -> Result:
    """``fit_latents`` with the preset's fit config on ``s.fit_signals`` random images (after a warm-up)."""
    gen = torch.Generator().manual_seed(1)
    reset_peak(device)
    fit_latents(params, random_signals(min(8, s.fit_signals), cfg, s.size, gen).to(device), cfg.field, cfg.fit,
                device=device)
    signals = random_signals(s.fit_signals, cfg, s.size, gen).to(device)
    batch = auto_batch_size(cfg.field, s.size**2, cfg.fit, device, rows_out=s.fit_signals)
    seconds, _ = timed(device, lambda: fit_latents(params, signals, cfg.field, cfg.fit, device=device))
    flops = s.fit_signals * FIT_FLOPS(cfg, s.size**2)
    return {"images_per_s": s.fit_signals / seconds, "seconds": seconds, "signals": s.fit_signals,
            "steps": cfg.fit.steps, "batch_size": batch, "peak_mib": peak_mib(device), "tflops": flops / seconds / 1e12}


def bench_precision(base: EngineConfig, precision: str, s: Settings, device: torch.device) -> Result:
    """Part 2 for one precision: meta-iteration, fit, the format's GEMM peak and achieved / peak."""
    cfg = base.replace(field={"precision": precision})
    out: Result = {"precision": resolve_precision(precision, device, warn=False).to_dict()}
    out["meta"], params = bench_meta(cfg, s, device)
    out["fit"] = bench_fit(cfg, params, s, device)
    out["gemm_peak"] = gemm_peak(precision, device, s.gemm_size, s.gemm_reps)
    peak = out["gemm_peak"]["tflops"]
    out["meta"]["fraction_of_peak"] = out["meta"]["tflops"] / peak
    out["fit"]["fraction_of_peak"] = out["fit"]["tflops"] / peak
    return out


def part_engine(s: Settings, device: torch.device, precisions: Sequence[str], deadline: float) -> Result:
    """Part 2: every precision guarded; one is skipped when less than 90 s of the budget is left."""
    results: Result = {}
    for precision in precisions:
        if deadline - time.perf_counter() < 90 and device.type == "cuda":
            results[precision] = {"status": "skipped", "note": "time budget spent"}
            continue
        results[precision] = guarded(lambda p=precision: bench_precision(s.engine, p, s, device), device)
    errors = any(r["status"] == "error" for r in results.values())
    return {"status": "error" if errors else "ok", "config": s.engine.to_dict(), "size": s.size,
            "flop_model": FLOP_MODEL, "memory": memory_kind(device), "precisions": results}


# ---------------------------------------------------------------------------------------------- 3. decode


def part_decode(s: Settings, device: torch.device) -> Result:
    """Part 3: ``decode`` of ``s.decode_batch`` latents ``[B, P]`` at ``size²`` (fp32), images/s."""
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


# ---------------------------------------------------------------------------------------------- 4. BreastMNIST


def fit_split(params: dict[str, Tensor], images: Tensor, cfg: EngineConfig, device: torch.device) -> Result:
    """Fit every image of a split (H = ``cfg.fit.steps``): PSNR mean / std and the time taken."""
    seconds, result = timed(device, lambda: fit_latents(params, images, cfg.field, cfg.fit, device=device))
    return {"psnr_mean": float(result.psnr.mean()), "psnr_std": float(result.psnr.std()), "seconds": seconds,
            "images": len(images)}


def meta_learn(learner: MetaLearner, train: Tensor, cfg: EngineConfig, micro: int, stop_at: float,
               max_iters: int | None) -> Result:
    """Meta-iterations on shuffled batches of ``train`` ``[N, 1, S, S]`` (uint8, on the device) until the next
    one would pass ``stop_at`` (or ``max_iters``): iterations, s/iteration, PSNR curve."""
    gen = torch.Generator().manual_seed(0)
    B, order, seconds, curve = cfg.meta.batch_size, torch.empty(0, dtype=torch.int64), [], []
    device = learner.device
    while max_iters is None or len(seconds) < max_iters:
        if seconds and time.perf_counter() + 1.5 * seconds[-1] > stop_at:
            break
        if len(order) < B:  # a new epoch: a fresh permutation of the train images
            order = torch.cat([order, torch.randperm(len(train), generator=gen)])
        index, order = order[:B], order[B:]
        batch = train[index.to(train.device)].float() / 255.0
        dt, stats = timed(device, partial(learner.step, batch, micro_batch=micro))
        seconds.append(dt)
        curve.append([len(seconds), round(stats["psnr"], 3), round(stats["loss"], 6)])
    last = curve[-10:]
    return {"iterations": len(seconds), "seconds": sum(seconds),
            "s_per_iter": statistics.median(seconds) if seconds else None,
            "train_psnr_last10": statistics.mean(c[1] for c in last) if last else None,
            "curve_every_10": [c for c in curve if c[0] % 10 == 0 or c[0] == len(curve)]}


def part_breastmnist(s: Settings, root: Path, precision: str, device: torch.device, deadline: float) -> Result:
    """Part 4: θ₀ test fit, meta-learning on the train split until the budget, test fit: test PSNR."""
    data = breastmnist_data(root, s.size, s.fabricate)
    if isinstance(data, str):
        return {"status": "skipped", "note": data}
    train, test, source = data
    cfg = s.engine.replace(field={"precision": precision})
    plan = plan_memory(cfg, (s.size, s.size), budget=resolve_budget(None, device), device=device)
    learner = MetaLearner(cfg.field, cfg.meta, seed=0, device=device)
    baseline = fit_split(learner.detached_params(), test, cfg, device)
    reserve = 1.5 * baseline["seconds"] + (10.0 if device.type == "cuda" else 0.5)
    if time.perf_counter() + reserve >= deadline:
        return {"status": "skipped", "note": "time budget spent before meta-learning", "test_theta0": baseline}
    build = meta_learn(learner, train.to(device), cfg, plan.micro_batch, deadline - reserve, s.build_max_iters)
    final = fit_split(learner.detached_params(), test, cfg, device)
    return {"source": source, "train_images": len(train), "test_images": len(test), "config": cfg.to_dict(),
            "micro_batch": plan.micro_batch, "meta": build, "test_theta0": baseline, "test": final,
            "test_psnr_mean": final["psnr_mean"],
            "note": (f"meta.steps = {cfg.meta.steps} (cosine length): lr ≈ β = {cfg.meta.meta_lr:g} "
                     "throughout this short run")}


# ---------------------------------------------------------------------------------------------- report


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
                   "float32_matmul_precision": torch.get_float32_matmul_precision()}
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


def _exactness_rows(part: Result) -> list[Row]:
    rows = []
    for name, c in part.get("checks", {}).items():
        status = c["status"] if c["status"] != "ok" else ("PASS" if c["passed"] else "FAIL")
        detail = c.get("error") or f"≤ {_fmt(c.get('threshold'), 1)}"
        rows.append(("1 exactness", name, _fmt(c.get("value"), 3), detail, status))
    return rows


def _engine_rows(part: Result) -> list[Row]:
    rows = []
    for p, r in part.get("precisions", {}).items():
        if r["status"] != "ok":
            rows.append(("2 engine", p, "—", r.get("error", r.get("note", "")), r["status"]))
            continue
        m, f, g = r["meta"], r["fit"], r["gemm_peak"]
        memory = (f"peak {m['peak_mib']:.0f} MiB (planned {m['planned_peak_mib']:.0f}, "
                  f"micro-batch {m['planned_micro_batch']})")
        fit = f"{p} fit images/s (H={f['steps']}, batch {f['batch_size']})"
        rows += [("2 engine", f"{p} (eff. {r['precision']['effective']}) s/meta-iter", _fmt(m["s_per_iter"]),
                  memory, "ok"),
                 ("2 engine", fit, _fmt(f["images_per_s"]), f"peak {f['peak_mib']:.0f} MiB", "ok"),
                 ("2 engine", f"{p} TFLOP/s meta / fit / GEMM peak",
                  f"{m['tflops']:.3g} / {f['tflops']:.3g} / {g['tflops']:.3g}",
                  f"{m['fraction_of_peak']:.1%} / {f['fraction_of_peak']:.1%} of peak", "ok")]
    return rows


def _decode_rows(part: Result) -> list[Row]:
    what = f"images/s at {part.get('size', '?')}² (batch {part.get('batch', '?')})"
    return [("3 decode", what, _fmt(part.get("images_per_s")), "", part["status"])]


def _breast_rows(part: Result) -> list[Row]:
    if part["status"] != "ok":
        return [("4 breastmnist", "test PSNR", "—", part.get("note", ""), part["status"])]
    what = f"test PSNR after {part['meta']['iterations']} meta-iters (θ₀: {part['test_theta0']['psnr_mean']:.2f} dB)"
    detail = f"{_fmt(part['meta']['s_per_iter'])} s/iter, {part['source']}"
    return [("4 breastmnist", what, f"{part['test_psnr_mean']:.3f} dB", detail, "ok")]


PART_ROWS: dict[str, Callable[[Result], list[Row]]] = {
    "exactness": _exactness_rows, "engine": _engine_rows, "decode": _decode_rows, "breastmnist": _breast_rows,
}


def markdown(results: Result) -> str:
    """A short Markdown summary: environment and config lines, one table of every part's headline numbers."""
    env, parts = results["environment"], results["parts"]
    rows: list[Row] = []
    for name, part in parts.items():
        if "error" in part:  # the part raised as a whole
            rows.append((name, "part", "—", part["error"], "error"))
        rows += PART_ROWS[name](part)
    paper, engine = get_preset("2d-64"), parts.get("engine", {})
    run = EngineConfig.from_dict(engine["config"]) if "config" in engine else None
    done = "" if results["complete"] else f" (incomplete: {len(parts)} of {len(PART_ROWS)} parts)"
    machine = (f"{env.get('device_name')} ({env['device']}), torch {env['torch']} (CUDA {env['cuda']}), "
               f"{env['date']}, commit {env.get('git_commit')}; total {results['total_seconds']:.1f} s, "
               f"exit code {results['exit_code']}{done}.")
    configs = (f"Paper config: {_field_text(paper.field, paper.meta)}; run config: "
               f"{_field_text(run.field, run.meta) if run else '—'} at {engine.get('size', '?')}²; "
               f"FLOP model: {engine.get('flop_model')}; memory: {engine.get('memory')}.")
    lines = [f"# mednf GPU check ({'dry run' if results['dry_run'] else 'GPU'})", "", machine, configs, "",
             "| part | check / metric | value | detail | status |", "|---|---|---|---|---|"]
    lines += ["| " + " | ".join(str(c).replace("|", "/").replace("\n", " ") for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def exit_code(parts: Result) -> int:
    """1 when an exactness check failed, else 2 when anything raised, else 0."""
    if parts.get("exactness", {}).get("status") == "failed":
        return 1
    statuses = [p["status"] for p in parts.values()]
    statuses += [r["status"] for r in parts.get("engine", {}).get("precisions", {}).values()]
    return 2 if "error" in statuses else 0


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
    p.add_argument("--dry-run", action="store_true", help="the same code path on the CPU with a tiny config (< 30 s)")
    p.add_argument("--out", type=Path, default=None,
                   help="results folder (default $OUT, else benchmarks/gpu_check_results)")
    p.add_argument("--medmnist-root", type=Path, default=DEFAULT_ROOT, help=f"folder holding {BREAST_FILE}")
    p.add_argument("--time-budget", type=float, default=None,
                   help="seconds for the whole script; part 4 gets what is left (default 480, dry run 25)")
    p.add_argument("--precisions", default="fp32,tf32,bf16", help="comma-separated precisions of part 2")
    p.add_argument("--build-precision", default="fp32", help="precision of the BreastMNIST build (part 4)")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (dry run default: 1)")
    p.add_argument("--meta-iters", type=int, default=None, help="timed meta-iterations per precision")
    p.add_argument("--fit-signals", type=int, default=None, help="images in the timed fit of part 2")
    return p.parse_args(argv)


def resolve_device(args: argparse.Namespace) -> torch.device | str:
    """The device, or the one-line reason it cannot be used."""
    device = torch.device(args.device or ("cpu" if args.dry_run else "cuda:0"))
    if device.type == "cuda" and not torch.cuda.is_available():
        return (f"gpu_check: --device {device} but torch {torch.__version__} sees no CUDA device "
                "(torch.cuda.is_available() is False); run on the GPU machine or pass --dry-run")
    return device


def main(argv: Sequence[str] | None = None) -> int:
    start = time.perf_counter()
    args = parse_args(argv)
    device = resolve_device(args)
    if isinstance(device, str):
        print(device, file=sys.stderr)
        return 3
    warnings.simplefilter("ignore", PrecisionWarning)  # the resolved precision is recorded instead
    if args.dry_run:  # the GPU's fit runs the eager kernel: the dry run mirrors it (and compiles nothing)
        os.environ.setdefault("MEDNF_FIT_KERNEL", "eager")
    if args.dry_run and args.threads is None:
        args.threads = 1  # tiny tensors: a second thread only adds barrier waits on a busy 2-core machine
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    s = settings_for(args)
    budget = args.time_budget if args.time_budget is not None else (25.0 if args.dry_run else 480.0)
    deadline = start + budget
    out = args.out or Path(os.environ.get("OUT") or REPO / "benchmarks" / "gpu_check_results")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    runs: dict[str, Callable[[], Result]] = {
        "exactness": lambda: part_exactness(device),
        "engine": lambda: part_engine(s, device, precisions, deadline),
        "decode": lambda: part_decode(s, device),
        "breastmnist": lambda: part_breastmnist(s, args.medmnist_root, args.build_precision, device, deadline),
    }
    results: Result = {"dry_run": bool(args.dry_run), "complete": False, "environment": environment(device),
                       "time_budget_s": budget, "flop_model": FLOP_MODEL,
                       "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                       "parts": {}}
    for name, run in runs.items():
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
