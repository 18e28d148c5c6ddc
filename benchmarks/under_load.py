"""The engine's speed on an idle machine and beside a competing CPU job, for OpenMP waiting settings and
thread counts.

Usage::

    python benchmarks/under_load.py --rounds 2 --json out.json

Each variant runs ``benchmarks/engine.py`` (``--preset cpu-small --size 28``) in a fresh process, whose
environment sets how OpenMP threads wait (read by libgomp when torch loads it) and with ``--threads``: "free"
is what a mednf command takes without ``--threads`` (:func:`mednf.openmp.free_cores`, sampled just before
the process starts, the competing job already running). "loaded" runs the same command while one other process
spins on one core (``python -c "while True: pass"``), as a notebook or a DataLoader worker would. Variants
run interleaved, round after round, so drifts of the shared machine touch all of them alike; the table
gives the median seconds per meta-iteration and fit signals per second of each, and their ratios to the
first variant in the same condition.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ENGINE = Path(__file__).with_name("engine.py")
VARIANTS: dict[str, dict[str, str]] = {  # "threads": "free" = the cores other processes leave free, as the CLI
    "before: libgomp default (300k spins), all cores": {"GOMP_SPINCOUNT": "300000"},
    "passive, all cores": {"OMP_WAIT_POLICY": "PASSIVE"},
    "spin 1k, all cores": {"GOMP_SPINCOUNT": "1000"},
    "spin 10k, all cores": {"GOMP_SPINCOUNT": "10000"},
    "libgomp default, 1 thread": {"GOMP_SPINCOUNT": "300000", "threads": "1"},
    "spin 1k, free cores": {"GOMP_SPINCOUNT": "1000", "threads": "free"},
    "mednf default (free cores)": {"threads": "free"},
}


def run_engine(variant: dict[str, str], args: list[str]) -> dict:
    """One engine benchmark in a fresh process; its JSON numbers (and the thread count it ran with)."""
    from mednf.openmp import free_cores

    env_extra = {k: v for k, v in variant.items() if k != "threads"}
    threads = variant.get("threads")
    if threads == "free":
        threads = str(free_cores())  # sampled now, as `mednf build` does when it starts
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "r.json"
        env = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_NUM_THREADS")}
        env.update(env_extra)
        subprocess.run([sys.executable, str(ENGINE), *args, *(["--threads", threads] if threads else []),
                        "--json", str(out)], env=env, check=True, capture_output=True, text=True)
        numbers = json.loads(out.read_text())
        numbers["threads"] = threads or "all"
        return numbers


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--iters", type=int, default=15)
    p.add_argument("--fit-signals", type=int, default=64)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), help="names from VARIANTS")
    p.add_argument("--json", type=Path)
    a = p.parse_args()
    args = ["--preset", "cpu-small", "--size", "28", "--iters", str(a.iters), "--warmup", "3",
            "--fit-signals", str(a.fit_signals)]
    results: dict[str, dict[str, list[dict]]] = {"idle": {v: [] for v in a.variants},
                                                 "loaded": {v: [] for v in a.variants}}
    for r in range(a.rounds):
        for condition in ("idle", "loaded"):
            spinner = (subprocess.Popen([sys.executable, "-c", "while True: pass"]) if condition == "loaded"
                       else None)
            try:
                time.sleep(0.5 if spinner else 0)
                for name in a.variants:
                    t0 = time.perf_counter()
                    numbers = run_engine(VARIANTS[name], args)
                    numbers["wall_s"] = time.perf_counter() - t0
                    results[condition][name].append(numbers)
                    print(f"round {r + 1} {condition:6s} {name:45s} meta {numbers['meta']['median_s']:.3f} s/it  "
                          f"fit {numbers['fit']['signals_per_s']:.1f}/s  threads {numbers['threads']}  "
                          f"({numbers['wall_s']:.0f} s)", flush=True)
            finally:
                if spinner is not None:
                    spinner.kill()
                    spinner.wait()
    print()
    print("| condition | variant | meta s/it (median of rounds) | × first | fit signals/s | × first |")
    print("|---|---|---|---|---|---|")
    for condition, by_variant in results.items():
        base = None
        for name, runs in by_variant.items():
            meta = statistics.median(x["meta"]["median_s"] for x in runs)
            fit = statistics.median(x["fit"]["signals_per_s"] for x in runs)
            base = base or (meta, fit)
            print(f"| {condition} | {name} | {meta:.3f} | {meta / base[0]:.2f} | {fit:.1f} | {fit / base[1]:.2f} |")
    if a.json:
        a.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
