"""The paper's ablations at small scale on real MedMNIST images (issue #5).

Three ablations, each a set of variants of one base configuration:

- ``omega``: the ω-schedule (ω_1 → ω_K, linear over the sine layers) against a constant ω equal to the
  schedule's ω_1 (same first layer) and a constant ω equal to the schedule's mean over the layers, each
  at every meta learning rate β of ``--omega-lrs``: ω_k multiplies layer k's effective step (the paper's
  link between the ω-schedule and layer-wise learning rates), so each variant has its own best β;
- ``gamma``: context ratio γ ∈ {0.25, 0.5, 1.0} of the inner loop (``MetaConfig.context_ratio``);
- ``order``: second-order meta-gradients (the paper) against first-order (``MetaConfig.first_order``).

Usage::

    python benchmarks/ablation.py --threads 1                      # CPU: cpu-small, PneumoniaMNIST 28²
    python benchmarks/ablation.py --only gamma --steps 100         # one ablation, shorter
    python benchmarks/ablation.py --paper --gpu 0 --steps 2000     # the paper's 2D config (2d-64) on a GPU

Protocol (the same for every variant)
-------------------------------------
- Base configuration: the preset (default ``cpu-small``; ``--paper``: ``2d-64``) with the ω-schedule
  ``--omega-first → --omega-last`` (default: the paper's 20 → 400, spread over the preset's K-1 sine
  layers), β = ``--meta-lr``, ``meta.steps = --steps`` (so a cosine schedule completes) and the fit batch
  fixed. Default β: the preset's (3e-6) with ``--paper``; 1e-4 for the small configs instead of
  cpu-small's 3e-4, at which the 20 → 400 schedule diverges (the β grid of the ω table shows it); 1e-4
  and 3e-5 tie for the schedule there.
- Every variant runs in a fresh subprocess: meta-training for ``--steps`` iterations from θ drawn with
  the same seed, on the same sequence of training batches (seeded epochs over the train split), then
  :func:`mednf.engine.fit.fit_latents` (the preset's H, α and gradient rescaling, θ frozen) on the same
  ``--eval-samples`` test images (a fixed random subset, independent of ``--seed``). The variant that
  equals the base is run once and shared between ablations.
- Reported: mean test-time PSNR (± standard error over images) and the paired difference to the
  ablation's reference row (same images), mean SSIM, the meta-training PSNR (full context after the G
  inner steps, mean of the last 10 % of iterations), seconds per meta-iteration (median and min after
  ``--warmup`` iterations; each step timed alone, the batch already on the device) and peak memory
  during meta-training:

  * CUDA: ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats`` (reset after data load);
  * CPU: the process's peak RSS (``ru_maxrss``) at the end of meta-training minus its value after imports
    and data load. RSS peaks cannot be reset, hence one process per variant. It counts θ, AdamW state,
    the autograd graph and allocator caching, so it is an upper bound on what the step needs.

The machine's load changes while variants run one after another, so timings between rows carry that
noise; a last phase therefore times every variant round-robin in one process (``--timing-rounds``) so
that all see the same load. The PSNR numbers are deterministic for a given seed and device. On a CPU
shared with other jobs, ``--threads 1`` avoids oversubscription (2 threads were 5× slower than 1 per
step here while other processes kept both cores busy).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import math
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script from a checkout, mednf not installed
    sys.path.insert(0, str(ROOT))
DATA = Path(os.environ.get("MEDNF_TEST_MEDMNIST", ROOT.parent / "shared/data/medmnist"))
DATASETS = {"pneumoniamnist": "pneumoniamnist.npz", "breastmnist": "breastmnist_64.npz"}
ABLATIONS = ("omega", "gamma", "order")
_RESULT_TAG = "ABLATION-RESULT "
_MIB = 2**20


# ---------------------------------------------------------------------------------------------- variants


@dataclass(frozen=True)
class Variant:
    """One row of an ablation table: a label and the config overrides applied to the base."""

    label: str
    field: dict[str, Any] = dataclasses.field(default_factory=dict)
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def key(self) -> str:
        """Identity of the resulting run (rows with equal overrides share one run)."""
        return json.dumps({"field": self.field, "meta": self.meta}, sort_keys=True)


PAPER_OMEGA = (20.0, 400.0)  # the paper's 2D schedule (Table 1)
SMALL_META_LR = 1e-4  # base β of the small configs: the schedule's best in a pilot (3e-5 ties on the grid)
SMALL_OMEGA_LRS = (3e-5, 1e-4, 3e-4, 1e-3)  # cpu-small's own β is 3e-4


def ablation_variants(name: str, omega_first: float, omega_last: float, num_sine_layers: int, base_lr: float,
                      omega_lrs: Sequence[float] = ()) -> list[Variant]:
    """The rows of one ablation; the first row (the base configuration) is the reference for the Δ column.

    The ω rows are repeated for every β in ``omega_lrs``: ω_k scales the effective step of layer k, so
    each ω variant has its own best β and comparing them at one β alone confounds the two.
    """
    schedule = {"omega_first": omega_first, "omega_last": omega_last}
    mean = 0.5 * (omega_first + omega_last)  # the mean of a linear schedule over the layers
    base_meta = {"context_ratio": 0.25, "first_order": False, "meta_lr": base_lr}
    base = Variant(f"ω {omega_first:g}→{omega_last:g}, β {base_lr:g}, γ 0.25, second order", field=schedule,
                   meta=base_meta)
    if name == "omega":
        omegas = [
            (f"ω-schedule {omega_first:g}→{omega_last:g} (over {num_sine_layers} sine layers)", schedule),
            (f"constant ω = {omega_first:g} (= ω_1)", {"omega_first": omega_first, "omega_last": None}),
            (f"constant ω = {mean:g} (schedule mean)", {"omega_first": mean, "omega_last": None}),
        ]
        lrs = [base_lr] + [lr for lr in omega_lrs if lr != base_lr]
        return [Variant(f"{label}, β {lr:g}", field=field, meta={**base_meta, "meta_lr": lr})
                for label, field in omegas for lr in lrs]
    if name == "gamma":
        return [
            dataclasses.replace(base, label="γ = 0.25"),
            Variant("γ = 0.5", field=schedule, meta={**base_meta, "context_ratio": 0.5}),
            Variant("γ = 1.0 (full context)", field=schedule, meta={**base_meta, "context_ratio": 1.0}),
        ]
    if name == "order":
        return [
            dataclasses.replace(base, label="second order (paper)"),
            Variant("first order", field=schedule, meta={**base_meta, "first_order": True}),
        ]
    raise ValueError(f"unknown ablation {name!r}; expected one of {', '.join(ABLATIONS)}")


# ---------------------------------------------------------------------------------------------- worker


def load_split(dataset: str, split: str) -> np.ndarray:
    """uint8 images ``[N, 1, H, W]`` of one split of a MedMNIST npz."""
    with np.load(DATA / DATASETS[dataset]) as archive:
        return archive[f"{split}_images"][:, None]


EVAL_SEED = 12345  # the held-out subset does not change with --seed, so runs with other seeds compare


def eval_indices(total: int, count: int) -> np.ndarray:
    """A fixed, sorted subset of ``count`` test indices (the same for every variant and every --seed)."""
    rng = np.random.default_rng(EVAL_SEED)
    return np.sort(rng.choice(total, size=min(count, total), replace=False))


def batch_indices(total: int, batch: int, steps: int, seed: int) -> np.ndarray:
    """``[steps, batch]`` train indices: seeded epochs without replacement, a partial last batch dropped."""
    rng = np.random.default_rng(seed)
    per_epoch = total // batch
    epochs = [rng.permutation(total)[: per_epoch * batch].reshape(per_epoch, batch)
              for _ in range(math.ceil(steps / per_epoch))]
    return np.concatenate(epochs)[:steps]


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (KiB on Linux, bytes on macOS)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / _MIB if sys.platform == "darwin" else rss / 1024


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Meta-train and evaluate one variant (called in a fresh process); returns every number as JSON."""
    import torch

    from mednf.engine.config import EngineConfig
    from mednf.engine.fit import fit_latents
    from mednf.engine.meta import MetaLearner

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    device = torch.device(spec["device"])
    cfg = EngineConfig.from_dict(spec["config"])
    train = torch.from_numpy(load_split(spec["dataset"], "train"))  # uint8, converted per batch
    test_all = load_split(spec["dataset"], "test")
    test = test_all[eval_indices(len(test_all), spec["eval_samples"])]
    order = batch_indices(len(train), cfg.meta.batch_size, cfg.meta.steps, spec["seed"])

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats(device)
        baseline = torch.cuda.memory_allocated(device) / _MIB
    else:
        baseline = peak_rss_mib()

    learner = MetaLearner(cfg.field, cfg.meta, seed=spec["seed"], device=device)
    seconds: list[float] = []
    train_psnr: list[float] = []
    log_every = max(1, cfg.meta.steps // 10)
    for i, index in enumerate(order):
        batch = (train[torch.from_numpy(index)].to(device).float() / 255.0)
        sync()
        start = time.perf_counter()
        stats = learner.step(batch)
        sync()
        seconds.append(time.perf_counter() - start)
        train_psnr.append(stats["psnr"])
        if not math.isfinite(stats["loss"]):
            print(f"  [{spec['label']}] non-finite meta-loss at iteration {i}", file=sys.stderr)
            break
        if (i + 1) % log_every == 0:
            print(f"  [{spec['label']}] it {i + 1}/{cfg.meta.steps}: train PSNR {stats['psnr']:.2f} dB, "
                  f"{statistics.median(seconds[-log_every:]):.3f} s/it", file=sys.stderr, flush=True)
    if device.type == "cuda":
        memory = torch.cuda.max_memory_allocated(device) / _MIB - baseline
    else:
        memory = peak_rss_mib() - baseline

    start = time.perf_counter()
    result = fit_latents(learner.detached_params(), test, cfg.field, cfg.fit, device=device, seed=spec["seed"],
                         with_ssim=True)
    sync()
    fit_seconds = time.perf_counter() - start
    timed = seconds[spec["warmup"]:] or seconds
    tail = train_psnr[-max(1, len(train_psnr) // 10):]
    return {
        "label": spec["label"],
        "steps_done": len(seconds),
        "median_s": statistics.median(timed),
        "min_s": min(timed),
        "memory_mib": memory,
        "train_psnr": float(np.mean(tail)),
        "psnr": result.psnr.tolist(),
        "ssim": result.ssim.tolist() if result.ssim is not None else None,
        "fit_s": fit_seconds,
    }


def interleaved_timing(configs: dict[str, dict[str, Any]], dataset: str, device_name: str, rounds: int,
                       seed: int) -> dict[str, float]:
    """Median seconds per meta-iteration of each config, timed round-robin in one process.

    Each round runs one meta-iteration of every config in turn (2 untimed warm-up rounds first), so
    all configs see the same machine load; this is fairer than comparing runs made minutes apart on a
    shared machine. θ is freshly drawn: the cost of a step does not depend on how trained θ is.
    """
    import torch

    from mednf.engine.config import EngineConfig
    from mednf.engine.meta import MetaLearner

    device = torch.device(device_name)
    train = torch.from_numpy(load_split(dataset, "train"))
    learners = {}
    for key, config in configs.items():
        cfg = EngineConfig.from_dict(config)
        learners[key] = MetaLearner(cfg.field, cfg.meta, seed=seed, device=device)
    batch_size = next(iter(learners.values())).meta_cfg.batch_size
    order = batch_indices(len(train), batch_size, rounds + 2, seed)
    seconds: dict[str, list[float]] = {key: [] for key in configs}
    for r, index in enumerate(order):
        batch = train[torch.from_numpy(index)].to(device).float() / 255.0
        for key, learner in list(learners.items()):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            try:
                learner.step(batch)
            except torch.OutOfMemoryError:
                del learners[key]  # all configs' θ share this process's memory; report none for this one
                torch.cuda.empty_cache()
                continue
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            if r >= 2:
                seconds[key].append(time.perf_counter() - start)
    return {key: statistics.median(values) for key, values in seconds.items() if values}


# ---------------------------------------------------------------------------------------------- parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    p.add_argument("--dataset", choices=sorted(DATASETS), help="default: pneumoniamnist (28²); "
                   "breastmnist (64²) with --paper")
    p.add_argument("--preset", help="engine preset (default: cpu-small; 2d-64 with --paper)")
    p.add_argument("--paper", action="store_true", help="the paper's 2D config (preset 2d-64, BreastMNIST 64²)")
    p.add_argument("--steps", type=int, help="meta-iterations per variant (default 200; 2000 with --paper)")
    p.add_argument("--eval-samples", type=int, default=128, help="held-out test images fitted per variant")
    p.add_argument("--only", default=",".join(ABLATIONS), help="comma-separated subset of omega,gamma,order")
    p.add_argument("--gpu", type=int, help="CUDA device index (default: CPU)")
    p.add_argument("--omega-first", type=float, help="ω_1 of the schedule (default 20, the paper's 2D value)")
    p.add_argument("--omega-last", type=float, help="ω_K of the schedule (default 400, the paper's 2D value)")
    p.add_argument("--meta-lr", type=float, help=f"base meta learning rate β (default {SMALL_META_LR:g}; "
                   "the preset's 3e-6 with --paper)")
    p.add_argument("--omega-lrs", help="comma-separated β grid for the ω rows (default "
                   f"{','.join(f'{x:g}' for x in SMALL_OMEGA_LRS)}; only the base β with --paper)")
    p.add_argument("--warmup", type=int, default=10, help="meta-iterations left out of the timing")
    p.add_argument("--timing-rounds", type=int, default=8,
                   help="round-robin timing rounds over all variants in one process (0: skip)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch.set_num_threads in every process (1 on a busy shared CPU)")
    p.add_argument("--json", type=Path, help="also write every number to this JSON file")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: JSON spec of one variant
    args = p.parse_args(argv)
    args.dataset = args.dataset or ("breastmnist" if args.paper else "pneumoniamnist")
    args.preset = args.preset or ("2d-64" if args.paper else "cpu-small")
    args.steps = args.steps or (2000 if args.paper else 200)
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = sorted(set(args.only) - set(ABLATIONS))
    if unknown:
        p.error(f"--only {','.join(unknown)}: expected a subset of {','.join(ABLATIONS)}")
    return args


def variant_config(args: argparse.Namespace, variant: Variant) -> dict[str, Any]:
    """The full config dict of one variant (the base preset plus the run's and the variant's overrides)."""
    from mednf.engine.presets import get_preset

    base = get_preset(args.preset)
    meta: dict[str, Any] = {"steps": args.steps, **variant.meta}
    # a fixed fit batch keeps the fit identical across variants (the default sizes it to memory)
    fit = {"batch_size": min(args.eval_samples, 64)}
    return base.replace(field=variant.field, meta=meta, fit=fit).to_dict()


def run_variant(args: argparse.Namespace, variant: Variant, device: str) -> dict[str, Any]:
    """Run one variant in a fresh Python process and return its result."""
    spec = {"label": variant.label, "config": variant_config(args, variant), "dataset": args.dataset,
            "eval_samples": args.eval_samples, "device": device, "seed": args.seed, "warmup": args.warmup,
            "threads": args.threads}
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        # e.g. out of memory at γ = 1 with the paper's config: keep the other rows, mark this one
        print(f"variant {variant.label!r} failed (exit {proc.returncode}); see the worker's stderr above",
              file=sys.stderr)
        return {"label": variant.label, "failed": f"exit {proc.returncode}", "config": spec["config"]}
    result = json.loads(lines[-1][len(_RESULT_TAG):])
    result["config"] = spec["config"]
    return result


def _mean_sem(values: Sequence[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=np.float64)
    sem = float(array.std(ddof=1) / math.sqrt(len(array))) if len(array) > 1 else float("nan")
    return float(array.mean()), sem


def _seconds(value: float | None) -> str:
    return "—" if value is None else f"{value:.3f}"


def format_table(name: str, rows: list[tuple[Variant, dict[str, Any]]], memory_label: str) -> str:
    """One Markdown table: a row per variant, Δ paired against the first row."""
    header = ["variant", "test PSNR (dB, ± s.e.)", "Δ PSNR vs first row (paired)", "test SSIM",
              "meta-train PSNR (last 10 %)", "s / meta-iter in its run (median, min)",
              "s / meta-iter interleaved (median)", memory_label]
    lines = [f"**{name}**", "", "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
    reference = None if "failed" in rows[0][1] else np.asarray(rows[0][1]["psnr"])
    for variant, r in rows:
        if "failed" in r:
            lines.append(f"| {variant.label} | failed ({r['failed']}; out of memory?) |" + " — |" * (len(header) - 2))
            continue
        psnr, sem = _mean_sem(r["psnr"])
        if r is rows[0][1] or reference is None:
            delta = "—"
        else:
            d_mean, d_sem = _mean_sem(np.asarray(r["psnr"]) - reference)
            delta = f"{d_mean:+.2f} ± {d_sem:.2f}"
        ssim = f"{np.nanmean(r['ssim']):.3f}" if r["ssim"] is not None else "—"
        steps = "" if r["steps_done"] == r["config"]["meta"]["steps"] else f" (stopped at {r['steps_done']})"
        lines.append(
            f"| {variant.label}{steps} | {psnr:.2f} ± {sem:.2f} | {delta} | {ssim} | {r['train_psnr']:.2f} | "
            f"{r['median_s']:.3f} ({r['min_s']:.3f}) | {_seconds(r.get('interleaved_s'))} | {r['memory_mib']:.0f} |"
        )
    return "\n".join(lines)


def best_learning_rates(rows: list[tuple[Variant, dict[str, Any]]]) -> list[str]:
    """For each ω variant of the ω table: the β with the best meta-train PSNR and its test PSNR."""
    groups: dict[str, list[tuple[Variant, dict[str, Any]]]] = {}
    for variant, r in rows:
        groups.setdefault(variant.label.rsplit(", β ", 1)[0], []).append((variant, r))
    lines = []
    for label, members in groups.items():
        members = [m for m in members if "failed" not in m[1]]
        if len(members) < 2:
            continue
        variant, r = max(members, key=lambda m: m[1]["train_psnr"])
        lines.append(f"- {label}: best β {variant.meta['meta_lr']:g} by meta-train PSNR "
                     f"({r['train_psnr']:.2f} dB) → test {float(np.mean(r['psnr'])):.2f} dB")
    return lines


def suspicious(rows: list[tuple[Variant, dict[str, Any]]]) -> list[str]:
    """Rows whose per-image PSNRs equal another row's exactly (a switch that did nothing)."""
    notes = []
    for i, (vi, ri) in enumerate(rows):
        for vj, rj in rows[i + 1:]:
            if "psnr" in ri and ri.get("psnr") == rj.get("psnr"):
                notes.append(f"WARNING: {vi.label!r} and {vj.label!r} gave identical per-image PSNRs")
    return notes


def device_description(device: str) -> str:
    """GPU name, or CPU model and core count."""
    import torch

    if device.startswith("cuda"):
        return f"{torch.cuda.get_device_name(torch.device(device))}, torch {torch.__version__}"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU {model}, {os.cpu_count()} cores, {torch.get_num_threads()} threads, torch {torch.__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(_RESULT_TAG + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    import torch

    from mednf.engine.config import EngineConfig
    from mednf.engine.presets import get_preset
    from mednf.errors import ConfigError

    if args.threads:
        torch.set_num_threads(args.threads)
    device = "cpu" if args.gpu is None else f"cuda:{args.gpu}"
    if args.gpu is not None and not torch.cuda.is_available():
        print("error: --gpu given but torch.cuda.is_available() is False", file=sys.stderr)
        return 2
    if args.paper and args.gpu is None:
        print("warning: --paper on a CPU takes ≈ 15–20 s per meta-iteration here; it is meant for a GPU",
              file=sys.stderr)
    preset = get_preset(args.preset)
    omega_first = args.omega_first if args.omega_first is not None else PAPER_OMEGA[0]
    omega_last = args.omega_last if args.omega_last is not None else PAPER_OMEGA[1]
    base_lr = args.meta_lr if args.meta_lr is not None else (preset.meta.meta_lr if args.paper else SMALL_META_LR)
    if args.omega_lrs is not None:
        omega_lrs = [float(x) for x in args.omega_lrs.split(",") if x.strip()]
    else:
        omega_lrs = [] if args.paper else list(SMALL_OMEGA_LRS)
    try:
        plans = {name: ablation_variants(name, omega_first, omega_last, preset.field.num_sine_layers, base_lr,
                                         omega_lrs) for name in args.only}
        base = EngineConfig.from_dict(variant_config(args, plans[args.only[0]][0]))
        for variants in plans.values():  # every config is valid before the first run starts
            for variant in variants:
                variant_config(args, variant)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    results: dict[str, dict[str, Any]] = {}
    for variants in plans.values():
        for variant in variants:
            if variant.key() not in results:
                print(f"running: {variant.label}", file=sys.stderr, flush=True)
                results[variant.key()] = run_variant(args, variant, device)
    if args.timing_rounds > 0:
        print(f"interleaved timing: {args.timing_rounds} rounds over {len(results)} configs", file=sys.stderr)
        timing = interleaved_timing({key: r["config"] for key, r in results.items() if "failed" not in r},
                                    args.dataset, device, args.timing_rounds, args.seed)
        for key, value in timing.items():
            results[key]["interleaved_s"] = value

    f, m, fit = base.field, base.meta, base.fit
    size = "×".join(str(s) for s in load_split(args.dataset, "test").shape[2:])
    command = "python benchmarks/ablation.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    memory_label = ("peak CUDA alloc, meta (MiB)" if device.startswith("cuda")
                    else "peak RSS above baseline, meta (MiB)")
    print(f"Date {datetime.date.today().isoformat()} · {device_description(device)}")
    print(f"Command: `{command.strip()}`")
    print(f"Data: {args.dataset} {size}, train split for meta-learning, {args.eval_samples} test images "
          f"(fixed random subset) fitted per variant · seed {args.seed} (θ init, batches, contexts)")
    print(f"Base config: preset {args.preset}, K{f.num_layers} L{f.hidden_dim} P{f.latent_dim}, "
          f"ω {omega_first:g}→{omega_last:g}, shift {f.shift_mode}, G{m.inner_steps} α {m.inner_lr:g}, "
          f"β {m.meta_lr:g} ({m.lr_schedule}), B{m.batch_size}, {m.steps} meta-iterations; fit H{fit.steps} "
          f"α {fit.lr:g}, grad_rescale {fit.grad_rescale}")
    print()
    report: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}, "ablations": {}}
    for name, variants in plans.items():
        rows = [(v, results[v.key()]) for v in variants]
        print(format_table(name, rows, memory_label))
        if name == "omega":
            print()
            print("\n".join(best_learning_rates(rows)))
        for note in suspicious(rows):
            print(note)
        print()
        report["ablations"][name] = [{"variant": v.label, **r} for v, r in rows]
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
