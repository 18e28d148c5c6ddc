"""Speed of `mednf import-official` on a generated release at the paper's 2D size (K15 L256 P2048).

The official layout is one `torch.save` file per sample (each holding its whole fitting batch's storage,
24 × 2048 floats), so reading ~100k small files dominates. Prints one table row; see RESULTS.md.

    python benchmarks/official_import.py [--train 2400] [--batch 24] [--out /tmp/mednf-official-bench]
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from official_fixture import make_model, write_release

from mednf.remote.official_import import import_official
from mednf.sources.phantoms import phantom_source
from mednf.sources.spec import load_builder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=480)
    parser.add_argument("--batch", type=int, default=24)
    parser.add_argument("--out", type=Path, default=Path("/tmp/mednf-official-bench"))
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    counts = {"train": min(args.train, 600), "val": 96, "test": 192}  # PhantomNF's splits hold 600/100/200
    labels = phantom_source(load_builder("phantomnf"))
    model = make_model(hidden=256, num_layers=15, latent_dim=2048, in_size=2, out_size=1)
    splits = {s: (torch.randn(n, 2048) * 0.1, torch.from_numpy(labels[s].labels[:n])) for s, n in counts.items()}
    started = time.perf_counter()
    release = write_release(args.out / "release", model, splits, batch=args.batch)
    written = time.perf_counter() - started
    files = sum(1 for _ in release.rglob("datapoint_*.pt"))
    size = sum(p.stat().st_size for p in release.rglob("*.pt")) / 2**20
    started = time.perf_counter()
    import_official(release, "phantomnf", args.out / "PhantomNF", progress=False)
    seconds = time.perf_counter() - started
    print(f"# {time.strftime('%Y-%m-%d')}, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print("| datapoint files | release size | write (fixture) | import | files/s |")
    print("|---:|---:|---:|---:|---:|")
    print(f"| {files} | {size:.0f} MiB | {written:.1f} s | {seconds:.1f} s | {files / seconds:.0f} |")


if __name__ == "__main__":
    main()
