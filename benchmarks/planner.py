"""Calibrate and check the memory planner (:mod:`mednf.engine.planner`) against measured peaks.

Usage::

    python benchmarks/planner.py calibrate [--quick]          # fit the model's coefficients, print the table
    python benchmarks/planner.py check                        # plan under budgets, run, compare peak with budget
    python benchmarks/planner.py measure --preset 2d-64 --size 64 --batch-size 24 --memory-budget 8GB --iters 3

Every measurement runs in a fresh subprocess (``probe``), so that one process's peak resident set
(``VmHWM`` from /proc/self/status, what the planner budgets on the CPU) belongs to one configuration. A
probe reports ``base`` (``VmRSS`` after imports and the random signals, before any engine tensor) and
``peak`` (``VmHWM`` after the work); ``peak - base`` is what the engine added.

calibrate
    For each configuration of a grid (several K, L, P, C, N, G, γ), one meta-iteration in micro-batches of
    m₁ and m₂ signals (the real code path: :meth:`MetaLearner.step` with ``micro_batch``), two iterations
    each (AdamW's moments exist from the first). The slope (peak₂ − peak₁)/(m₂ − m₁) is one signal's cost
    S_meta, the intercept the fixed cost F_meta. Least squares of S_meta on the model's three terms
    (inner graph, outer graph, per point) and of F_meta on |θ| give the coefficients; the table shows each
    configuration's measured / modelled ratio. The fit is calibrated the same way (batches of b₁ and b₂).
check
    For a few configurations and budgets: plan in the probe (``in_use`` = the probe's own resident set),
    run the planned meta-iterations and fit, and print the peak beside the budget.
measure
    The numbers of benchmarks/RESULTS.md: s/iteration and peak RSS of a preset at a batch size under a
    budget (or with ``--micro-batch``), random signals.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
_MIB = 2**20


def _status(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"{key} not in /proc/self/status")


def _cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.lower().startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


# ---------------------------------------------------------------------------------------------- probe (child)


def _engine_config(spec: dict[str, Any]):
    from mednf.engine.config import EngineConfig
    from mednf.engine.presets import get_preset

    if "preset" in spec:
        cfg = get_preset(spec["preset"])
    else:
        cfg = EngineConfig()
    return cfg.replace(field=spec.get("field", {}), meta=spec.get("meta", {}), fit=spec.get("fit", {}))


def probe(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in this (fresh) process; ``spec`` says what (see the callers)."""
    import torch

    from mednf.engine import field as nf
    from mednf.engine.fit import fit_batch, fit_latents
    from mednf.engine.memory import MemoryBudget, memory_in_use
    from mednf.engine.meta import MetaLearner
    from mednf.engine.planner import plan_memory

    torch.set_num_threads(spec.get("threads", torch.get_num_threads()))
    cfg = _engine_config(spec)
    spatial = tuple(spec["spatial"])
    batch = spec.get("batch", cfg.meta.batch_size)
    gen = torch.Generator().manual_seed(0)
    signals = torch.rand(batch, cfg.field.out_dims, *spatial, generator=gen)
    out: dict[str, Any] = {"base": _status("VmRSS"), "hwm_before": _status("VmHWM")}
    mode = spec["mode"]
    if mode == "meta":
        learner = MetaLearner(cfg.field, cfg.meta, seed=0)
        seconds = []
        for _ in range(spec.get("iters", 2)):
            started = time.perf_counter()
            learner.step(signals, micro_batch=spec.get("micro"))
            seconds.append(time.perf_counter() - started)
        out["seconds"] = seconds
    elif mode == "fit":
        params = nf.init_params(cfg.field, generator=gen)
        coords = nf.coordinate_grid(spatial)
        ids = torch.arange(batch, dtype=torch.int64)
        started = time.perf_counter()
        with torch.no_grad():
            if spec.get("chunk_rows", "default") == "default":
                fit_latents(params, signals, cfg.field, cfg.fit, with_ssim=True)  # fit.batch_size = batch
            else:
                fit_batch(params, nf.to_points(signals), coords, cfg.field, cfg.fit, ids,
                          chunk_rows=spec["chunk_rows"])
        out["seconds"] = [time.perf_counter() - started]
    elif mode == "planned":  # plan like a build does, then run what was planned
        budget = MemoryBudget(int(spec["budget"]), "probe")
        plan = plan_memory(cfg, spatial, budget=budget, in_use=memory_in_use())
        out["plan"] = plan.to_dict()
        learner = MetaLearner(cfg.field, cfg.meta, seed=0)
        seconds = []
        for _ in range(spec.get("iters", 2)):
            started = time.perf_counter()
            learner.step(signals, micro_batch=plan.micro_batch)
            seconds.append(time.perf_counter() - started)
        out["seconds"] = seconds
        out["peak_meta"] = _status("VmHWM")
        fit_cfg = cfg.fit.__class__(**{**cfg.fit.__dict__, "batch_size": plan.fit_batch})
        fit_signals = torch.rand(spec.get("fit_signals", 2 * plan.fit_batch), cfg.field.out_dims, *spatial,
                                 generator=gen)
        fit_latents(learner.detached_params(), fit_signals, cfg.field, fit_cfg, with_ssim=True)
    else:
        raise SystemExit(f"unknown probe mode {mode!r}")
    out["peak"] = _status("VmHWM")
    out["end"] = _status("VmRSS")
    return out


def run_probe(spec: dict[str, Any], timeout: float = 1800) -> dict[str, Any]:
    """``probe(spec)`` in a fresh interpreter; its JSON line back."""
    proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "probe", json.dumps(spec)],
                          capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT)
    if proc.returncode != 0:
        raise RuntimeError(f"probe {spec} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---------------------------------------------------------------------------------------------- calibrate


def _units(spec: dict[str, Any]) -> dict[str, float]:
    """The model's regressors of one configuration (module docstring of mednf.engine.planner)."""
    from mednf.engine.context import context_size
    from mednf.engine.planner import theta_bytes

    cfg = _engine_config(spec)
    f, m = cfg.field, cfg.meta
    N = int(np.prod(spec["spatial"]))
    n = N if m.context_ratio >= 1 else context_size(N, m.context_ratio)
    U = f.hidden_dim * f.num_sine_layers
    G = 1 if m.first_order else m.inner_steps
    return {"inner": G * n * U, "outer": N * U, "point": N * (f.in_dims + f.out_dims), "theta": theta_bytes(f),
            "fit_signal": N * f.hidden_dim, "fit_point": N * (1 + f.out_dims), "N": N, "U": U}


def _grid(quick: bool) -> list[dict[str, Any]]:
    def cfg(K, L, P, side, G, gamma, C=2, D=1, first_order=False):
        return {"field": {"in_dims": C, "out_dims": D, "num_layers": K, "hidden_dim": L, "latent_dim": P},
                "meta": {"inner_steps": G, "context_ratio": gamma, "first_order": first_order},
                "spatial": [side] * C}

    grid = [
        cfg(6, 64, 128, 64, 1, 0.25), cfg(6, 64, 128, 64, 4, 0.25),
        cfg(6, 128, 256, 64, 1, 0.25), cfg(6, 128, 256, 64, 4, 0.25),
        cfg(15, 256, 2048, 32, 2, 0.25), cfg(15, 256, 2048, 32, 6, 0.25),
        cfg(8, 128, 512, 64, 2, 1.0), cfg(4, 64, 16384, 16, 2, 0.5),
        cfg(6, 64, 256, 16, 2, 0.25, C=3), cfg(8, 64, 64, 4096, 3, 1.0, C=1),
        cfg(6, 128, 256, 64, 3, 0.25, D=3), cfg(15, 256, 2048, 64, 10, 0.25, first_order=True),
        cfg(15, 256, 2048, 64, 10, 0.25),
    ]
    return grid[:4] + grid[-1:] if quick else grid


def _nnls(rows: list[dict[str, float]], keys: list[str], target: str) -> dict[str, float]:
    """Non-negative least squares of ``target`` on ``keys``, each row weighted by 1/target (relative error)."""
    from scipy.optimize import nnls

    A = np.array([[r[k] for k in keys] for r in rows], dtype=np.float64)
    y = np.array([r[target] for r in rows], dtype=np.float64)
    w = 1.0 / y
    scale = A.max(axis=0)
    coef, _ = nnls((A / scale) * w[:, None], y * w)
    return {k: float(c / s) for k, c, s in zip(keys, coef, scale)}


def _micro_batches(units: dict[str, float]) -> list[int]:
    big = units["inner"] * 30 > 600 * _MIB  # ≥ 0.6 GB per signal: keep the calibration run short
    return [1, 2, 4, 6] if big else [1, 2, 4]


def calibrate(args: argparse.Namespace) -> None:
    """Measure (peak − base) at several micro-batches per configuration; fit the model on the totals."""
    from mednf.engine.planner import (
        CPU_CHUNK_ROWS,
        CPU_MODEL,
        fit_fixed_bytes,
        fit_signal_bytes,
        meta_fixed_bytes,
        meta_signal_bytes,
    )

    meta_rows, fit_rows = [], []
    if args.from_json:  # re-tabulate earlier measurements against the current model
        saved = json.loads(Path(args.from_json).read_text())
        meta_rows, fit_rows = saved["meta"], saved["fit"]
    for spec in [] if args.from_json else _grid(args.quick):
        units = _units(spec)
        ms = _micro_batches(units)
        for m in ms:
            res = run_probe({**spec, "mode": "meta", "batch": max(ms), "micro": m, "iters": 2})
            meta_rows.append({**units, "m": m, "B": max(ms), "peak": res["peak"] - res["base"], "spec": spec,
                              "seconds": min(res["seconds"])})
            print(f"meta {_name(spec)} m={m}: {meta_rows[-1]['peak'] / _MIB:.0f} MiB", flush=True)
        if spec["meta"].get("first_order"):
            continue
        for b in (1, 8, 32):
            res = run_probe({**spec, "mode": "fit", "batch": b,
                             "fit": {"batch_size": b, "steps": 2, "grad_rescale": True}})
            fit_rows.append({**units, "b": b, "peak": res["peak"] - res["base"], "spec": spec})
            print(f"fit  {_name(spec)} b={b}: {fit_rows[-1]['peak'] / _MIB:.0f} MiB", flush=True)
    # regressors of the totals: peak − base = θ-term + runtime + m · (inner, outer, point terms)
    for r in meta_rows:
        r.update(m_inner=r["m"] * r["inner"], m_outer=r["m"] * r["outer"], m_point=r["m"] * r["point"], one=1.0)
    for r in fit_rows:
        chunk = CPU_CHUNK_ROWS * r["U"]
        r.update(b_signal=r["b"] * r["fit_signal"], b_point=r["b"] * r["fit_point"], chunk=chunk, one=1.0)
    second = [r for r in meta_rows if not r["spec"]["meta"].get("first_order")]
    coef = _nnls(second, ["m_inner", "m_outer", "m_point", "theta", "one"], "peak")
    fcoef = _nnls(fit_rows, ["b_signal", "b_point", "chunk", "theta", "one"], "peak")
    print("\nnon-negative least squares on relative error, meta:", {k: round(v, 2) for k, v in coef.items()})
    print("non-negative least squares on relative error, fit:", {k: round(v, 2) for k, v in fcoef.items()})
    print("\nplanner model (mednf.engine.planner.CPU_MODEL) against every measurement, margin excluded:")
    print("\n| configuration | N | G·n | micro-batch m | measured peak − base | modelled | measured / modelled |")
    print("|---|---|---|---|---|---|---|")
    worst = 0.0
    for r in meta_rows:
        cfg = _engine_config(r["spec"])
        model = meta_fixed_bytes(cfg.field, r["N"], r["B"]) + r["m"] * meta_signal_bytes(cfg.field, cfg.meta, r["N"])
        ratio = r["peak"] / model
        worst = max(worst, ratio)
        print(f"| {_name(r['spec'])} | {r['N']} | {r['inner'] // r['U']} | {r['m']} | "
              f"{r['peak'] / _MIB:.0f} MiB | {model / _MIB:.0f} MiB | {ratio:.2f} |")
    print("\n| configuration (fit, H = 2, rescaling) | N | batch b | measured peak − base | modelled "
          "| measured / modelled |")
    print("|---|---|---|---|---|---|")
    fworst = 0.0
    for r in fit_rows:
        cfg = _engine_config(r["spec"])
        model = (fit_fixed_bytes(cfg.field, CPU_CHUNK_ROWS, r["b"])
                 + r["b"] * fit_signal_bytes(cfg.field, r["N"], CPU_CHUNK_ROWS))
        ratio = r["peak"] / model
        fworst = max(fworst, ratio)
        print(f"| {_name(r['spec'])} | {r['N']} | {r['b']} | {r['peak'] / _MIB:.0f} MiB | {model / _MIB:.0f} MiB | "
              f"{ratio:.2f} |")
    print(f"\nworst measured / modelled: meta {worst:.2f}, fit {fworst:.2f} (CPU_MODEL.margin = {CPU_MODEL.margin})")
    if args.json and not args.from_json:
        Path(args.json).write_text(json.dumps({"meta": meta_rows, "fit": fit_rows, "coef": coef, "fit_coef": fcoef},
                                              indent=1, default=str))


def _name(spec: dict[str, Any]) -> str:
    f, m = spec["field"], spec["meta"]
    return (f"C{f['in_dims']} D{f['out_dims']} K{f['num_layers']} L{f['hidden_dim']} P{f['latent_dim']} "
            f"G{m['inner_steps']} γ{m['context_ratio']:g}" + (" first-order" if m.get("first_order") else ""))


# ---------------------------------------------------------------------------------------------- check


def check(args: argparse.Namespace) -> None:
    cases = [
        ({"field": {"num_layers": 6, "hidden_dim": 64, "latent_dim": 128},
          "meta": {"inner_steps": 3, "context_ratio": 0.25, "batch_size": 16}, "spatial": [64, 64]}, [600, 900]),
        ({"field": {"num_layers": 15, "hidden_dim": 256, "latent_dim": 2048},
          "meta": {"inner_steps": 10, "context_ratio": 0.25, "batch_size": 24}, "spatial": [64, 64]},
         [3000, 8e9 / _MIB]),
    ]
    print("| config | budget | micro-batch | fit batch | estimated meta peak | measured peak | peak / budget |")
    print("|---|---|---|---|---|---|---|")
    for spec, budgets in cases:
        for mib in budgets:
            res = run_probe({**spec, "mode": "planned", "budget": int(mib * _MIB), "iters": 1, "fit_signals": 8})
            plan = res["plan"]
            print(f"| {json.dumps(spec['field'])} B{spec['meta']['batch_size']} | {mib:.0f} MiB | "
                  f"{plan['micro_batch']} | {plan['fit_batch']} | {plan['estimated_meta_peak_bytes'] / _MIB:.0f} MiB | "
                  f"{res['peak'] / _MIB:.0f} MiB | {res['peak'] / (mib * _MIB):.2f} |", flush=True)


# ---------------------------------------------------------------------------------------------- measure


def measure(args: argparse.Namespace) -> None:
    import torch

    from mednf.engine.memory import format_bytes, resolve_budget
    from mednf.engine.meta import MetaLearner
    from mednf.engine.planner import plan_memory

    cfg = _engine_config({"preset": args.preset, "meta": {"batch_size": args.batch_size}})
    spatial = (args.size,) * cfg.field.in_dims
    budget = resolve_budget(args.memory_budget, "cpu")
    gen = torch.Generator().manual_seed(0)
    plan = plan_memory(cfg, spatial, budget=budget)
    micro = args.micro_batch or plan.micro_batch
    print(plan.describe(), flush=True)
    learner = MetaLearner(cfg.field, cfg.meta, seed=0)
    seconds = []
    for i in range(args.iters):
        signals = torch.rand(args.batch_size, cfg.field.out_dims, *spatial, generator=gen)
        started = time.perf_counter()
        stats = learner.step(signals, micro_batch=micro)
        seconds.append(time.perf_counter() - started)
        print(f"iteration {i}: {seconds[-1]:.2f} s, loss {stats['loss']:.5f}, "
              f"peak RSS {format_bytes(_status('VmHWM'))}", flush=True)
    row = {"date": datetime.date.today().isoformat(), "cpu": _cpu_name(), "threads": torch.get_num_threads(),
           "preset": args.preset, "B": args.batch_size, "budget": str(budget), "micro_batch": micro,
           "s_per_iter_median": statistics.median(seconds), "s_per_iter": seconds,
           "peak_rss_bytes": _status("VmHWM"), "estimated_peak_bytes": plan.meta_peak}
    print(json.dumps(row))


# ---------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    sub = p.add_subparsers(dest="command", required=True)
    c = sub.add_parser("calibrate")
    c.add_argument("--quick", action="store_true", help="five configurations instead of the whole grid")
    c.add_argument("--json", help="write every measurement here")
    c.add_argument("--from-json", help="no measurements: tabulate the ones saved by --json against the current model")
    sub.add_parser("check")
    m = sub.add_parser("measure")
    m.add_argument("--preset", default="2d-64")
    m.add_argument("--size", type=int, default=64)
    m.add_argument("--batch-size", type=int, default=24)
    m.add_argument("--memory-budget", default=None)
    m.add_argument("--micro-batch", type=int, default=None, help="override the planner's choice")
    m.add_argument("--iters", type=int, default=3)
    pr = sub.add_parser("probe")
    pr.add_argument("spec")
    args = p.parse_args(argv)
    if args.command == "probe":
        print(json.dumps(probe(json.loads(args.spec))))
    elif args.command == "calibrate":
        calibrate(args)
    elif args.command == "check":
        check(args)
    else:
        measure(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
