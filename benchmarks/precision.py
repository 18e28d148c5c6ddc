"""What each precision (fp32 / tf32 / bf16) costs in PSNR and gains in speed, on real MedMNIST files.

Two parts, in one process:

1. **Accuracy at equal steps** — for every arm a full meta-training run from the same seed (θ init,
   batch order, contexts), then the test-time fit of the whole test split in the same precision; test
   PSNR (mean ± s.e. over images) and its paired per-image difference to the fp32 run of the same seed.
   Arms: ``fp32``, ``tf32`` (on the CPU that *is* fp32), ``bf16`` (the shipped bf16: only the hidden
   products in bf16) and ablations that put one more part in bf16 — ``bf16+first_layer`` (coords @ W_1),
   ``bf16+shift`` (φ → biases and back), ``bf16+sine_argument`` (W h + bias rounded to bf16, sin/cos in
   bf16), ``bf16+update`` (φ stored in bf16: every inner-loop and fit SGD update rounded to bf16) and
   ``bf16+eager_fit`` (the shipped bf16 with the fit's eager kernel instead of the compiled one: the two
   differ only in rounding, ``MEDNF_FIT_KERNEL``).
   Cross fits (θ of the fp32 run fitted in bf16 and in the ``--fit-arms``, θ of the bf16 run fitted in
   fp32) separate the meta-learning's share of the difference from the fit's; a fit of one θ in two
   precisions is deterministic, so its paired difference has no training noise in it.
2. **Speed, interleaved** — ``--rounds`` round-robin rounds over fp32 / tf32 / bf16 from a fresh θ: seconds
   per meta-iteration (median of ``--iters``) and fit images/s on ``--fit-images`` test images; the
   median over rounds is reported, so every format sees the same machine load.

    python benchmarks/precision.py pneumonia --steps 3000 --json pneu.json
    python benchmarks/precision.py breast --steps 300 --json breast.json
    python benchmarks/precision.py breast-paper --steps 0 --rounds 2 --iters 2 --fit-images 8   # speed only
    python benchmarks/precision.py pneumonia --steps 50 --arms fp32,bf16 --rounds 1     # smoke run

Configs (``DATASETS``): PneumoniaMNIST 28², K6 L64 P128, ω 10 +5/layer, G3, γ .25, B16, AdamW 3e-4
constant, fit H10 with the official gradient rescaling (tests/test_real_data.py); BreastMNIST 64², K8 L128
P512, same otherwise with B8 (the parity table's "breast-small"; at β 3e-4 it degrades between 150 and 300
steps, so run it with ``--meta-lr 1e-4``). Imports torch, numpy and mednf only.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

import mednf.engine.fit as fit_module
import mednf.engine.meta as meta_module
from mednf.engine import field as nf
from mednf.engine.config import FieldConfig, FitConfig, MetaConfig
from mednf.engine.context import gather_context, random_context
from mednf.engine.execution import Execution
from mednf.engine.fit import FittedBatch, fit_latents
from mednf.engine.fused_latent_grad import ENV as FIT_KERNEL_ENV
from mednf.engine.inner_grad import inner_gradient
from mednf.engine.latent_grad import latent_gradient
from mednf.engine.meta import MetaLearner
from mednf.engine.metrics import signal_mse
from mednf.engine.precision import FP32, bf16_parts, cpu_bf16_units, resolve_precision

DATA = Path(os.environ.get("MEDNF_TEST_MEDMNIST", Path(__file__).resolve().parents[2] / "shared/data/medmnist"))


@dataclass(frozen=True)
class Dataset:
    title: str
    file: str
    layers: int
    hidden: int
    latent: int
    batch: int
    inner_steps: int = 3


DATASETS = {
    "pneumonia": Dataset("PneumoniaMNIST 28², K6 L64 P128, ω 10 +5, G3 H10, γ .25, B16", "pneumoniamnist.npz",
                         6, 64, 128, 16),
    "breast": Dataset("BreastMNIST 64², K8 L128 P512, ω 10 +5, G3 H10, γ .25, B8", "breastmnist_64.npz",
                      8, 128, 512, 8),
    "breast-paper": Dataset("BreastMNIST 64², paper 2D size K15 L256 P2048, G10 H10, γ .25, B4 (speed only)",
                            "breastmnist_64.npz", 15, 256, 2048, 4, inner_steps=10),
}
ARMS = ("fp32", "tf32", "bf16", "bf16+first_layer", "bf16+shift", "bf16+sine_argument", "bf16+update",
        "bf16+eager_fit")
_PART = {"bf16+first_layer": "first_layer_bf16", "bf16+shift": "shift_bf16",
         "bf16+sine_argument": "sine_argument_bf16"}


def load(file: str) -> tuple[Tensor, Tensor]:
    with np.load(DATA / file) as d:
        train = torch.from_numpy(d["train_images"][:, None].astype(np.float32) / 255)
        test = torch.from_numpy(d["test_images"][:, None].astype(np.float32) / 255)
    return train, test


META_LR = {"value": 3e-4}  # --meta-lr


def configs(ds: Dataset, precision: str, steps: int) -> tuple[FieldConfig, MetaConfig, FitConfig]:
    cfg = FieldConfig(in_dims=2, out_dims=1, num_layers=ds.layers, hidden_dim=ds.hidden, latent_dim=ds.latent,
                      omega_first=10.0, omega_increment=5.0, precision=precision)
    meta = MetaConfig(inner_steps=ds.inner_steps, context_ratio=0.25, meta_lr=META_LR["value"], batch_size=ds.batch,
                      steps=max(steps, 1), lr_schedule="constant")
    return cfg, meta, FitConfig(steps=10, grad_rescale=True)


# ---------------------------------------------------------------------------------------------- φ in bf16

_BF16 = torch.bfloat16


def _round_update(phi: Tensor, step: Tensor) -> Tensor:
    """``φ − step`` computed and stored in bf16 (kept as an fp32 tensor of bf16 values)."""
    return (phi.to(_BF16) - step.to(_BF16)).to(phi.dtype)


def _inner_loop_bf16_update(field, targets, coords, *, lr, contexts, create_graph, latents=None, explicit=True):
    """mednf.engine.meta.inner_loop with every update of φ rounded to bf16 (the same gradient path)."""
    phi = latents if latents is not None else targets.new_zeros(targets.shape[0], field.cfg.latent_dim)
    if not phi.requires_grad:
        phi = phi.requires_grad_(True)
    last_mse = targets.new_zeros(targets.shape[0])
    for index in contexts:
        sub_coords, sub_targets = (coords, targets) if index is None else gather_context(coords, targets, index)
        if create_graph and explicit and not field.precision.measures_parts:
            grad, mse = inner_gradient(field, phi, sub_coords, sub_targets)
        else:
            mse = signal_mse(nf.forward_prepared(field, phi, sub_coords), sub_targets)
            (grad,) = torch.autograd.grad(mse.sum(), phi, create_graph=create_graph)
        phi = _round_update(phi, lr * grad)
        last_mse = mse.detach()
    return phi, last_mse


def _fit_batch_bf16_update(params, targets, coords, cfg, fit, signal_ids, *, seed=0, chunk_rows=None,
                           observed=None, precision=FP32):
    """mednf.engine.fit.fit_batch with every update of φ rounded to bf16 (whole images: no mask)."""
    assert observed is None, "the bf16+update arm fits whole images"
    B, N = targets.shape[:2]
    field = nf.prepare(params, cfg, precision)
    phi = targets.new_zeros(B, cfg.latent_dim)
    chunk_rows = chunk_rows or (fit_module._CPU_CHUNK_ROWS if targets.device.type == "cpu" else None)
    for step in range(fit.steps):
        weights = None
        if fit.grad_rescale:
            index = random_context(signal_ids, N, fit.rescale_ratio, seed=seed, step=step)
            weights = targets.new_zeros(B, N).scatter_(1, index, N / index.shape[1])
        grad, sub_grad, _ = latent_gradient(field, phi, coords, targets, chunk_rows=chunk_rows, subset_weights=weights)
        if sub_grad is not None:
            grad *= (sub_grad.norm(dim=1) / (grad.norm(dim=1) + 1e-16))[:, None]
        phi = _round_update(phi, fit.lr * grad)
    with torch.no_grad():
        recon = nf.forward_prepared(field, phi, coords).clamp_(0.0, 1.0)
        mse = signal_mse(recon, targets)
    return FittedBatch(phi, mse, recon)


@contextlib.contextmanager
def arm_context(arm: str) -> Iterator[None]:
    """What an arm changes beyond its execution (:func:`arm_execution`)."""
    if arm == "bf16+eager_fit":
        saved_kernel = os.environ.get(FIT_KERNEL_ENV)
        os.environ[FIT_KERNEL_ENV] = "eager"
        try:
            yield
        finally:
            if saved_kernel is None:
                os.environ.pop(FIT_KERNEL_ENV, None)
            else:
                os.environ[FIT_KERNEL_ENV] = saved_kernel
    elif arm == "bf16+update":
        saved = meta_module.inner_loop, fit_module.fit_batch
        meta_module.inner_loop, fit_module.fit_batch = _inner_loop_bf16_update, _fit_batch_bf16_update
        try:
            yield
        finally:
            meta_module.inner_loop, fit_module.fit_batch = saved
    else:
        yield


def arm_precision(arm: str) -> str:
    return arm.split("+")[0]


def arm_execution(arm: str) -> Execution:
    """The arm's precision resolved for the CPU, with the bf16 part it measures switched on."""
    execution = Execution.resolve(arm_precision(arm))
    if arm not in _PART:
        return execution
    return dataclasses.replace(execution, precision=bf16_parts(execution.precision, **{_PART[arm]: True}))


# ---------------------------------------------------------------------------------------------- runs


def train(ds: Dataset, arm: str, train_x: Tensor, steps: int, seed: int) -> tuple[dict, dict[str, Tensor]]:
    cfg, meta, _ = configs(ds, arm_precision(arm), steps)
    learner = MetaLearner(cfg, meta, seed=seed, execution=arm_execution(arm))
    order = torch.Generator().manual_seed(seed)
    psnrs, times = [], []
    with arm_context(arm):
        for _ in range(steps):
            batch = train_x[torch.randint(0, len(train_x), (meta.batch_size,), generator=order)]
            start = time.perf_counter()
            stats = learner.step(batch)
            times.append(time.perf_counter() - start)
            psnrs.append(stats["psnr"])
            if not math.isfinite(stats["loss"]):
                break
    tail = psnrs[-max(1, len(psnrs) // 10):]
    window = max(1, len(psnrs) // 10)  # the meta-train PSNR curve, in tenths of the run
    curve = [round(statistics.fmean(psnrs[i:i + window]), 3) for i in range(0, len(psnrs), window)]
    return {"train_psnr_last10": statistics.fmean(tail), "train_psnr_curve": curve,
            "s_per_iter_median": statistics.median(times), "seconds": sum(times), "steps_done": len(psnrs)}, \
        learner.detached_params()


def evaluate(ds: Dataset, arm: str, params: dict[str, Tensor], test_x: Tensor) -> tuple[Tensor, float]:
    """Per-image test PSNR after the fit in ``arm``'s precision, and images/s of that fit."""
    cfg, _, fit = configs(ds, arm_precision(arm), 1)
    with arm_context(arm):
        start = time.perf_counter()
        result = fit_latents(params, test_x, cfg, fit, execution=arm_execution(arm))
        seconds = time.perf_counter() - start
    return result.psnr, len(test_x) / seconds


def _meta_gradient(arm: str, theta, targets, coords, cfg, meta, contexts) -> tuple[Tensor, float]:
    """The meta-gradient (flat, float64) and meta-loss of one batch in ``arm`` (``fp64``: all in float64)."""
    dtype = torch.float64 if arm == "fp64" else torch.float32
    params = {k: v.to(dtype).requires_grad_(True) for k, v in theta.items()}
    precision = arm_execution(arm if arm != "fp64" else "fp32").precision
    with arm_context(arm):
        out = meta_module.meta_objective(params, targets.to(dtype), coords.to(dtype), cfg, meta, contexts,
                                         precision=precision)
        grads = torch.autograd.grad(out.loss, list(params.values()))
    return torch.cat([t.flatten() for t in grads]).double(), float(out.loss.detach())


def gradient_errors(ds: Dataset, theta: dict[str, Tensor], train_x: Tensor, arms: list[str], batches: int) -> dict:
    """Relative error of each arm's meta-gradient (and meta-loss) against fp32 at one θ, mean over batches;
    ``fp64`` is float32's own error against float64 (the floor)."""
    cfg, meta, _ = configs(ds, "fp32", 1)
    gen = torch.Generator().manual_seed(7)
    errors: dict[str, list[tuple[float, float]]] = {arm: [] for arm in ["fp64", *arms] if arm != "fp32"}
    for b in range(batches):
        x = train_x[torch.randint(0, len(train_x), (ds.batch,), generator=gen)]
        targets = nf.to_points(x)
        coords = nf.coordinate_grid(x.shape[2:])
        contexts = meta_module.sample_contexts(meta, ds.batch, coords.shape[0], seed=0, iteration=b,
                                               device=torch.device("cpu"))

        batch = (theta, targets, coords, cfg, meta, contexts)
        ref, ref_loss = _meta_gradient("fp32", *batch)
        for arm, found in errors.items():
            g, loss = _meta_gradient(arm, *batch)
            found.append((float((g - ref).norm() / ref.norm()), abs(loss - ref_loss) / ref_loss))
    return {arm: {"meta_grad_rel_error": statistics.fmean(e[0] for e in v),
                  "meta_loss_rel_error": statistics.fmean(e[1] for e in v)} for arm, v in errors.items()}


def speed(ds: Dataset, train_x: Tensor, test_x: Tensor, rounds: int, iters: int, fit_images: int) -> dict:
    """Interleaved rounds: {format: {"s_per_iter": [...], "fit_images_per_s": [...]}}."""
    out: dict[str, dict[str, list[float]]] = {p: {"s_per_iter": [], "fit_images_per_s": []} for p in
                                              ("fp32", "tf32", "bf16")}
    gen = torch.Generator().manual_seed(0)
    batches = [train_x[torch.randint(0, len(train_x), (ds.batch,), generator=gen)] for _ in range(iters + 1)]
    images = test_x[:fit_images]
    for _ in range(rounds):
        for precision in out:
            cfg, meta, fit = configs(ds, precision, 100)
            learner = MetaLearner(cfg, meta, seed=0)
            learner.step(batches[0])  # warm-up (allocator, oneDNN primitives)
            times = []
            for batch in batches[1:]:
                start = time.perf_counter()
                learner.step(batch)
                times.append(time.perf_counter() - start)
            out[precision]["s_per_iter"].append(statistics.median(times))
            params = learner.detached_params()
            fit_latents(params, images[:ds.batch], cfg, fit)  # warm-up
            start = time.perf_counter()
            fit_latents(params, images, cfg, fit)
            out[precision]["fit_images_per_s"].append(len(images) / (time.perf_counter() - start))
    return out


def paired(a: Tensor, b: Tensor) -> tuple[float, float]:
    """Mean and standard error of the per-image difference a − b."""
    d = (a - b).double()
    return float(d.mean()), float(d.std() / math.sqrt(len(d)))


def mean_se(x: Tensor) -> tuple[float, float]:
    return float(x.mean()), float(x.double().std() / math.sqrt(len(x)))


def environment() -> dict:
    return {"torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "cpu_bf16_units": cpu_bf16_units(), "machine": platform.machine(),
            "cpu": next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                         if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists()
            else platform.processor(),
            "date": time.strftime("%Y-%m-%d %H:%M")}


def _kept_name(folder: Path, dataset: str, steps: int, meta_lr: float, key: str) -> Path:
    return folder / f"{dataset}-{steps}-{meta_lr:g}-{key.replace('@', '-').replace('+', '_')}"


def keep_run(folder: Path | None, dataset: str, steps: int, meta_lr: float, key: str, stats: dict,
             theta: dict[str, Tensor], psnr: Tensor) -> None:
    """Save one finished run (a killed benchmark loses no finished run)."""
    if folder is None:
        return
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    base = _kept_name(folder, dataset, steps, meta_lr, key)
    save_file({**{f"theta.{k}": v.contiguous() for k, v in theta.items()}, "psnr": psnr.contiguous()},
              str(base) + ".safetensors")
    Path(str(base) + ".json").write_text(json.dumps(stats))


def kept_run(folder: Path | None, dataset: str, steps: int, meta_lr: float, key: str):
    """(stats, θ, per-image PSNR) of a kept run, or None."""
    if folder is None:
        return None
    base = _kept_name(folder, dataset, steps, meta_lr, key)
    if not (Path(str(base) + ".json").is_file() and Path(str(base) + ".safetensors").is_file()):
        return None
    from safetensors.torch import load_file

    tensors = load_file(str(base) + ".safetensors")
    theta = {k.removeprefix("theta."): v for k, v in tensors.items() if k.startswith("theta.")}
    return json.loads(Path(str(base) + ".json").read_text()), theta, tensors["psnr"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    p.add_argument("dataset", choices=sorted(DATASETS))
    p.add_argument("--steps", type=int, default=3000, help="meta-iterations per arm")
    p.add_argument("--meta-lr", type=float, default=3e-4, help="AdamW β (constant)")
    p.add_argument("--arms", default=",".join(ARMS), help=f"comma list of {', '.join(ARMS)}")
    p.add_argument("--seeds", default="42", help="comma list; every arm runs with each seed")
    p.add_argument("--seed-arms", default="fp32,bf16", help="arms run with the seeds after the first")
    p.add_argument("--fit-arms", default="bf16",
                   help="arms the fp32-trained θ is also fitted in (same θ: no training noise in the difference)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved speed rounds (0: none)")
    p.add_argument("--iters", type=int, default=10, help="timed meta-iterations per speed round and format")
    p.add_argument("--fit-images", type=int, default=64, help="images per timed fit")
    p.add_argument("--check-tf32", type=int, default=0, metavar="N",
                   help="train fp32 and tf32 N steps and report whether θ is bit-identical (it is on a CPU)")
    p.add_argument("--grad-batches", type=int, default=0,
                   help="batches for the meta-gradient error of every arm at the trained fp32 θ (0: skip)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", type=Path, help="write every number here")
    p.add_argument("--keep", type=Path, metavar="DIR",
                   help="keep each trained run (θ + numbers) here as it finishes; a rerun reuses them")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    META_LR["value"] = args.meta_lr
    ds = DATASETS[args.dataset]
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    bad = sorted(set(arms) - set(ARMS))
    if bad:
        p.error(f"unknown arms {bad}")
    seeds = [int(s) for s in args.seeds.split(",")]
    seed_arms = {a.strip() for a in args.seed_arms.split(",")}
    fit_arms = [a.strip() for a in args.fit_arms.split(",") if a.strip() and a.strip() != "fp32"]
    if sorted(set(fit_arms) - set(ARMS)):
        p.error(f"unknown fit arms {sorted(set(fit_arms) - set(ARMS))}")
    train_x, test_x = load(ds.file)
    env = environment()
    env["bf16_resolves_to"] = resolve_precision("bf16", "cpu", warn=False).to_dict()
    print(f"# {ds.title}; β {args.meta_lr:g}; {args.steps} steps; test split {len(test_x)} images; {env}", flush=True)
    if args.check_tf32:
        a = train(ds, "fp32", train_x, args.check_tf32, seeds[0])[1]
        b = train(ds, "tf32", train_x, args.check_tf32, seeds[0])[1]
        env["tf32_bit_identical_to_fp32"] = {"steps": args.check_tf32,
                                             "identical": all(torch.equal(a[k], b[k]) for k in a)}
        print(f"tf32 vs fp32 after {args.check_tf32} steps: {env['tf32_bit_identical_to_fp32']}", flush=True)
    runs: dict[str, dict] = {}
    psnr: dict[str, Tensor] = {}
    thetas: dict[str, dict[str, Tensor]] = {}
    for seed in seeds if args.steps > 0 else []:  # --steps 0: speed only
        for arm in arms:
            if seed != seeds[0] and arm not in seed_arms:
                continue
            key = f"{arm}@{seed}"
            kept = kept_run(args.keep, args.dataset, args.steps, args.meta_lr, key)
            if kept is not None:
                stats, theta, psnr[key] = kept
            else:
                stats, theta = train(ds, arm, train_x, args.steps, seed)
                psnr[key], stats["fit_images_per_s"] = evaluate(ds, arm, theta, test_x)
                stats["test_psnr"], stats["test_psnr_se"] = mean_se(psnr[key])
                keep_run(args.keep, args.dataset, args.steps, args.meta_lr, key, stats, theta, psnr[key])
            thetas[key] = theta
            runs[key] = stats
            print(f"{key}: test {stats['test_psnr']:.3f} ± {stats['test_psnr_se']:.3f} dB, train(last 10%) "
                  f"{stats['train_psnr_last10']:.2f} dB, {stats['s_per_iter_median']:.4f} s/iter, "
                  f"fit {stats['fit_images_per_s']:.1f} img/s, {stats['seconds']:.0f} s; train PSNR by tenths "
                  f"{stats['train_psnr_curve']}", flush=True)
        crosses = [("fp32", a) for a in fit_arms] + [("bf16", "fp32")]  # cross fits: θ of one arm, fit in another
        for theta_arm, fit_arm in crosses:
            if f"{theta_arm}@{seed}" in thetas:
                key = f"train {theta_arm} / fit {fit_arm}@{seed}"
                psnr[key], _ = evaluate(ds, fit_arm, thetas[f"{theta_arm}@{seed}"], test_x)
                runs[key] = dict(zip(("test_psnr", "test_psnr_se"), mean_se(psnr[key])))
                print(f"{key}: test {runs[key]['test_psnr']:.3f} dB", flush=True)
    grad_errors = {}
    if args.grad_batches and f"fp32@{seeds[0]}" in thetas:
        same_meta = ("tf32", "bf16+eager_fit")  # their meta-gradient is fp32's / bf16's
        grad_errors = gradient_errors(ds, thetas[f"fp32@{seeds[0]}"], train_x, [a for a in ARMS if a not in same_meta],
                                      args.grad_batches)
        for arm, e in grad_errors.items():
            print(f"meta-gradient at the trained fp32 θ, {arm}: relative error {e['meta_grad_rel_error']:.2e}, "
                  f"meta-loss {e['meta_loss_rel_error']:.2e}", flush=True)
    for key, stats in runs.items():
        base = f"fp32@{key.rsplit('@', 1)[1]}"
        if key != base and base in psnr:
            stats["delta_vs_fp32"], stats["delta_se"] = paired(psnr[key], psnr[base])
    timing = speed(ds, train_x, test_x, args.rounds, args.iters, args.fit_images) if args.rounds else {}
    print(f"\n{ds.title}, {args.steps} meta-iterations, test split ({len(test_x)} images)\n")
    print("| arm | test PSNR (dB ± s.e.) | Δ vs fp32, paired (dB) | meta-train PSNR (last 10 %) | s/iter in its run |")
    print("|---|---:|---:|---:|---:|")
    for key, s in runs.items():
        delta = f"{s['delta_vs_fp32']:+.3f} ± {s['delta_se']:.3f}" if "delta_vs_fp32" in s else "—"
        train_psnr = f"{s['train_psnr_last10']:.2f}" if "train_psnr_last10" in s else "—"
        per_iter = f"{s['s_per_iter_median']:.4f}" if "s_per_iter_median" in s else "—"
        print(f"| {key} | {s['test_psnr']:.3f} ± {s['test_psnr_se']:.3f} | {delta} | {train_psnr} | {per_iter} |")
    if timing:
        base_iter = statistics.median(timing["fp32"]["s_per_iter"])
        base_fit = statistics.median(timing["fp32"]["fit_images_per_s"])
        print(f"\nInterleaved speed, median of {args.rounds} rounds ({args.iters} meta-iterations, fit of "
              f"{args.fit_images} images each):\n")
        print("| format | s/meta-iter | × vs fp32 | fit images/s | × vs fp32 |")
        print("|---|---:|---:|---:|---:|")
        for precision, t in timing.items():
            it, ft = statistics.median(t["s_per_iter"]), statistics.median(t["fit_images_per_s"])
            print(f"| {precision} | {it:.4f} | {base_iter / it:.2f} | {ft:.1f} | {ft / base_fit:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"dataset": args.dataset, "title": ds.title, "steps": args.steps,
                                         "meta_lr": args.meta_lr, "meta_gradient_errors": grad_errors,
                                         "env": env, "runs": runs, "speed": timing}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
