"""Benchmark lazy remote reads (``mednf.load("http://…")``) against the same dataset read from its folder.

Usage::

    python benchmarks/remote_read.py                       # N=5000 rows, P=256, chunks of 256 rows
    python benchmarks/remote_read.py --rows 20000 --latent-dim 1024 --chunk-rows 512

A dataset is written into a temporary folder with mednf's own writer (a tiny real PhantomNF build supplies
manifest and θ; its train split is replaced by ``--rows`` random latents of size ``--latent-dim``, chunks of
``--chunk-rows``), then served by the Range-honouring test server on 127.0.0.1 (``tests/range_server.py``,
threaded ``http.server``). Loopback has no network latency: the numbers are mednf's own cost (HTTP round
trip through fsspec/aiohttp, sha256, zarr decode, caches); over a real link add one round trip per chunk.

Measured on the train split, each row of the table a fresh ``mednf.load``:

- **open**: ``mednf.load`` after a first one (imports and connections warm; remote: manifest + index; local:
  structure check and the remembered sha256);
- **random, cold**: ``ds[i]`` for one index in each chunk, in random order: every read fetches (remote) or
  needs (local: the first read loads the whole matrix) data not yet in memory;
- **random, warm**: ``--random-items`` random ``ds[i]`` after every chunk is in memory;
- **sequential, cold / warm**: ``ds.dataloader(256)`` over the split, first and second pass;
- **whole split**: ``np.asarray(ds.latents)`` on a fresh load (remote: all chunks fetched concurrently).

MB/s counts the decoded float32 rows (``P × 4`` bytes each), not the compressed bytes transferred.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

import mednf
from mednf.building.pipeline import BuildOptions, build
from mednf.engine.config import EngineConfig, FieldConfig
from mednf.engine.field import init_params
from mednf.format.manifest import LatentInfo, Manifest
from mednf.format.writer import DatasetWriter, SplitIndex, row_blocks
from mednf.sources.kinds import source_card_line

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from gpu_check import cpu_model  # sibling script (benchmarks/ is not a package)
from range_server import RangeServer  # the tests' server (tests/ is not a package)


def make_dataset(out: Path, rows: int, latent_dim: int, chunk_rows: int, scratch: Path) -> None:
    """A dataset with ``rows`` random train latents ``[rows, latent_dim]`` in chunks of ``chunk_rows``."""
    tiny = scratch / "tiny-build"
    build("phantomnf", BuildOptions(out=tiny, preset="tiny", size=32, max_samples=8, progress=False))
    manifest = Manifest.read(tiny)
    field = {**manifest.engine["field"], "latent_dim": latent_dim}
    engine = EngineConfig.from_dict({**manifest.engine, "field": field})
    manifest = manifest.replace(engine=engine.to_dict(), latent=LatentInfo(dim=latent_dim, chunk_rows=chunk_rows))
    counts = {"train": rows, "val": 8, "test": 8}
    rng = np.random.default_rng(0)
    writer = DatasetWriter(out, latent_dim=latent_dim, chunk_rows=chunk_rows)
    writer.prepare()
    writer.create_latents(counts, {"name": manifest.name})
    index = {}
    for split, n in counts.items():
        for start, stop in row_blocks(n, chunk_rows):
            writer.write_latents(split, start, rng.standard_normal((stop - start, latent_dim), np.float32) * 0.01)
        index[split] = SplitIndex(np.arange(n), rng.integers(0, 4, (n, 1)), rng.uniform(20, 30, n),
                                  rng.uniform(0.5, 1, n))
    writer.write_theta(init_params(FieldConfig(**field), generator=torch.Generator().manual_seed(0)), {"field": field})
    writer.finish(manifest, index, source_card_line(manifest.source))


def timed(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def measure(where: str, rows: int, chunk_rows: int, random_items: int) -> dict[str, float]:
    """Seconds (open) and rows/s of each mode for the dataset at ``where`` (folder or URL)."""
    rng = np.random.default_rng(1)
    one_per_chunk = rng.permutation([min(k + int(rng.integers(chunk_rows)), rows - 1)
                                     for k in range(0, rows, chunk_rows)])
    picks = rng.integers(0, rows, random_items)
    out: dict[str, float] = {}
    ds = mednf.load(where, split="train")  # imports and the connection pool warm: not what "open" measures

    def open_() -> None:
        nonlocal ds
        ds = mednf.load(where, split="train")

    out["open_s"] = timed(open_)
    out["random_cold"] = len(one_per_chunk) / timed(lambda: [ds[int(i)] for i in one_per_chunk])
    out["random_warm"] = random_items / timed(lambda: [ds[int(i)] for i in picks])
    ds = mednf.load(where, split="train")
    out["seq_cold"] = rows / timed(lambda: sum(len(b["latent"]) for b in ds.dataloader(256)))
    out["seq_warm"] = rows / timed(lambda: sum(len(b["latent"]) for b in ds.dataloader(256)))
    ds = mednf.load(where, split="train")
    out["whole"] = rows / timed(lambda: np.asarray(ds.latents))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--latent-dim", type=int, default=256)
    parser.add_argument("--chunk-rows", type=int, default=256)
    parser.add_argument("--random-items", type=int, default=20_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["MEDNF_HOME"] = str(Path(tmp) / "home")  # remembered verifications stay in the temporary folder
        os.environ.pop("MEDNF_REMOTE_CACHE", None)  # memory cache only
        root = Path(tmp) / "served" / "PhantomNF"
        make_dataset(root, args.rows, args.latent_dim, args.chunk_rows, Path(tmp))
        chunk_files = len(list((root / "latents.zarr" / "train" / "c").rglob("*/*")))
        stored = sum(f.stat().st_size for f in (root / "latents.zarr" / "train").rglob("*") if f.is_file())
        mednf.load(root, split="train")  # the first (full sha256) verification is not what is measured
        with RangeServer(root.parent) as server:
            results = {"local folder": measure(str(root), args.rows, args.chunk_rows, args.random_items)}
            server.clear()
            results["http://127.0.0.1 (lazy)"] = measure(f"{server.url}/PhantomNF", args.rows, args.chunk_rows,
                                                         args.random_items)
            gets = len(server.fetched())
    mb = args.latent_dim * 4 / 1e6  # MB per row

    def rate(value: float) -> str:
        return f"{value:,.0f} rows/s ({value * mb:,.1f} MB/s)"

    print(f"train split {args.rows} × P={args.latent_dim} float32, chunks of {args.chunk_rows} rows "
          f"({chunk_files} files, {stored / 2**20:.1f} MiB stored); CPU: {cpu_model()}, {os.cpu_count()} cores, "
          f"torch {torch.get_num_threads()} threads\n")
    print("| read | open | random ds[i], cold | random ds[i], warm | sequential, cold | sequential, warm "
          "| whole split |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['open_s'] * 1000:.0f} ms | {rate(r['random_cold'])} | {rate(r['random_warm'])} "
              f"| {rate(r['seq_cold'])} | {rate(r['seq_warm'])} | {rate(r['whole'])} |")
    print(f"\nremote GET requests over the whole run: {gets} (4 loads × manifest + index; 3 of them read "
          f"zarr.json and the {chunk_files} chunks once each); random cold = one ds[i] per chunk, each fetching its "
          "chunk (local: the first one reads the whole matrix)")


if __name__ == "__main__":
    main()
