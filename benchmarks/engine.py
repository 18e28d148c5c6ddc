"""Benchmark the MedFuncta engine (meta-learning and test-time fitting) for one preset on one device.

Usage::

    python benchmarks/engine.py --preset 2d-64 --device cuda --size 64 --tf32 --json out.json

Signals are random uniform values in [0, 1] drawn from a seeded ``torch.Generator`` (no dataset needed),
shape ``[B, D, *spatial]`` with ``spatial`` a line (C = 1), a square (C = 2) or a cube (C = 3) of side
``--size``. The script prints one Markdown table row (with header) plus an environment line, and can also
write every number as JSON. It imports only torch, numpy, the standard library and mednf.

Measurements
------------
- **meta**: ``--warmup`` untimed meta-iterations, then ``--iters`` timed ones, each on a fresh batch that is
  generated and moved to the device before the clock starts; the device is synchronised before each clock
  read. Reported: median and min seconds per meta-iteration.
- **fit**: :func:`mednf.engine.fit.fit_latents` once on one batch (warm-up), then timed on ``--fit-signals`` signals
  already on the device; reported as signals per second.
- **peak memory**: on CUDA ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` at the start
  of each phase. On CPU the process peak RSS (``ru_maxrss``) read at the end of each phase: it is cumulative
  since the process started, so the fit value is at least the meta value.

FLOP model (the TFLOP/s columns are model-based estimates: modelled FLOPs / measured time)
-----------------------------------------------------------------------------------------
Notation: N = points per signal (``size ** C``); n = floor(γN) (at least 1) points in each inner-step context;
n_r = floor(γ_r N) points in the fit's gradient-rescaling subset; K, L, P, D, C as in
:class:`mednf.engine.config.FieldConfig`; G inner steps; H fit steps; B signals per meta-batch.

Forward FLOPs of one signal evaluated at p points::

    F(p) = p · flops_per_point() + 2·P·(K-1)·L
    flops_per_point() = 2·(C·L + (K-2)·L² + L·D)        (all linear layers, sine/adds ignored)
    2·P·(K-1)·L                                         (the modulation m(φ) = Mφ + c, once per forward)

A backward pass *to the latent only* (θ frozen or not needed) costs about one forward: it multiplies the
output gradient by every weight matrix once (the weight gradients, the other ≈F, are not formed).

Fit, per signal (H SGD steps on φ with θ frozen, then one evaluation of the result)::

    H · (F(N) forward + F(N) backward-to-latent) + F(N) final forward  =  (2H + 1) · F(N)

With ``fit.grad_rescale`` the official code spends another H · 2 · F(n_r) on a separate subset pass; mednf
gets the subset gradient from the same pass (mednf/latent_grad.py), so that work is not counted.

Meta-iteration, per signal (second order, the default): the inner loop records, with ``create_graph``,
G × (F(n) forward + F(n) backward-to-latent) = 2G·F(n), then the outer forward F(N) on the full grid. The
outer backward differentiates that whole graph; by the usual reverse-mode rule a backward pass costs ≈ 2×
the graph it differentiates (one product for the input gradient, one for the weight gradient, per matmul),
so::

    meta ≈ 3 · (2G·F(n) + F(N))

First order (``--first-order``): the inner graph is not recorded, so the inner loop costs 2G·F(n) once and
only the outer forward is differentiated (≈ 2F(N) backward, weight gradients included)::

    meta_first_order ≈ 2G·F(n) + 3·F(N)

Multiply by B for a meta-iteration and by the number of signals for a fit. AdamW, gradient clipping,
context sampling, sines and elementwise ops are not counted, so the estimate is a lower bound on work done.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import platform
import resource
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from mednf.engine.config import EngineConfig
from mednf.engine.context import context_size
from mednf.engine.fit import fit_latents
from mednf.engine.memory import resolve_budget
from mednf.engine.meta import MetaLearner
from mednf.engine.planner import plan_memory
from mednf.engine.presets import get_preset, preset_names
from mednf.errors import ConfigError

_MIB = 2**20


# ---------------------------------------------------------------------------------------------- CLI + config


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 1, got {value}")
    return value


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an integer ≥ 0, got {value}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    p.add_argument("--preset", default="cpu-small", help=f"engine preset: {', '.join(preset_names())}")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--size", type=_positive, default=28, help="spatial side (line / square / cube by in_dims)")
    p.add_argument("--batch-size", type=_positive, help="meta batch size B (default: preset's meta.batch_size)")
    p.add_argument("--channels", type=_positive, help="channels D (default: preset's field.out_dims)")
    p.add_argument("--iters", type=_positive, default=10, help="timed meta-iterations")
    p.add_argument("--warmup", type=_non_negative, default=3, help="untimed meta-iterations before timing")
    p.add_argument("--fit-signals", type=_positive, default=48, help="signals in the timed fit")
    p.add_argument("--fit-batch-size", type=_positive, help="fit batch size (default: the meta batch size)")
    p.add_argument("--fit-steps", type=_non_negative, help="fit steps H (default: preset's fit.steps)")
    p.add_argument("--first-order", action="store_true", help="first-order meta-gradients (ablation)")
    p.add_argument("--no-fit", action="store_true", help="skip the fit phase")
    p.add_argument("--no-meta", action="store_true", help="skip the meta phase (fit uses the initial θ)")
    p.add_argument("--threads", type=_positive, help="torch.set_num_threads (default: leave as is)")
    p.add_argument("--tf32", action="store_true", help="allow TF32 matmuls on CUDA (globally; see --precision)")
    p.add_argument("--double-backward", action="store_true",
                   help="meta-gradient by autograd's double backward (the reference path) instead of "
                        "mednf.engine.inner_grad")
    p.add_argument("--precision", choices=["fp32", "tf32", "bf16"], help="field.precision (default: the preset's)")
    p.add_argument("--micro-batch", default="auto",
                   help="signals per part of a meta-iteration: auto (the planner's choice with the default budget, "
                        "as a build runs it), whole (the batch at once), or a number")
    p.add_argument("--json", type=Path, help="also write all numbers to this JSON file")
    return p.parse_args(argv)


def build_config(args: argparse.Namespace) -> EngineConfig:
    """The preset with the command-line overrides applied through ``EngineConfig.replace``."""
    cfg = get_preset(args.preset)
    field: dict[str, Any] = {}
    meta: dict[str, Any] = {}
    fit: dict[str, Any] = {}
    if args.channels is not None:
        field["out_dims"] = args.channels
    if args.precision is not None:
        field["precision"] = args.precision
    if args.batch_size is not None:
        meta["batch_size"] = args.batch_size
    if args.first_order:
        meta["first_order"] = True
    if args.fit_steps is not None:
        fit["steps"] = args.fit_steps
    fit["batch_size"] = args.fit_batch_size or meta.get("batch_size", cfg.meta.batch_size)
    return cfg.replace(field=field, meta=meta, fit=fit)


def configure_torch(args: argparse.Namespace, device: torch.device) -> None:
    """Threads and TF32 as asked."""
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.tf32:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.set_float32_matmul_precision("high")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {device} asked but torch.cuda.is_available() is False")


# ---------------------------------------------------------------------------------------------- device helpers


def synchronize(device: torch.device) -> None:
    """Wait for queued device work so the host clock measures it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak-memory window (CUDA only; CPU RSS peak cannot be reset)."""
    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)


def peak_memory_mib(device: torch.device) -> float:
    """CUDA: peak allocated since the last reset. CPU: process peak RSS since start (cumulative)."""
    if device.type == "cuda":
        synchronize(device)
        return torch.cuda.max_memory_allocated(device) / _MIB
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / _MIB if sys.platform == "darwin" else rss / 1024  # bytes on macOS, KiB on Linux


def memory_kind(device: torch.device) -> str:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated, reset at the start of each phase"
    return "process peak RSS (ru_maxrss), cumulative since process start: the fit value includes the meta phase"


def device_name(device: torch.device) -> str:
    """GPU name, or the CPU model from /proc/cpuinfo (falling back to ``platform``)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


# ---------------------------------------------------------------------------------------------- data


def spatial_shape(cfg: EngineConfig, size: int) -> tuple[int, ...]:
    """A line, square or cube of side ``size`` for in_dims 1, 2 or 3."""
    return (size,) * cfg.field.in_dims


def random_signals(
    count: int, cfg: EngineConfig, spatial: tuple[int, ...], generator: torch.Generator, device: torch.device
) -> torch.Tensor:
    """Uniform [0, 1] signals ``[count, D, *spatial]`` drawn on the CPU, then moved to ``device``."""
    values = torch.rand((count, cfg.field.out_dims, *spatial), generator=generator)
    return values.to(device)


# ---------------------------------------------------------------------------------------------- FLOP model


def forward_flops(cfg: EngineConfig, points: int) -> int:
    """F(p): forward FLOPs of one signal at p points, modulation included."""
    f = cfg.field
    return points * f.flops_per_point() + 2 * f.latent_dim * f.num_sine_layers * f.hidden_dim


def meta_flops_per_signal(cfg: EngineConfig, num_points: int) -> int:
    """Modelled FLOPs of one signal in one meta-iteration (see the module docstring)."""
    n = num_points if cfg.meta.context_ratio >= 1.0 else context_size(num_points, cfg.meta.context_ratio)
    inner = 2 * cfg.meta.inner_steps * forward_flops(cfg, n)
    outer = forward_flops(cfg, num_points)
    if cfg.meta.first_order:
        return inner + 3 * outer
    return 3 * (inner + outer)


def fit_flops_per_signal(cfg: EngineConfig, num_points: int) -> int:
    """Modelled FLOPs to fit one signal (see the module docstring)."""
    H = cfg.fit.steps
    return (2 * H + 1) * forward_flops(cfg, num_points)


# ---------------------------------------------------------------------------------------------- phases


@dataclass
class MetaResult:
    seconds: list[float]  # per timed meta-iteration
    median_s: float
    min_s: float
    peak_mib: float
    flops_per_iter: int
    tflops: float  # modelled FLOPs / median time


@dataclass
class FitResult:
    signals: int
    seconds: float
    signals_per_s: float
    peak_mib: float
    flops_per_signal: int
    tflops: float
    kernel: str  # the fit's latent-gradient kernel: compiled or eager (MEDNF_FIT_KERNEL)


def micro_batch(choice: str, cfg: EngineConfig, spatial: tuple[int, ...], device: torch.device) -> int | None:
    """``--micro-batch``: the planner's micro-batch (auto), None (whole) or the number given."""
    if choice == "whole":
        return None
    if choice == "auto":
        return plan_memory(cfg, spatial, budget=resolve_budget(None, device), device=device).micro_batch
    return _positive(choice)


def bench_meta(
    learner: MetaLearner, cfg: EngineConfig, spatial: tuple[int, ...], args: argparse.Namespace
) -> MetaResult:
    """Warm up, then time ``args.iters`` meta-iterations one by one."""
    device = learner.device
    gen = torch.Generator().manual_seed(0)
    B = cfg.meta.batch_size
    micro = micro_batch(args.micro_batch, cfg, spatial, device)
    print(f"meta-iteration: {B} signals in parts of {micro or B} (--micro-batch {args.micro_batch})", file=sys.stderr)
    reset_peak_memory(device)
    for _ in range(args.warmup):
        learner.step(random_signals(B, cfg, spatial, gen, device), micro_batch=micro)
    seconds = []
    for _ in range(args.iters):
        batch = random_signals(B, cfg, spatial, gen, device)
        synchronize(device)
        start = time.perf_counter()
        learner.step(batch, micro_batch=micro)
        synchronize(device)
        seconds.append(time.perf_counter() - start)
    median = statistics.median(seconds)
    flops = B * meta_flops_per_signal(cfg, _num_points(spatial))
    return MetaResult(seconds, median, min(seconds), peak_memory_mib(device), flops, flops / median / 1e12)


def bench_fit(
    learner: MetaLearner, cfg: EngineConfig, spatial: tuple[int, ...], args: argparse.Namespace
) -> FitResult:
    """Fit one batch (warm-up), then time the fit of ``args.fit_signals`` signals."""
    device = learner.device
    params = learner.detached_params()
    gen = torch.Generator().manual_seed(1)
    assert cfg.fit.batch_size is not None  # set by build_config
    reset_peak_memory(device)
    warm = random_signals(min(cfg.fit.batch_size, args.fit_signals), cfg, spatial, gen, device)
    fit_latents(params, warm, cfg.field, cfg.fit, device=device)
    signals = random_signals(args.fit_signals, cfg, spatial, gen, device)
    synchronize(device)
    start = time.perf_counter()
    result = fit_latents(params, signals, cfg.field, cfg.fit, device=device)
    synchronize(device)
    seconds = time.perf_counter() - start
    per_signal = fit_flops_per_signal(cfg, _num_points(spatial))
    tflops = per_signal * args.fit_signals / seconds / 1e12
    return FitResult(args.fit_signals, seconds, args.fit_signals / seconds, peak_memory_mib(device), per_signal,
                     tflops, result.kernel)


def _num_points(spatial: tuple[int, ...]) -> int:
    n = 1
    for s in spatial:
        n *= s
    return n


# ---------------------------------------------------------------------------------------------- report


_SUPERSCRIPT = {1: "", 2: "²", 3: "³"}


def environment(device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """torch version, device name, threads, TF32 flag and date."""
    return {
        "torch": torch.__version__,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
        "tf32": bool(args.tf32),
        "python": platform.python_version(),
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def format_report(
    args: argparse.Namespace,
    cfg: EngineConfig,
    device: torch.device,
    spatial: tuple[int, ...],
    meta: MetaResult | None,
    fit: FitResult | None,
    env: dict[str, Any],
) -> str:
    """The Markdown table (header + one row) and the notes below it."""
    dash = "—"
    mem_suffix = "" if device.type == "cuda" else " RSS"
    preset = args.preset + (" (first-order)" if cfg.meta.first_order else "")
    size = f"{spatial[0]}{_SUPERSCRIPT[len(spatial)]}" + (f" ×{cfg.field.out_dims}ch" if cfg.field.out_dims > 1 else "")
    cells = [
        preset,
        str(device),
        str(cfg.meta.batch_size),
        size,
        str(cfg.meta.inner_steps),
        f"{cfg.meta.context_ratio:g}",
        f"{meta.median_s:.4g} ({meta.min_s:.4g})" if meta else dash,
        f"{meta.peak_mib:.0f} MiB{mem_suffix}" if meta else dash,
        f"{fit.signals_per_s:.4g} (H={cfg.fit.steps}, {fit.kernel})" if fit else dash,
        f"{fit.peak_mib:.0f} MiB{mem_suffix}" if fit else dash,
        f"{meta.tflops:.3g}" if meta else dash,
        f"{fit.tflops:.3g}" if fit else dash,
    ]
    header = [
        "preset", "device", "B", "size", "G", "γ", "s/meta-iter (median, min)", "peak mem meta",
        "fit signals/s (H)", "peak mem fit", "TFLOP/s meta", "TFLOP/s fit",
    ]
    N = _num_points(spatial)
    n = N if cfg.meta.context_ratio >= 1.0 else context_size(N, cfg.meta.context_ratio)
    meta_gflop = meta_flops_per_signal(cfg, N) * cfg.meta.batch_size / 1e9
    fit_gflop = fit_flops_per_signal(cfg, N) / 1e9
    shapes = (
        f"N = {N} points/signal, n = {n} context points, D = {cfg.field.out_dims}, "
        f"fit batch = {cfg.fit.batch_size}, fit grad_rescale = {cfg.fit.grad_rescale}; "
        f"modelled {meta_gflop:.4g} GFLOP per meta-iteration, {fit_gflop:.4g} GFLOP per fitted signal."
    )
    machine = (
        f"torch {env['torch']}, {env['device_name']}, {env['threads']} threads, "
        f"TF32 {'on' if env['tf32'] else 'off'}, {env['date']}"
    )
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
        "| " + " | ".join(cells) + " |",
        "",
        shapes,
        "TFLOP/s are model-based estimates (modelled FLOPs / measured median time; model in benchmarks/engine.py).",
        f"Peak memory: {memory_kind(device)}.",
        machine,
    ]
    return "\n".join(lines)


def write_json(
    path: Path,
    args: argparse.Namespace,
    cfg: EngineConfig,
    spatial: tuple[int, ...],
    meta: MetaResult | None,
    fit: FitResult | None,
    env: dict[str, Any],
) -> None:
    """Every number of the run, with the resolved configuration and the environment."""
    payload = {
        "preset": args.preset,
        "device": args.device,
        "spatial": list(spatial),
        "config": cfg.to_dict(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "meta": dataclasses.asdict(meta) if meta else None,
        "fit": dataclasses.asdict(fit) if fit else None,
        "memory": memory_kind(torch.device(args.device)),
        "environment": env,
    }
    path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------------- main


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    device = torch.device(args.device)
    configure_torch(args, device)
    try:
        cfg = build_config(args)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    spatial = spatial_shape(cfg, args.size)
    learner = MetaLearner(cfg.field, cfg.meta, seed=0, device=device, explicit=not args.double_backward)
    meta = None if args.no_meta else bench_meta(learner, cfg, spatial, args)
    fit = None if args.no_fit else bench_fit(learner, cfg, spatial, args)
    env = environment(device, args)
    print(format_report(args, cfg, device, spatial, meta, fit, env))
    if args.json is not None:
        write_json(args.json, args, cfg, spatial, meta, fit, env)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
