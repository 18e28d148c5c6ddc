"""Classification on latents vs pixels (MedFuncta Table 4 style): k-NN (k = 1, 3) and the 3-layer MLP.

Usage::

    python benchmarks/classify.py                                   # PneumoniaNF 28² + BreastNF 64², cpu-small
    python benchmarks/classify.py --threads 1                       # on a busy shared CPU (RESULTS.md)
    python benchmarks/classify.py --datasets breastnf --epochs 10   # a quicker look
    python benchmarks/classify.py --build-only                      # only build (or confirm) the datasets

(1) Builds each dataset from the shared MedMNIST files with a small CPU preset (default ``cpu-small``:
K6 L64 P128, 300 meta-iterations, H = 10) into ``--out/<Name>`` — a complete build with the same settings
is reused (``mednf.building.pipeline`` confirms it), an interrupted one resumes; (2) runs
:func:`mednf.tasks.classify.classify` with every model on latents and pixels; (3) prints one Markdown section per
dataset with the date, device, configuration and command. ``--json FILE`` also writes the reports as JSON.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import torch

from mednf.building.pipeline import BuildOptions, build

ROOT = Path(__file__).resolve().parents[1]
SHARED_MEDMNIST = Path(os.environ.get("MEDNF_TEST_MEDMNIST", ROOT.parent / "shared/data/medmnist"))
# builder → image size used here (PneumoniaMNIST at 28² is the shared file pneumoniamnist.npz)
DATASETS = {"pneumonianf": 28, "breastnf": 64}


def build_dataset(builder: str, out: Path, preset: str, medmnist_root: Path, steps: int | None) -> tuple[Path, float]:
    """Build (or confirm / resume) one dataset; returns its directory and the wall time of this call."""
    overrides = {"meta": {"steps": steps}} if steps else {}
    started = time.perf_counter()
    path = build(builder, BuildOptions(out=out, size=DATASETS[builder], preset=preset, medmnist_root=medmnist_root,
                                       download=False, progress=False, overrides=overrides))
    return path, time.perf_counter() - started


def device_name() -> str:
    cpu = platform.processor() or platform.machine()
    return f"CPU, {os.cpu_count()} cores ({cpu}), {torch.get_num_threads()} torch thread(s), torch {torch.__version__}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", choices=sorted(DATASETS), default=list(DATASETS))
    parser.add_argument("--out", type=Path, default=Path("/tmp/mednf-bench"))
    parser.add_argument("--preset", default="cpu-small")
    parser.add_argument("--steps", type=int, help="meta-iterations (default: the preset's)")
    parser.add_argument("--medmnist-root", type=Path, default=SHARED_MEDMNIST)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's; 1 is faster on a busy machine)")
    parser.add_argument("--build-only", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    paths = {}
    for builder in args.datasets:
        name = {"pneumonianf": "PneumoniaNF", "breastnf": "BreastNF"}[builder]
        paths[builder], seconds = build_dataset(builder, args.out / name, args.preset, args.medmnist_root, args.steps)
        print(f"{name}: {paths[builder]} ready ({seconds:.0f} s)", file=sys.stderr, flush=True)
    if args.build_only:
        return

    from mednf.tasks.classify import classify

    command = "python benchmarks/classify.py " + shlex.join(sys.argv[1:])
    reports = {}
    for builder, path in paths.items():
        report = classify(path, ("knn", "mlp"), features=("latents", "pixels"), medmnist_root=args.medmnist_root,
                          epochs=args.epochs, seed=args.seed, progress=True)
        reports[builder] = report
        manifest = json.loads((path / "mednf.json").read_text())
        test = manifest["splits"]["test"]
        engine = manifest["engine"]
        field, meta = engine["field"], engine["meta"]
        print(f"\n### {report.name} {DATASETS[builder]}² ({', '.join(f'{s} {n}' for s, n in report.counts.items())})\n")
        print(f"{datetime.date.today().isoformat()} · {device_name()} · command: `{command}`")
        print(f"Dataset: preset {args.preset} (K{field['num_layers']} L{field['hidden_dim']} P{field['latent_dim']}, "
              f"{meta['steps']} meta-iterations, H {engine['fit']['steps']}), test PSNR {test['psnr_mean']:.2f} dB, "
              f"SSIM {test['ssim_mean']:.3f}; meta-training {manifest['meta_training']['seconds']:.0f} s + fitting "
              f"{manifest['fit']['seconds']:.0f} s.")
        print(f"Classifiers: {report.config_line()}\n")
        print(report.to_markdown())
    if args.json:
        args.json.write_text(json.dumps({b: r.to_dict() for b, r in reports.items()}, indent=1))


if __name__ == "__main__":
    main()
