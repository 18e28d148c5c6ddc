"""The README's first run and the CPU presets, measured: every row is one `mednf build` in a fresh process.

Two suites, each a dict of name → CLI arguments of `mednf build`, run one at a time (never in parallel:
two torch processes on 2 cores make each many times slower):

- ``phantom`` (default): PhantomNF (`builders/phantomnf.toml`) with named alternatives. ``before`` spells
  out the builder file as committed before issue #12 (cpu-small, P = 256, α = 0.1, 250 iterations),
  ``after`` is the builder file as it is now (no overrides). Table: settings, wall s, CPU s (user + sys of
  the build process), test PSNR / SSIM, the test split's mean-image baseline PSNR, and the share of the test
  lesions that are distinct, correctly placed spots in the reconstructions (:mod:`mednf.sources.phantom_lesions`).
- ``presets``: one CPU preset per dimension on real (2D, 3D) and synthetic (1D) data: PneumoniaMNIST 28²
  and BreastMNIST 64² with ``cpu-small``, AdrenalMNIST3D 28³ with ``cpu-small-3d``, and a synthetic
  ECG-like table (written by this script, see :func:`write_synthetic_ecg`) with ``cpu-small-1d``. Table:
  dataset, preset, steps, wall s, CPU s, test PSNR, the mean-image and zero-latent (φ = 0) baselines, and
  whether the latents learn per sample (test PSNR ≥ the better baseline + 1 dB).

Wall time depends on what else runs on the machine; CPU s does much less. ``--threads N`` sets
``OMP_NUM_THREADS`` for the builds: on a loaded 2-core machine ``--threads 1`` avoids the oversubscription
that makes 2-thread torch many times slower, and CPU s / 2 then estimates the wall time of a 2-thread
build on an idle machine (an optimistic bound: it assumes perfect scaling over both cores).

Usage::

    python benchmarks/first_run.py                                  # before, after and the alternatives
    python benchmarks/first_run.py --only before,after --threads 1
    python benchmarks/first_run.py --suite presets --medmnist-root ../shared/data/medmnist --threads 1
    python benchmarks/first_run.py --max-samples 64 --only after    # a quick probe (first 64 of each split)

Outputs go under ``--out`` (default ``/tmp/mednf_first_run``): one dataset folder per row, the build's log
beside it, and ``<suite>.md`` with the table.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

# PhantomNF as committed before issue #12 (builders/phantomnf.toml at fce5cdc): cpu-small with P = 256 and
# α = 0.1, spelled out so that the row keeps its meaning whatever the builder file or the preset say now.
BEFORE = [
    "--preset", "cpu-small",
    "--set", "field.num_layers=6", "--set", "field.hidden_dim=64", "--set", "field.latent_dim=256",
    "--set", "field.omega_first=30.0",
    "--set", "meta.inner_steps=3", "--set", "meta.inner_lr=0.1", "--set", "meta.context_ratio=0.25",
    "--set", "meta.meta_lr=3e-4", "--set", "meta.batch_size=16", "--set", "meta.steps=250",
    "--set", "meta.lr_schedule=constant",
    "--set", "fit.steps=10", "--set", "fit.lr=0.1", "--set", "fit.grad_rescale=true",
    "--set", "build.checkpoint_every=25", "--set", "build.val_every=50", "--set", "build.val_samples=32",
]

PHANTOM = {
    "before": BEFORE,
    "G5 H20": [*BEFORE, "--set", "meta.inner_steps=5", "--set", "fit.steps=20"],
    "G10 γ.1 H20": [*BEFORE, "--set", "meta.inner_steps=10", "--set", "meta.context_ratio=0.1",
                    "--set", "fit.steps=20"],
    "G10 γ.1 α.3 H20": [*BEFORE, "--set", "meta.inner_steps=10", "--set", "meta.context_ratio=0.1",
                        "--set", "meta.inner_lr=0.3", "--set", "fit.lr=0.3", "--set", "fit.steps=20"],
    "after": [],  # builders/phantomnf.toml as it is (G15 γ .1 H30)
}

ECG_LENGTH = 187  # MIT-BIH beat length
ECG_SPLITS = {"train": 2000, "val": 200, "test": 400}


def presets_suite(root: Path, medmnist_root: str) -> dict[str, list[str]]:
    mm = ["--medmnist-root", medmnist_root, "--no-download"]
    ecg = write_synthetic_ecg(root / "synthecg")
    return {
        "PneumoniaMNIST 28²": ["pneumonianf", "--size", "28", "--preset", "cpu-small", *mm],
        "BreastMNIST 64²": ["breastnf", "--size", "64", "--preset", "cpu-small", *mm],
        "AdrenalMNIST3D 28³": ["adrenalnf3d", "--size", "28", "--preset", "cpu-small-3d", *mm],
        "synthetic ECG 1D (187)": [str(ecg), "--preset", "cpu-small-1d"],
    }


def write_synthetic_ecg(folder: Path, seed: int = 0) -> Path:
    """A synthetic ECG-like table (there is no real 1D file here): ``signals`` [N, 187] in [0, 1] and
    ``label`` [N] (0 normal, 1 wide QRS, 2 inverted T, 3 premature beat), and a ``kind = "table1d"``
    builder file beside it. Each beat is a sum of Gaussian bumps (P, Q, R, S, T) with per-beat jitter in
    time, width and height, a slow baseline wander and a little noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n = sum(ECG_SPLITS.values())
    t = np.linspace(0.0, 1.0, ECG_LENGTH)
    labels = rng.integers(0, 4, size=n)
    signals = np.empty((n, ECG_LENGTH))
    for i, label in enumerate(labels):
        shift = rng.normal(0, 0.02) - (0.12 if label == 3 else 0.0)  # premature: everything earlier
        qrs = rng.uniform(0.008, 0.012) * (2.2 if label == 1 else 1.0)  # wide QRS
        t_amp = rng.uniform(0.15, 0.3) * (-1.0 if label == 2 else 1.0)  # inverted T
        waves = [  # (centre, width, height)
            (0.20 + shift, rng.uniform(0.015, 0.025), rng.uniform(0.06, 0.12)),  # P
            (0.29 + shift, qrs, -rng.uniform(0.05, 0.15)),  # Q
            (0.32 + shift, qrs, rng.uniform(0.7, 1.0)),  # R
            (0.35 + shift, qrs, -rng.uniform(0.1, 0.25)),  # S
            (0.55 + shift + rng.normal(0, 0.02), rng.uniform(0.035, 0.05), t_amp),  # T
        ]
        x = sum(h * np.exp(-0.5 * ((t - c) / w) ** 2) for c, w, h in waves)
        x += rng.uniform(0, 0.05) * np.sin(2 * np.pi * (rng.uniform(0.2, 0.8) * t + rng.uniform(0, 1)))
        signals[i] = x + rng.normal(0, 0.01, ECG_LENGTH)
    lo, hi = signals.min(), signals.max()
    signals = ((signals - lo) / (hi - lo)).astype(np.float32)
    np.savez(folder / "synthecg.npz", signals=signals, label=labels.astype(np.int64))
    builder = folder / "synthecg.toml"
    builder.write_text(f"""# Synthetic ECG-like beats written by benchmarks/first_run.py (write_synthetic_ecg, seed {seed}).
name = "SynthECGNF"
description = "synthetic ECG-like beats (P-QRS-T bumps, jitter, wander, noise)"
modality = "ECG (synthetic)"
seed = 0

[source]
kind = "table1d"
path = "synthecg.npz"
dims = 1
size = {ECG_LENGTH}
channels = 1
label_column = "label"
normalise = "none"
split_ratio = [{ECG_SPLITS['train'] / n}, {ECG_SPLITS['val'] / n}, {ECG_SPLITS['test'] / n}]

[labels]
task = "multi-class"
names = ["normal", "wide QRS", "inverted T", "premature"]

[splits]
train = {ECG_SPLITS['train']}
val = {ECG_SPLITS['val']}
test = {ECG_SPLITS['test']}

[engine]
preset = "cpu-small-1d"
""", encoding="utf-8")  # noqa: E501 (the builder file's first line is one comment)
    return builder


def run_build(name: str, args: list[str], out: Path, threads: int | None, extra: list[str]) -> dict:
    """One build in a fresh process: wall and CPU seconds (user + sys of the child) and its manifest."""
    target = out / name.replace(" ", "_").replace("²", "2").replace("³", "3").replace("(", "").replace(")", "")
    if args and not args[0].startswith("-"):
        builder, args = args[0], args[1:]
    else:
        builder = "phantomnf"
    cmd = [sys.executable, "-m", "mednf.cli", "build", builder, "--out", str(target), "--quiet", "--restart",
           *args, *extra]
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with open(str(target) + ".log", "w", encoding="utf-8") as log:
        done = subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, check=False)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"{name}: `{' '.join(cmd)}` failed ({done.returncode}); see {target}.log")
    manifest = json.loads((target / "mednf.json").read_text(encoding="utf-8"))
    return {"name": name, "cmd": cmd, "wall": wall, "cpu": cpu, "manifest": manifest, "path": target}


def settings_of(manifest: dict) -> str:
    e = manifest["engine"]
    f, m, t = e["field"], e["meta"], e["fit"]
    omega = f"ω {f['omega_first']:g}" + (f"→{f['omega_last']:g}"
                                          if f["omega_last"] not in (None, f["omega_first"]) else "")
    prec = "" if f["precision"] == "fp32" else f" {f['precision']}"
    return (f"K{f['num_layers']} L{f['hidden_dim']} P{f['latent_dim']} {omega}, "
            f"G{m['inner_steps']} α {m['inner_lr']:g} "
            f"γ {m['context_ratio']:g}, β {m['meta_lr']:g} {m['lr_schedule']}, B{m['batch_size']}, "
            f"{m['steps']} it, H{t['steps']} α {t['lr']:g}{prec}")


def lesion_score(dataset: Path) -> dict:
    """How many of the test split's lesions are distinct, correctly placed spots in the reconstructions
    (:mod:`mednf.sources.phantom_lesions`; the lesions are redrawn from the build's seed)."""
    import mednf
    from mednf.sources.phantom_lesions import score_lesions
    from mednf.sources.phantoms import draw_phantoms

    ds = mednf.load(dataset, "test")
    seed = ds.manifest.builder["seed"] * 1000 + 2  # the test split's seed (mednf.sources.phantoms.phantom_source)
    truth, _, lesions = draw_phantoms(ds.manifest.builder["splits"]["test"], ds.native_size[0], seed)
    picked = ds.source_index
    recon = ds.decode().numpy()[:, 0].astype(np.float64)  # [n, H, W]
    return score_lesions(recon, truth[picked, 0].astype(np.float64), [lesions[i] for i in picked]).as_dict()


def table(suite: str, rows: list[dict]) -> str:
    if suite == "phantom":
        lines = [("| name | settings | wall s | CPU s | CPU s / 2 | meta s | fit s | test PSNR | test SSIM "
                  "| mean-image PSNR | distinct lesions | images with every lesion distinct |"),
                 "|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            m = r["manifest"]
            test = m["splits"]["test"]
            score = lesion_score(r["path"])
            lines.append(f"| {r['name']} | {settings_of(m)} | {r['wall']:.0f} | {r['cpu']:.0f} | {r['cpu'] / 2:.0f} | "
                         f"{m['meta_training']['seconds']:.0f} | {m['fit']['seconds']:.0f} | {test['psnr_mean']:.2f} | "
                         f"{test['ssim_mean']:.3f} | {test['baselines']['mean_image_psnr']:.2f} | "
                         f"{score['distinct']:.1%} of {score['lesions']} | {score['images_all_distinct']:.1%} |")
        return "\n".join(lines)
    lines = ["| dataset | preset | settings | steps | wall s | CPU s | test PSNR | test SSIM | mean-image PSNR "
             "| zero-latent PSNR | learns |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        m = r["manifest"]
        test = m["splits"]["test"]
        base = test["baselines"]
        ssim = f"{test['ssim_mean']:.3f}" if test.get("ssim_mean") is not None else "—"
        learns = test["psnr_mean"] >= max(base["mean_image_psnr"], base["zero_latent_psnr"]) + 1.0
        lines.append(f"| {r['name']} | {m['builder']['preset']} | {settings_of(m)} | {m['engine']['meta']['steps']} | "
                     f"{r['wall']:.0f} | {r['cpu']:.0f} | {test['psnr_mean']:.2f} | {ssim} | "
                     f"{base['mean_image_psnr']:.2f} | {base['zero_latent_psnr']:.2f} | {'yes' if learns else 'no'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--suite", choices=("phantom", "presets"), default="phantom")
    parser.add_argument("--only", help="comma-separated row names (default: all)")
    parser.add_argument("--out", type=Path, default=Path("/tmp/mednf_first_run"))
    parser.add_argument("--threads", type=int, help="OMP_NUM_THREADS of the builds (default: torch's, all cores)")
    parser.add_argument("--max-samples", type=int, help="first N samples of each split (quick probes)")
    parser.add_argument("--medmnist-root", default=os.environ.get("MEDMNIST_ROOT", "../shared/data/medmnist"))
    opts = parser.parse_args()
    opts.out.mkdir(parents=True, exist_ok=True)
    suite = PHANTOM if opts.suite == "phantom" else presets_suite(opts.out, opts.medmnist_root)
    names = [n.strip() for n in opts.only.split(",")] if opts.only else list(suite)
    unknown = [n for n in names if n not in suite]
    if unknown:
        raise SystemExit(f"unknown row(s) {unknown}: expected some of {list(suite)}")
    extra = ["--max-samples", str(opts.max_samples)] if opts.max_samples else []
    rows = []
    for name in names:
        row = run_build(name, suite[name], opts.out, opts.threads, extra)
        print(f"{name}: {row['wall']:.0f} s wall, {row['cpu']:.0f} s CPU, test "
              f"{row['manifest']['splits']['test']['psnr_mean']:.2f} dB", file=sys.stderr, flush=True)
        rows.append(row)
    text = table(opts.suite, rows)
    threads = opts.threads or "torch default"
    header = (f"`python benchmarks/first_run.py {' '.join(sys.argv[1:])}` · threads: {threads} · "
              f"{time.strftime('%Y-%m-%d')}\n\n")
    (opts.out / f"{opts.suite}.md").write_text(header + text + "\n", encoding="utf-8")
    print(header + text)


if __name__ == "__main__":
    main()
