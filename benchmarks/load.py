"""Benchmark reading a MedNF dataset through ``mednf.load``: PyTorch view, DataLoader, ``to_hf``, decode.

Usage::

    python benchmarks/load.py --rows 100000 --latent-dim 2048          # the issue's targets (CPU)
    python benchmarks/load.py --rows 20000 --decode-device cuda        # decode on a GPU

A dataset of that size is written once into a temporary folder with mednf's own writers
(:class:`mednf.format.writer.DatasetWriter`): a tiny real PhantomNF build supplies the manifest, then its train split is
replaced by ``--rows`` random latents (and labels), θ by a freshly initialised network of the paper's 2D shape
with P = ``--latent-dim``, and the writer computes the manifest's counts and checksums. Only the reader is
measured, so the latents need not come from a fit.

Measured (best of ``--repeats``; each a fresh ``MedNFDataset`` unless said otherwise):

- **sequential, cold**: ``DataLoader(ds, batch_size=256)`` over the whole split, 0 and 2 workers, on a
  fresh dataset (includes the first read and decompression of the Zarr array by each process);
- **sequential / shuffled, warm**: the same after ``ds.latents`` was read in the parent (forked workers
  share it);
- **ds.dataloader**: the same through :meth:`MedNFDataset.dataloader` (index batches, no per-sample collate);
- **random access**: ``ds[i]`` for random single indices (latent + label + index + psnr), matrix already
  read;
- **to_hf**: ``ds.to_hf()`` on a dataset whose matrix is already in memory, and the same including the
  Zarr read;
- **decode**: ``ds.decode`` of ``--decode-count`` latents at the native 64² size, images/s.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from mednf.building.pipeline import BuildOptions, build
from mednf.dataset import MedNFDataset
from mednf.engine.config import EngineConfig, FieldConfig
from mednf.engine.field import init_params
from mednf.engine.presets import get_preset
from mednf.format.manifest import Manifest
from mednf.format.reader import open_dataset
from mednf.format.writer import DatasetWriter, SplitIndex, row_blocks
from mednf.sources.kinds import source_card_line


def make_dataset(out: Path, rows: int, latent_dim: int) -> None:
    """A dataset with ``rows`` train latents of size ``latent_dim`` (see the module docstring)."""
    tiny = out.parent / "tiny-build"
    build("phantomnf", BuildOptions(out=tiny, preset="tiny", size=64, max_samples=8, progress=False))
    manifest = Manifest.read(tiny)
    counts = {"train": rows, "val": 8, "test": 8}
    paper = get_preset("2d-64").field
    field_dict = {**manifest.engine["field"], **{k: getattr(paper, k) for k in
                                                 ("num_layers", "hidden_dim", "omega_first", "omega_last")},
                  "latent_dim": latent_dim}
    engine = EngineConfig.from_dict({**manifest.engine, "field": field_dict})
    manifest = manifest.replace(engine=engine.to_dict(),
                                latent=manifest.latent.__class__(dim=latent_dim, chunk_rows=1024))
    rng = np.random.default_rng(0)
    writer = DatasetWriter(out, latent_dim=latent_dim, chunk_rows=1024)
    writer.prepare()
    writer.create_latents(counts, {"name": manifest.name})
    index = {}
    for split, n in counts.items():
        for start, stop in row_blocks(n, 1024):
            writer.write_latents(split, start, rng.standard_normal((stop - start, latent_dim), np.float32) * 0.01)
        index[split] = SplitIndex(np.arange(n), rng.integers(0, 4, (n, 1)), rng.uniform(20, 30, n),
                                  rng.uniform(0.5, 1, n))
    writer.write_theta(init_params(FieldConfig(**field_dict), generator=torch.Generator().manual_seed(0)),
                       {"field": field_dict})
    writer.finish(manifest, index, source_card_line(manifest.source))


@contextlib.contextmanager
def _home(folder: Path):
    """Remembered verifications go to ``folder`` (``$MEDNF_HOME/.verified``) for the block."""
    old = os.environ.get("MEDNF_HOME")
    os.environ["MEDNF_HOME"] = str(folder)
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MEDNF_HOME")
        else:
            os.environ["MEDNF_HOME"] = old


def best_of(repeats: int, fn) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--latent-dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--random-items", type=int, default=20_000)
    parser.add_argument("--decode-count", type=int, default=64)
    parser.add_argument("--decode-device", default="cpu")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "PhantomNF"
        start = time.perf_counter()
        make_dataset(root, args.rows, args.latent_dim)
        print(f"wrote {args.rows}×{args.latent_dim} dataset in {time.perf_counter() - start:.1f} s")
        results: dict[str, float] = {}
        n = args.rows
        cache = Path(tmp) / "verified"
        results["size_mib"] = sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) / 2**20

        def first_load() -> None:  # full sha256 of every file, nothing remembered yet
            shutil.rmtree(cache, ignore_errors=True)
            open_dataset(root, verify=True)

        with _home(cache):
            results["verify_first_s"] = best_of(args.repeats, first_load)
            open_dataset(root, verify=True)
            results["verify_cached_s"] = best_of(args.repeats, lambda: open_dataset(root, verify=True))
        results["open_unverified_s"] = best_of(args.repeats, lambda: open_dataset(root, verify=False))
        results["first_read_s"] = best_of(args.repeats, lambda: MedNFDataset(root, "train", verify=False).latents)

        def sequential(workers: int, shuffle: bool = False, warm: bool = False, batched: bool = False) -> None:
            ds = MedNFDataset(root, "train", verify=False)
            if warm:
                _ = ds.latents  # read in the parent: forked workers share it
            if batched:
                loader = ds.dataloader(256, shuffle=shuffle, num_workers=workers)
            else:
                loader = torch.utils.data.DataLoader(ds, batch_size=256, num_workers=workers, shuffle=shuffle)
            total = sum(len(b["latent"]) for b in loader)
            assert total == n

        for workers in (0, 2):
            results[f"sequential_w{workers}"] = n / best_of(args.repeats, lambda w=workers: sequential(w))
            results[f"sequential_warm_w{workers}"] = n / best_of(args.repeats,
                                                                 lambda w=workers: sequential(w, warm=True))
            results[f"shuffled_warm_w{workers}"] = n / best_of(args.repeats,
                                                               lambda w=workers: sequential(w, True, warm=True))
            results[f"batched_cold_w{workers}"] = n / best_of(args.repeats,
                                                              lambda w=workers: sequential(w, batched=True))
            results[f"batched_shuffled_warm_w{workers}"] = n / best_of(
                args.repeats, lambda w=workers: sequential(w, True, warm=True, batched=True))
        ds = MedNFDataset(root, "train", verify=False)
        _ = ds.latents
        picks = np.random.default_rng(1).integers(0, n, args.random_items)
        results["random_items"] = args.random_items / best_of(args.repeats, lambda: [ds[int(i)] for i in picks])
        results["to_hf_s"] = best_of(args.repeats, ds.to_hf)
        results["to_hf_with_read_s"] = best_of(args.repeats, lambda: MedNFDataset(root, "train", verify=False).to_hf())
        device = torch.device(args.decode_device)
        ds.decode(range(4), device=device)  # warm-up
        sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

        def decode_run() -> None:
            ds.decode(range(args.decode_count), device=device)
            sync()

        results["decode_images_per_s"] = args.decode_count / best_of(args.repeats, decode_run)
    print("| rows × P | workers | sequential, cold | sequential, warm | shuffled, warm "
          "| ds.dataloader, cold | ds.dataloader shuffled, warm |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for w in (0, 2):
        print(f"| {n}×{args.latent_dim} | {w} | {results[f'sequential_w{w}']:,.0f}/s "
              f"| {results[f'sequential_warm_w{w}']:,.0f}/s | {results[f'shuffled_warm_w{w}']:,.0f}/s "
              f"| {results[f'batched_cold_w{w}']:,.0f}/s | {results[f'batched_shuffled_warm_w{w}']:,.0f}/s |")
    print(f"\nrandom ds[i]: {results['random_items']:,.0f} items/s; to_hf: {results['to_hf_s']:.3f} s "
          f"({results['to_hf_with_read_s']:.2f} s including the Zarr read); decode 64² on {args.decode_device}: "
          f"{results['decode_images_per_s']:.1f} images/s")
    print(f"verification (sha256 of every file, {results['size_mib']:.0f} MiB): first load "
          f"{results['verify_first_s']:.2f} s, re-load remembered {results['verify_cached_s'] * 1000:.1f} ms, "
          f"open without verification {results['open_unverified_s'] * 1000:.1f} ms; first read of the train "
          f"latents {results['first_read_s']:.2f} s")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
