"""Benchmark a whole ``mednf build``: where the time goes besides the engine.

Usage::

    python benchmarks/build.py phantomnf                      # the README's main job, as shipped
    python benchmarks/build.py breastnf --preset cpu-small --medmnist-root ../shared/data/medmnist
    python benchmarks/build.py chestnf --gpu 0 --steps 2000  # on a GPU machine

Runs one build into a fresh temporary directory (``--restart``) in this process and prints a Markdown
table: samples, meta-iterations and seconds per iteration, fitting throughput (signals/s, summed over
blocks), the rest of the wall time (source loading, Zarr/Parquet writes, checksums, card: the pipeline's
own overhead) and the test PSNR/SSIM from the manifest. ``--json`` writes the row as JSON too.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

from mednf.building.pipeline import BuildOptions, build


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("builder")
    parser.add_argument("--preset")
    parser.add_argument("--steps", type=int)
    parser.add_argument("--size", type=int)
    parser.add_argument("--max-samples", type=int)
    parser.add_argument("--gpu", type=int)
    parser.add_argument("--medmnist-root", type=Path)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    overrides = {"meta": {"steps": args.steps}} if args.steps else {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "dataset"
        started = time.perf_counter()
        build(args.builder, BuildOptions(out=out, preset=args.preset, size=args.size, max_samples=args.max_samples,
                                         gpu=args.gpu, medmnist_root=args.medmnist_root, overrides=overrides,
                                         progress=False))
        wall = time.perf_counter() - started
        manifest = json.loads((out / "mednf.json").read_text())
        size_mb = sum(f["size"] for f in manifest["files"].values()) / 2**20
    meta, fit, test = manifest["meta_training"], manifest["fit"], manifest["splits"]["test"]
    samples = sum(s["count"] for s in manifest["splits"].values())
    row = {
        "builder": manifest["name"], "preset": manifest["builder"]["preset"], "samples": samples,
        "meta_iterations": meta["steps"], "meta_s_per_it": meta["seconds"] / meta["steps"],
        "meta_s": meta["seconds"], "fit_signals_per_s": fit["signals_per_second"], "fit_s": fit["seconds"],
        "other_s": wall - meta["seconds"] - fit["seconds"], "wall_s": wall, "dataset_mib": size_mb,
        "test_psnr": test["psnr_mean"], "test_ssim": test["ssim_mean"], "device": manifest["device"],
        "torch": torch.__version__, "command": " ".join(sys.argv),
    }
    print("| builder | preset | samples | meta it | s/it | meta s | fit signals/s | fit s | other s | wall s "
          "| MiB | test PSNR | test SSIM |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    print(f"| {row['builder']} | {row['preset']} | {samples} | {row['meta_iterations']} | {row['meta_s_per_it']:.3f} "
          f"| {row['meta_s']:.1f} | {row['fit_signals_per_s']:.1f} | {row['fit_s']:.1f} | {row['other_s']:.1f} "
          f"| {wall:.1f} | {size_mb:.1f} | {row['test_psnr']:.2f} | {row['test_ssim']:.3f} |")
    print(f"device: {row['device']}; torch {row['torch']}")
    if args.json:
        args.json.write_text(json.dumps(row, indent=2) + "\n")


if __name__ == "__main__":
    main()
