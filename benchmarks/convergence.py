"""Time to quality: validation PSNR against meta-iterations and wall seconds, per candidate (issue #24).

Every candidate is measured against the paper's recipe (``baseline``) on real MedMNIST images:

- ``pneumonia28``: PneumoniaMNIST 28², K6 L64 P128, B16;
- ``breast64``: BreastMNIST 64², K8 L128 P512, B8;
- the cross cells ``breast28`` (BreastMNIST box-filtered to 28², pneumonia28's field and B) and
  ``pneumonia28-k8`` (PneumoniaMNIST 28² with breast64's field and B); ``pneumonia28-k10``: a larger field
  (K10 L192 P1024, B8), to see how the best β moves with the field's size;

both with the paper's ω-schedule 20→400, G 10, γ 0.25, α 1e-2, second order, the test-time fit H 20, α 1e-2
with the official gradient rescaling, and a cosine schedule over the run's length. The base β is 1e-4: the
20→400 schedule diverges at β 3e-4 at this scale (benchmarks/RESULTS.md, "Ablations").

A variant is a named dict of engine overrides (``{"field": {...}, "meta": {...}, "fit": {...}}``, applied with
:meth:`mednf.engine.config.EngineConfig.replace`); :class:`Scale` multiplies the setup's own value and
:class:`OfSteps` is a fraction of the run's length, so one line adds a candidate to :data:`VARIANTS`.

Usage::

    python benchmarks/convergence.py --threads 1 --setups pneumonia28 --seeds 0 --steps 300
    python benchmarks/convergence.py --threads 1 --setups breast64 --variants baseline,meta-sgd --seeds 0,1
    python benchmarks/convergence.py --report-only --json runs/convergence.json   # tables and plot again

Protocol
--------
- Every variant of one setup and seed runs in a fresh process from θ₀ drawn with that seed, on the same
  stream of training images (:func:`mednf.building.trainer.batch_positions`: seeded epochs; a variant with a
  doubled B takes two of the baseline's batches per iteration) and the same contexts (keyed by seed,
  iteration and slot). The baseline runs first.
- Every ``--val-every`` iterations (and at iteration 0): :func:`mednf.engine.fit.fit_latents` (θ frozen, the
  variant's fit) of a fixed subset of ``--val-samples`` validation images → mean val PSNR, beside the
  cumulative meta-training wall seconds (batch gathering and :meth:`MetaLearner.step`; validation excluded).
- θ is kept at the first iteration whose clock reaches the baseline's total meta-training seconds ("equal
  wall time"; a variant that finishes sooner keeps its final θ). At the end, a fixed subset of
  ``--test-samples`` test images is fitted (PSNR and SSIM) at the final θ ("equal iterations") and at that θ.
- The baseline's run also fits the test subset at its final θ with H ∈ ``--fit-steps`` (θ unchanged):
  PSNR and SSIM per second of fitting.
- Reported per setup × seed × variant: final val PSNR, iterations and seconds to reach the baseline's final
  val PSNR (resolution ``--val-every``; "not reached" otherwise), speed-up factors, test PSNR/SSIM at equal
  iterations and at equal wall time (paired Δ to the baseline on the same images). Markdown (``--markdown``),
  JSON (``--json``, rewritten after every run; a rerun skips runs already there with the same spec) and a
  plot (``--plot``) of val PSNR vs iteration and vs seconds per setup.

Wall seconds depend on the machine's load; on a shared CPU run one measurement process at a time with
``--threads 1``. The PSNR numbers are deterministic for a given seed.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import math
import os
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
_RESULT_TAG = "CONVERGENCE-RESULT "
SUBSET_SEED = 12345  # the val and test subsets do not change with the seed, so seeds and variants compare


@dataclass(frozen=True)
class Scale:
    """An override that multiplies the setup's own value (``Scale(2)`` on ``batch_size``: twice its B)."""

    factor: float


@dataclass(frozen=True)
class OfSteps:
    """An integer override that is a fraction of the run's meta-iterations (e.g. a warm-up of 5 %; of the
    variant's own length where it scales ``meta.steps``)."""

    fraction: float


# The paper's recipe at a CPU scale: ω 20→400, G 10, γ 0.25, α 1e-2, second order, fit H 20 with rescaling.
PAPER_RECIPE: dict[str, dict[str, Any]] = {
    "field": {"omega_first": 20.0, "omega_last": 400.0, "shift_mode": "inside"},
    "meta": {"inner_steps": 10, "inner_lr": 1e-2, "context_ratio": 0.25, "meta_lr": 1e-4, "first_order": False,
             "lr_schedule": "cosine", "weight_decay": 0.01, "grad_clip": 1.0},
    "fit": {"steps": 20, "lr": 1e-2, "grad_rescale": True, "rescale_ratio": 0.25},
}
SETUPS: dict[str, dict[str, Any]] = {
    "pneumonia28": {"file": "pneumoniamnist.npz", "field": {"num_layers": 6, "hidden_dim": 64, "latent_dim": 128},
                    "meta": {"batch_size": 16}},
    "breast64": {"file": "breastmnist_64.npz", "field": {"num_layers": 8, "hidden_dim": 128, "latent_dim": 512},
                 "meta": {"batch_size": 8}},
    # The cross cells, which separate the dataset from the scale. BreastMNIST's 28² file is not among the shared
    # data, so breast28 box-filters the 64² images to 28² (not byte-equal to MedMNIST's 28² file, which is made
    # from the source images); PneumoniaMNIST at 64² is not there either, so pneumonia28-k8 keeps 28² and takes
    # breast64's field (the model's scale without the image's).
    "breast28": {"file": "breastmnist_64.npz", "resize": 28,
                 "field": {"num_layers": 6, "hidden_dim": 64, "latent_dim": 128}, "meta": {"batch_size": 16}},
    "pneumonia28-k8": {"file": "pneumoniamnist.npz", "field": {"num_layers": 8, "hidden_dim": 128, "latent_dim": 512},
                       "meta": {"batch_size": 8}},
    # a third field size, between breast64's and the paper's K15 L256 P2048: how the best β moves with the field
    "pneumonia28-k10": {"file": "pneumoniamnist.npz",
                        "field": {"num_layers": 10, "hidden_dim": 192, "latent_dim": 1024}, "meta": {"batch_size": 8}},
}
# Candidates, one line each. batch×2 scales β by √2: AdamW's step does not grow with the gradient, and halving
# the gradient noise with a doubled batch calls for the square-root rule of adaptive optimisers (Malladi et
# al., 2022) rather than the linear rule of SGD; β×2 (2e-4) would also sit next to the 3e-4 that diverges.
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "baseline": {},
    "batch×2": {"meta": {"batch_size": Scale(2), "meta_lr": Scale(math.sqrt(2))}},
    "beta×3": {"meta": {"meta_lr": Scale(3)}},
    # the recipe's β tuned down: is a variant's lead over the baseline a better rule, or only a gentler rate?
    "beta÷3": {"meta": {"meta_lr": Scale(1 / 3)}},
    "beta÷5": {"meta": {"meta_lr": Scale(0.2)}},
    "beta÷10": {"meta": {"meta_lr": Scale(0.1)}},
    "meta-sgd": {"field": {"learned_inner_lr": True}},
    "learned-init": {"field": {"learned_init": True}},
    "omega-lr": {"meta": {"omega_lr": True}},
    "omega-lr+beta×10+warm-up": {"meta": {"omega_lr": True, "meta_lr": Scale(10), "warmup_steps": OfSteps(0.05)}},
    "meta-sgd+learned-init": {"field": {"learned_inner_lr": True, "learned_init": True}},
    "omega-lr+beta×30+warm-up": {"meta": {"omega_lr": True, "meta_lr": Scale(30), "warmup_steps": OfSteps(0.05)}},
    # θ's latent.* entries at 100 β: at β alone AdamW moves them ~β per step, too little to leave their start
    "meta-sgd+latent-lr×100": {"field": {"learned_inner_lr": True}, "meta": {"latent_lr_scale": 100.0}},
    "learned-init+latent-lr×100": {"field": {"learned_init": True}, "meta": {"latent_lr_scale": 100.0}},
    # the winner's rule against a β tuned down 3×: ω-tied rates at 10 × (β ÷ 3)
    "omega-lr+beta×3+warm-up": {"meta": {"omega_lr": True, "meta_lr": Scale(3), "warmup_steps": OfSteps(0.05)}},
    "omega-lr+warm-up": {"meta": {"omega_lr": True, "warmup_steps": OfSteps(0.05)}},  # 10 × (β ÷ 10)
    "omega-lr+beta×20+warm-up": {"meta": {"omega_lr": True, "meta_lr": Scale(20), "warmup_steps": OfSteps(0.05)}},
    # the recipe of a fast preset: the winner on a schedule of its own, half and a quarter as long as the baseline's
    "fast×2": {"meta": {"omega_lr": True, "meta_lr": Scale(10), "warmup_steps": OfSteps(0.05), "steps": Scale(0.5)}},
    "fast×4": {"meta": {"omega_lr": True, "meta_lr": Scale(10), "warmup_steps": OfSteps(0.05), "steps": Scale(0.25)}},
    # 0.6 of the length: the winner reached the baseline's final val PSNR in 0.6 of its iterations (×1.67)
    "fast×1.67": {"meta": {"omega_lr": True, "meta_lr": Scale(10), "warmup_steps": OfSteps(0.05),
                           "steps": Scale(0.6)}},
    "fast×1.67 on beta÷3": {"meta": {"omega_lr": True, "meta_lr": Scale(3), "warmup_steps": OfSteps(0.05),
                                     "steps": Scale(0.6)}},
    "omega-lr+beta×10+warm-up+meta-sgd": {"field": {"learned_inner_lr": True}, "meta": {
        "omega_lr": True, "meta_lr": Scale(10), "warmup_steps": OfSteps(0.05), "latent_lr_scale": 10.0}},
}
FIT_STEPS = (0, 5, 10, 20, 40)  # H of the fit sweep on the baseline's final θ
WIN_SPEEDUP = 1.1  # wall-clock noise between runs on a shared CPU is a few per cent


def variant_name(name: str) -> str:
    """The name in :data:`VARIANTS` (``x`` accepted for ``×``)."""
    for known in VARIANTS:
        if name in (known, known.replace("×", "x"), known.replace("÷", "/")):
            return known
    raise KeyError(f"unknown variant {name!r}; expected one of {', '.join(VARIANTS)}")


def resolve(value: Any, base: Any, steps: int) -> Any:
    """One override against the setup's value ``base``."""
    if isinstance(value, Scale):
        scaled = base * value.factor
        return max(1, round(scaled)) if isinstance(base, int) else float(scaled)
    if isinstance(value, OfSteps):
        return max(1, round(steps * value.fraction))
    return value


def variant_config(setup: str, variant: str, steps: int, fit_batch: int) -> dict[str, Any]:
    """The full engine config (nested dicts) of one variant of one setup, ``steps`` meta-iterations long."""
    from mednf.engine.presets import get_preset

    entry = SETUPS[setup]
    base = get_preset("cpu-small").replace(
        field={**PAPER_RECIPE["field"], **entry.get("field", {})},
        meta={**PAPER_RECIPE["meta"], **entry.get("meta", {}), "steps": steps},
        fit={**PAPER_RECIPE["fit"], **entry.get("fit", {}), "batch_size": fit_batch},
    )
    values = base.to_dict()
    own_steps = resolve(VARIANTS[variant].get("meta", {}).get("steps", steps), steps, steps)
    overrides = {section: {key: resolve(value, values[section][key], own_steps) for key, value in items.items()}
                 for section, items in VARIANTS[variant].items()}
    return base.replace(**overrides).to_dict()


def describe_overrides(variant: str) -> str:
    """The variant's overrides as one readable line."""
    parts = []
    for section, items in VARIANTS[variant].items():
        for key, value in items.items():
            if isinstance(value, Scale):
                text = f"×{value.factor:.3g}"
            elif isinstance(value, OfSteps):
                text = f"{value.fraction:g} of the steps"
            else:
                text = repr(value)
            parts.append(f"{section}.{key} {text}")
    return ", ".join(parts) or "the paper's recipe"


# ---------------------------------------------------------------------------------------------- worker


def load_split(path: Path, split: str, resize: int | None = None) -> np.ndarray:
    """uint8 images ``[N, 1, H, W]`` of one split of a MedMNIST npz; ``resize``: box-filtered to that side
    (Pillow's BOX filter: each output pixel the area-weighted mean of the input pixels it covers)."""
    with np.load(path) as archive:
        images = archive[f"{split}_images"]
    if resize is not None and images.shape[1:3] != (resize, resize):
        from PIL import Image

        images = np.stack([np.asarray(Image.fromarray(im).resize((resize, resize), Image.Resampling.BOX))
                           for im in images])
    return np.ascontiguousarray(images[:, None])


def subset(total: int, count: int, salt: int) -> np.ndarray:
    """A fixed, sorted subset of ``count`` indices (the same for every variant and seed)."""
    rng = np.random.default_rng([SUBSET_SEED, salt])
    return np.sort(rng.choice(total, size=min(count, total), replace=False))


def run_worker(spec: dict[str, Any]) -> dict[str, Any]:
    """Meta-train one variant, validating as it goes, then test; every number as JSON (a fresh process)."""
    import torch

    from mednf.building.trainer import batch_positions
    from mednf.engine.baselines import mean_image, psnr_against
    from mednf.engine.config import EngineConfig
    from mednf.engine.fit import fit_latents
    from mednf.engine.meta import MetaLearner

    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    cfg = EngineConfig.from_dict(spec["config"])
    path, resize = Path(spec["data"]), SETUPS[spec["setup"]].get("resize")
    train_np = load_split(path, "train", resize)
    train = torch.from_numpy(train_np)
    val_all, test_all = load_split(path, "val", resize), load_split(path, "test", resize)
    val = val_all[subset(len(val_all), spec["val_samples"], 1)]
    test = test_all[subset(len(test_all), spec["test_samples"], 2)]
    mean = mean_image(train_np)
    seed, steps, batch = spec["seed"], cfg.meta.steps, cfg.meta.batch_size

    learner = MetaLearner(cfg.field, cfg.meta, seed=seed, device="cpu")

    def validate() -> tuple[float, float]:
        start = time.perf_counter()
        result = fit_latents(learner.detached_params(), val, cfg.field, cfg.fit, device="cpu", seed=seed)
        return float(result.psnr.mean()), time.perf_counter() - start

    def snapshot() -> dict[str, torch.Tensor]:
        return {k: v.clone() for k, v in learner.detached_params().items()}

    curve: list[dict[str, float]] = []
    psnr0, val_s = validate()
    curve.append({"iteration": 0, "val_psnr": psnr0, "train_s": 0.0, "cpu_s": 0.0})
    seconds: list[float] = []
    train_s = cpu_s = 0.0
    equal_time_s = spec.get("equal_time_s")
    kept: dict[str, Any] | None = None  # θ at equal wall time
    diverged = None
    for i in range(steps):
        wall0, cpu0 = time.perf_counter(), time.process_time()
        index = torch.from_numpy(batch_positions(seed, i, batch, len(train)))
        stats = learner.step(train[index])
        loss = stats["loss"]
        step_s = time.perf_counter() - wall0
        cpu_s += time.process_time() - cpu0
        train_s += step_s
        seconds.append(step_s)
        if not math.isfinite(loss):
            diverged = f"non-finite meta-loss at iteration {i}"
            break
        done = i + 1
        if kept is None and equal_time_s is not None and train_s >= equal_time_s:
            kept = {"iteration": done, "train_s": train_s, "params": snapshot()}
        if done % spec["val_every"] == 0 or done == steps:
            psnr, s = validate()
            val_s += s
            curve.append({"iteration": done, "val_psnr": psnr, "train_s": train_s, "cpu_s": cpu_s})
            print(f"  [{spec['name']}] it {done}/{steps}: val {psnr:.2f} dB, train PSNR {stats['psnr']:.2f} dB, "
                  f"{train_s:.0f} s", file=sys.stderr, flush=True)
    final = snapshot()
    if kept is None:  # finished (or stopped) before the baseline's total: its final θ at equal time
        kept = {"iteration": len(seconds), "train_s": train_s, "params": final, "before_budget": True}

    def test_fit(params: dict[str, torch.Tensor], fit_cfg: Any = None) -> dict[str, Any]:
        start = time.perf_counter()
        result = fit_latents(params, test, cfg.field, fit_cfg or cfg.fit, device="cpu", seed=seed, with_ssim=True)
        elapsed = time.perf_counter() - start
        assert result.ssim is not None
        return {"psnr": result.psnr.tolist(), "ssim": result.ssim.tolist(), "psnr_mean": float(result.psnr.mean()),
                "ssim_mean": float(np.nanmean(result.ssim.numpy())), "fit_s": elapsed}

    out: dict[str, Any] = {
        "name": spec["name"],
        "steps_done": len(seconds),
        "diverged": diverged,
        "curve": curve,
        "train_s": train_s,
        "cpu_s": cpu_s,
        "val_s": val_s,
        "s_per_iter_median": statistics.median(seconds) if seconds else float("nan"),
        "mean_image_val_psnr": float(psnr_against(val, mean).mean()),
        "mean_image_test_psnr": float(psnr_against(test, mean).mean()),
        "test_final": test_fit(final),
        "equal_time": {"iteration": kept["iteration"], "train_s": kept["train_s"],
                       "before_budget": bool(kept.get("before_budget", False)),
                       "test": test_fit(kept["params"]) if kept["params"] is not final else None},
    }
    if spec.get("fit_steps"):
        sweep = []
        for h in spec["fit_steps"]:
            row = test_fit(final, dataclasses.replace(cfg.fit, steps=h))  # the run's own H again: timed as the others
            sweep.append({"H": h, **{k: row[k] for k in ("psnr_mean", "ssim_mean", "fit_s")}})
        out["fit_sweep"] = sweep
    return out


# ---------------------------------------------------------------------------------------------- parent


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options (see the module docstring)."""
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    p.add_argument("--setups", default="pneumonia28", help=f"comma-separated subset of {','.join(SETUPS)}")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated variant names (baseline runs "
                   "first and is always included)")
    p.add_argument("--seeds", default="0", help="comma-separated seeds (θ₀, batch stream, contexts, rescaling)")
    p.add_argument("--steps", type=int, default=300, help="meta-iterations per run (the cosine schedule's length)")
    p.add_argument("--val-every", type=int, default=25)
    p.add_argument("--val-samples", type=int, default=64, help="validation images fitted at every validation")
    p.add_argument("--test-samples", type=int, default=128, help="test images fitted at the end")
    p.add_argument("--fit-steps", default=",".join(map(str, FIT_STEPS)), help="H of the fit sweep on the "
                   "baseline's final θ ('' to skip)")
    p.add_argument("--data-dir", type=Path, default=DATA, help="folder of the MedMNIST npz files")
    p.add_argument("--threads", type=int, help="torch.set_num_threads in every process (1 on a shared CPU)")
    p.add_argument("--json", type=Path, default=Path("convergence.json"), help="results, rewritten after every run")
    p.add_argument("--include", type=Path, action="append", default=[],
                   help="another run's JSON whose runs join the report (read only; repeatable)")
    p.add_argument("--markdown", type=Path, help="also write the tables here")
    p.add_argument("--plot", type=Path, help="PNG of val PSNR vs iteration and vs seconds, one row per setup")
    p.add_argument("--report-only", action="store_true", help="run nothing: tables and plot from --json")
    p.add_argument("--reference", default="baseline", help="the variant every other is compared with in the "
                   "tables (the equal-time θ was still kept at the baseline's clock)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # internal: JSON spec of one run
    args = p.parse_args(argv)
    args.setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = sorted(set(args.setups) - set(SETUPS))
    if unknown:
        p.error(f"--setups {','.join(unknown)}: expected a subset of {','.join(SETUPS)}")
    try:
        names = [variant_name(v.strip()) for v in args.variants.split(",") if v.strip()]
    except KeyError as err:
        p.error(str(err.args[0]))
    args.variants = ["baseline"] + [v for v in dict.fromkeys(names) if v != "baseline"]
    try:
        args.reference = variant_name(args.reference)
    except KeyError as err:
        p.error(str(err.args[0]))
    if args.reference not in args.variants:
        args.variants.append(args.reference)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.fit_steps = [int(h) for h in args.fit_steps.split(",") if h.strip()]
    return args


def run_key(setup: str, seed: int, variant: str) -> str:
    return f"{setup}/seed{seed}/{variant}"


def fingerprint(spec: dict[str, Any]) -> str:
    """What makes a stored run reusable: everything in its spec but the thread count."""
    kept = {k: v for k, v in spec.items() if k not in ("threads", "name")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True).encode()).hexdigest()[:16]


def run_one(spec: dict[str, Any]) -> dict[str, Any]:
    """One run in a fresh Python process (its own clock and memory)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", json.dumps(spec)]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, check=False)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(_RESULT_TAG)]
    if proc.returncode != 0 or not lines:
        return {"name": spec["name"], "failed": f"exit {proc.returncode}"}
    return dict(json.loads(lines[-1][len(_RESULT_TAG):]))


def first_reaching(curve: list[dict[str, float]], target: float) -> dict[str, float] | None:
    """The first validation point at or above ``target`` (None: never)."""
    for point in curve:
        if point["val_psnr"] >= target:
            return point
    return None


def _paired(values: Sequence[float], reference: Sequence[float]) -> tuple[float, float]:
    d = np.asarray(values, np.float64) - np.asarray(reference, np.float64)
    sem = float(d.std(ddof=1) / math.sqrt(len(d))) if len(d) > 1 else float("nan")
    return float(d.mean()), sem


def summarise(runs: dict[str, dict[str, Any]], setup: str, seed: int, variants: Sequence[str],
              reference: str = "baseline") -> list[dict[str, Any]]:
    """One row per variant of ``setup``/``seed``, ``reference`` first: the numbers of the main table, each
    against ``reference`` (the target is its final val PSNR; the Δ are paired to its test PSNR)."""
    variants = [reference] + [v for v in variants if v != reference]
    base = runs.get(run_key(setup, seed, reference), {}).get("result")
    if not base or "failed" in base:
        return []
    target = base["curve"][-1]["val_psnr"]
    base_hit = first_reaching(base["curve"], target)
    assert base_hit is not None
    rows = []
    for variant in variants:
        entry = runs.get(run_key(setup, seed, variant))
        if entry is None:
            continue
        r = entry["result"]
        row: dict[str, Any] = {"variant": variant, "setup": setup, "seed": seed}
        if "failed" in r:
            rows.append({**row, "failed": r["failed"]})
            continue
        hit = first_reaching(r["curve"], target)
        final_test, base_test = r["test_final"], base["test_final"]
        eq = r["equal_time"]
        eq_test = eq["test"] or final_test
        row.update({
            "target_val_psnr": target,
            "final_val_psnr": r["curve"][-1]["val_psnr"],
            "best_val_psnr": max(p["val_psnr"] for p in r["curve"]),
            "steps_done": r["steps_done"],
            "diverged": r["diverged"],
            "s_per_iter": r["s_per_iter_median"],
            "train_s": r["train_s"],
            "iters_to_target": hit["iteration"] if hit else None,
            "seconds_to_target": hit["train_s"] if hit else None,
            "iter_speedup": base_hit["iteration"] / hit["iteration"] if hit and hit["iteration"] else None,
            "run_speedup": base["steps_done"] / hit["iteration"] if hit and hit["iteration"] else None,
            "time_speedup": base_hit["train_s"] / hit["train_s"] if hit and hit["train_s"] else None,
            "test_psnr_equal_iters": final_test["psnr_mean"],
            "test_ssim_equal_iters": final_test["ssim_mean"],
            "delta_equal_iters": _paired(final_test["psnr"], base_test["psnr"]),
            "equal_time_iteration": eq["iteration"],
            "equal_time_before_budget": eq["before_budget"],
            "test_psnr_equal_time": eq_test["psnr_mean"],
            "test_ssim_equal_time": eq_test["ssim_mean"],
            "delta_equal_time": _paired(eq_test["psnr"], base_test["psnr"]),
            "mean_image_val_psnr": r["mean_image_val_psnr"],
            "mean_image_test_psnr": r["mean_image_test_psnr"],
        })
        rows.append(row)
    return rows


def _num(value: float | None, fmt: str = ".2f") -> str:
    return "—" if value is None else format(value, fmt)


def format_tables(runs: dict[str, dict[str, Any]], setups: Sequence[str], seeds: Sequence[int],
                  variants: Sequence[str], reference: str = "baseline") -> str:
    """The Markdown tables: one per setup and seed, the fit sweep and the verdict per variant, every variant
    against ``reference`` (the baseline, or e.g. the recipe at a better β)."""
    out: list[str] = []
    header = ["variant", "final val PSNR (Δ)", f"iters to target (speed-up: vs {reference}'s first reach; vs its run)",
              "s to target (speed-up)",
              "s / iter", "test PSNR / SSIM, equal iters (Δ paired)", "test PSNR / SSIM, equal time (at iter; Δ)"]
    all_rows: list[dict[str, Any]] = []
    for setup in setups:
        for seed in seeds:
            rows = summarise(runs, setup, seed, variants, reference)
            if not rows:
                continue
            all_rows += rows
            base = rows[0]
            out += [f"**{setup}, seed {seed}** — target: {reference}'s final val PSNR "
                    f"{base['target_val_psnr']:.2f} dB after {base['steps_done']} iterations, "
                    f"{base['train_s']:.0f} s (mean image: val "
                    f"{base['mean_image_val_psnr']:.2f}, test {base['mean_image_test_psnr']:.2f} dB)", "",
                    "| " + " | ".join(header) + " |", "|---|" + "---:|" * (len(header) - 1)]
            for row in rows:
                if "failed" in row:
                    out.append(f"| {row['variant']} | failed ({row['failed']}) |" + " — |" * (len(header) - 2))
                    continue
                name = row["variant"] + (f" (diverged: {row['diverged']})" if row["diverged"] else "")
                if not row["diverged"] and row["steps_done"] != base["steps_done"]:
                    name += f" ({row['steps_done']} iterations: its equal-iterations column is at its end)"
                d_val = row["final_val_psnr"] - row["target_val_psnr"]
                if row["iters_to_target"] is None:
                    iters = secs = "not reached"
                else:
                    iters = (f"{row['iters_to_target']} (×{_num(row['iter_speedup'])}; "
                             f"×{_num(row['run_speedup'], '.1f')})")
                    secs = f"{row['seconds_to_target']:.0f} (×{_num(row['time_speedup'])})"
                d_it, s_it = row["delta_equal_iters"]
                d_t, s_t = row["delta_equal_time"]
                eq_note = "final" if row["equal_time_before_budget"] else f"it {row['equal_time_iteration']}"
                out.append(
                    f"| {name} | {row['final_val_psnr']:.2f} ({d_val:+.2f}) | {iters} | {secs} | "
                    f"{row['s_per_iter']:.3f} | {row['test_psnr_equal_iters']:.2f} / "
                    f"{row['test_ssim_equal_iters']:.3f} "
                    f"({d_it:+.2f} ± {s_it:.2f}) | {row['test_psnr_equal_time']:.2f} / "
                    f"{row['test_ssim_equal_time']:.3f} ({eq_note}; {d_t:+.2f} ± {s_t:.2f}) |")
            out.append("")
    sweep_lines = []
    for setup in setups:
        for seed in seeds:
            base = runs.get(run_key(setup, seed, "baseline"), {}).get("result") or {}
            previous = None
            for row in base.get("fit_sweep", []):
                gain = "—"
                if previous is not None and row["fit_s"] > previous["fit_s"]:
                    gain = f"{(row['psnr_mean'] - previous['psnr_mean']) / (row['fit_s'] - previous['fit_s']):.2f}"
                n = len(base["test_final"]["psnr"])
                sweep_lines.append(f"| {setup} | {seed} | {row['H']} | {row['psnr_mean']:.2f} | "
                                   f"{row['ssim_mean']:.3f} | {row['fit_s']:.2f} | {1000 * row['fit_s'] / n:.1f} | "
                                   f"{gain} |")
                previous = row
    if sweep_lines:
        out += ["**Test-time fit steps H on the baseline's final θ** (same test images; dB / s: PSNR gained per "
                "extra second of fitting over the row above)", "",
                "| setup | seed | H | test PSNR | SSIM | fit s | ms / image | dB / s |",
                "|---|---:|---:|---:|---:|---:|---:|---:|",
                *sweep_lines, ""]
    verdict = []
    for variant in [v for v in variants if v != reference]:
        rows = [r for r in all_rows if r["variant"] == variant and "failed" not in r]
        if not rows:
            continue
        wins = [r for r in rows if r["delta_equal_time"][0] > 2 * r["delta_equal_time"][1]
                and (r["time_speedup"] or 0) >= WIN_SPEEDUP]
        goal = [r for r in rows if (r["run_speedup"] or 0) >= 4 or r["delta_equal_iters"][0] >= 1.5]
        cells = ", ".join(f"{r['setup']}/s{r['seed']}" for r in rows)
        verdict.append(f"| {variant} | {describe_overrides(variant)} | {len(wins)} / {len(rows)} | "
                       f"{len(goal)} / {len(rows)} | {cells} |")
    if verdict:
        out += [f"**Verdict** (win: reaches the target ≥ {WIN_SPEEDUP:g}× sooner in wall seconds and a test PSNR at "
                f"equal wall time more than 2 s.e. above {reference}'s; "
                f"goal: target in ≤ 1/4 of {reference}'s run length or ≥ +1.5 dB test PSNR at equal iterations)", "",
                "| variant | overrides | wins | goal met | cells measured |", "|---|---|---:|---:|---|", *verdict, ""]
    return "\n".join(out)


def plot(runs: dict[str, dict[str, Any]], setups: Sequence[str], seeds: Sequence[int], variants: Sequence[str],
         path: Path) -> None:
    """Val PSNR vs iteration (left) and vs meta-training seconds (right), one row per setup."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = [s for s in setups if any(run_key(s, seed, "baseline") in runs for seed in seeds)]
    if not shown:
        return
    fig, axes = plt.subplots(len(shown), 2, figsize=(10, 3.4 * len(shown)), squeeze=False)
    colours = {v: f"C{i}" for i, v in enumerate(variants)}
    styles, names = ["-", "--", ":", "-."], ["solid", "dashed", "dotted", "dash-dot"]
    for row, setup in zip(axes, shown):
        mean_psnr = None
        for j, seed in enumerate(seeds):
            for variant in variants:
                r = runs.get(run_key(setup, seed, variant), {}).get("result")
                if not r or "failed" in r:
                    continue
                mean_psnr = r["mean_image_val_psnr"]
                it = [p["iteration"] for p in r["curve"]]
                sec = [p["train_s"] for p in r["curve"]]
                psnr = [p["val_psnr"] for p in r["curve"]]
                label = variant if j == 0 else None
                row[0].plot(it, psnr, styles[j % 4], color=colours[variant], label=label, lw=1.2)
                row[1].plot(sec, psnr, styles[j % 4], color=colours[variant], lw=1.2)
        for ax, xlabel in zip(row, ("meta-iteration", "meta-training wall seconds")):
            if mean_psnr is not None:
                ax.axhline(mean_psnr, color="grey", lw=0.8, ls=":")
            ax.set_xlabel(xlabel)
            ax.set_ylabel("val PSNR (dB)")
            ax.set_title(f"{setup}: " + ", ".join(f"seed {s} {names[j % 4]}" for j, s in enumerate(seeds))
                         + "; dotted grey: mean image", fontsize=9)
            ax.grid(alpha=0.3)
        row[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=70)
    plt.close(fig)


def cpu_model() -> str:
    """The CPU's model name, read as benchmarks/engine.py reads it (that file imported, not copied)."""
    import importlib.util

    import torch

    spec = importlib.util.spec_from_file_location("mednf_bench_engine", Path(__file__).with_name("engine.py"))
    assert spec is not None and spec.loader is not None
    module = sys.modules.get(spec.name) or importlib.util.module_from_spec(spec)
    if spec.name not in sys.modules:
        sys.modules[spec.name] = module  # its dataclasses look their module up there
        spec.loader.exec_module(module)
    return str(module.device_name(torch.device("cpu")))


def load_runs(path: Path) -> dict[str, dict[str, Any]]:
    if path.exists():
        return dict(json.loads(path.read_text(encoding="utf-8")).get("runs", {}))
    return {}


def save_runs(path: Path, runs: dict[str, dict[str, Any]], header: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({**header, "runs": runs}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    tmp.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.worker is not None:
        print(_RESULT_TAG + json.dumps(run_worker(json.loads(args.worker))), flush=True)
        return 0
    command = "python benchmarks/convergence.py " + shlex.join(argv if argv is not None else sys.argv[1:])
    header = {"date": datetime.date.today().isoformat(), "cpu": cpu_model(), "command": command.strip()}
    runs = load_runs(args.json)
    extra: dict[str, dict[str, Any]] = {}
    for path in args.include:
        extra.update(load_runs(path))
    if not args.report_only:
        for setup in args.setups:
            path = args.data_dir / SETUPS[setup]["file"]
            if not path.exists():
                print(f"error: {path} is missing (--data-dir)", file=sys.stderr)
                return 2
            for seed in args.seeds:
                for variant in args.variants:
                    base = runs.get(run_key(setup, seed, "baseline"), {}).get("result")
                    assert variant == "baseline" or base is not None  # the baseline runs first, or the loop ends
                    spec = {"name": f"{setup}/s{seed}/{variant}", "setup": setup, "seed": seed, "variant": variant,
                            "config": variant_config(setup, variant, args.steps, min(64, args.val_samples)),
                            "data": str(path), "val_every": args.val_every, "val_samples": args.val_samples,
                            "test_samples": args.test_samples, "threads": args.threads,
                            "equal_time_s": None if base is None or variant == "baseline" else base["train_s"],
                            "fit_steps": args.fit_steps if variant == "baseline" else []}
                    key, mark = run_key(setup, seed, variant), fingerprint(spec)
                    if runs.get(key, {}).get("fingerprint") == mark and "failed" not in runs[key]["result"]:
                        print(f"kept: {key}", file=sys.stderr)
                        continue
                    print(f"running: {key}", file=sys.stderr, flush=True)
                    start = time.perf_counter()
                    result = run_one(spec)
                    runs[key] = {"fingerprint": mark, "config": spec["config"], "overrides":
                                 describe_overrides(variant), "process_s": time.perf_counter() - start,
                                 "result": result}
                    save_runs(args.json, runs, header)
                    if variant == "baseline" and "failed" in result:
                        print(f"error: the baseline of {setup}/seed {seed} failed", file=sys.stderr)
                        return 1
    runs = {**extra, **runs}
    tables = format_tables(runs, args.setups, args.seeds, args.variants, args.reference)
    print(f"Date {header['date']} · CPU {header['cpu']} · torch threads {args.threads or 'default'}")
    print(f"Command: `{command.strip()}`")
    print()
    print(tables)
    if args.markdown is not None:
        args.markdown.write_text(tables + "\n", encoding="utf-8")
    if args.plot is not None:
        plot(runs, args.setups, args.seeds, args.variants, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
