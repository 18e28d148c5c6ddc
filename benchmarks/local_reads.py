"""Benchmark local latent reads: this checkout against another (e.g. the code before lazy reads), same data.

Usage::

    git worktree add /tmp/base <commit>                    # the code to compare with
    python benchmarks/local_reads.py --old /tmp/base       # N=100000 rows, P=64, chunks of 1024 rows
    python benchmarks/local_reads.py --old /tmp/base --rows 20000 --latent-dim 2048   # the paper's P
    python benchmarks/local_reads.py --old /tmp/base --chunk-reads    # also this checkout with MEDNF_UNPACK=0

A dataset is written into a temporary folder with mednf's own writer (a tiny real PhantomNF build supplies
the manifest; its train split is replaced by ``--rows`` random latents of size ``--latent-dim`` in chunks of
``--chunk-rows``, the build's default 1024). Every measurement runs in a fresh Python process with
``PYTHONPATH`` set to the code measured (``--old``, and ``--new``: this checkout), after a first load that
did the sha256 verification (remembered), so each one pays what a user pays on a fresh load:

- **seq ds[i]**: ``ds[i]`` for every row in order (rows/s; the first access reads what it needs);
- **random ds[i]**: ``--random-items`` uniformly random ``ds[i]``;
- **dataloader**: ``ds.dataloader(256)`` over the split, in order (one gather per batch);
- **shuffled batches**: ``DataLoader(ds, batch_size=256, shuffle=True)`` (``__getitems__``);
- **whole split**: ``np.asarray(ds.latents)`` and a sum over every value (a memory map is only read when its
  pages are touched);
- **first access**: seconds of the first ``ds[0]`` of a fresh load, with ``$MEDNF_HOME/.unpacked`` removed
  first: what unpacks a split (this code) or reads it whole (eager code). It runs first, so the other modes
  of an unpacking code map the file it left, as every load after a split's first one does.

Each process reports its peak RSS (``resource.getrusage(RUSAGE_SELF).ru_maxrss``, which counts the pages of
a memory map it touched) and its RSS after the imports, and at the end of the mode (dataset still open) Rss,
Private (Private_Clean + Private_Dirty) and Anonymous of ``/proc/self/smaps_rollup``: pages of a mapped
file are Rss, and Private while no other process maps them, but never Anonymous; the OS can drop them at
any time (they are its page cache), which it cannot do for anonymous memory.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("first access", "seq ds[i]", "random ds[i]", "dataloader", "shuffled batches", "whole split")
SPEED = MODES[1:]  # reported in rows/s; first access in seconds


def smaps() -> dict[str, int]:
    """Rss, Private and Anonymous of this process now (MiB), from ``/proc/self/smaps_rollup`` (empty if absent)."""
    try:
        with open("/proc/self/smaps_rollup") as f:
            kib = {line.split(":")[0]: int(line.split()[1]) for line in f if line.split()[-1:] == ["kB"]}
    except OSError:
        return {}
    return {"rss": kib["Rss"] // 1024, "private": (kib["Private_Clean"] + kib["Private_Dirty"]) // 1024,
            "anonymous": kib["Anonymous"] // 1024}


def make_dataset(out: Path, rows: int, latent_dim: int, chunk_rows: int, scratch: Path) -> None:
    """A dataset with ``rows`` random train latents ``[rows, latent_dim]`` in chunks of ``chunk_rows``."""
    import numpy as np
    import torch

    from mednf.building.pipeline import BuildOptions, build
    from mednf.engine.config import EngineConfig, FieldConfig
    from mednf.engine.field import init_params
    from mednf.format.manifest import LatentInfo, Manifest
    from mednf.format.writer import DatasetWriter, SplitIndex, row_blocks
    from mednf.sources.kinds import source_card_line

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


def measure(root: str, mode: str, random_items: int) -> dict[str, object]:
    """Rows/s of ``mode`` on a fresh load of ``root``, and this process's RSS (runs in the child process)."""
    import resource

    import numpy as np
    import torch

    import mednf

    torch.set_num_threads(1)
    with open("/proc/self/status") as f:
        rss_before = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) // 1024  # MiB
    ds = mednf.load(root, split="train")
    n = len(ds)
    start = time.perf_counter()
    if mode == "first access":
        ds[0]
        count = 1
    elif mode == "seq ds[i]":
        for i in range(n):
            ds[i]
        count = n
    elif mode == "random ds[i]":
        picks = np.random.default_rng(1).integers(0, n, random_items).tolist()
        for i in picks:
            ds[i]
        count = random_items
    elif mode == "dataloader":
        count = sum(len(b["latent"]) for b in ds.dataloader(256))
    elif mode == "shuffled batches":
        loader = torch.utils.data.DataLoader(ds, batch_size=256, shuffle=True,
                                             generator=torch.Generator().manual_seed(0))
        count = sum(len(b["latent"]) for b in loader)
    else:
        whole = np.asarray(ds.latents)
        float(whole.sum(dtype=np.float64))  # every value read
        count = len(whole)
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024  # KiB on Linux → MiB (the parent is small)
    return {"rows_per_s": count / seconds, "seconds": seconds, "peak_rss_mib": peak,
            "rss_after_imports_mib": rss_before, "now": smaps(), "latents": type(ds.latents).__name__,
            "unpacked_bytes": sum(f.stat().st_size for f in Path(os.environ["MEDNF_HOME"], ".unpacked").rglob("*.npy")),
            "mednf": str(Path(mednf.__file__).parent)}


def run_child(code: Path, root: Path, mode: str, random_items: int, home: str,
              unpack: str = "1") -> dict[str, object]:
    """:func:`measure` in a fresh process importing mednf from ``code`` (``unpack``: ``MEDNF_UNPACK``)."""
    if mode == "first access":
        shutil.rmtree(Path(home) / ".unpacked", ignore_errors=True)
    env = {**os.environ, "PYTHONPATH": str(code), "MEDNF_HOME": home, "OMP_NUM_THREADS": "1", "MEDNF_UNPACK": unpack}
    out = subprocess.run([sys.executable, __file__, "--child", str(root), mode, str(random_items)], env=env,
                         check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    if Path(str(result["mednf"])).resolve() != (code / "mednf").resolve():
        raise SystemExit(f"measured {result['mednf']}, not {code}/mednf: PYTHONPATH did not take effect")
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        print(json.dumps(measure(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    if len(sys.argv) > 1 and sys.argv[1] == "--make":
        import mednf

        root, rows, dim, chunk, scratch = sys.argv[2:7]
        make_dataset(Path(root), int(rows), int(dim), int(chunk), Path(scratch))
        mednf.load(root, split="train")  # the first (full sha256) verification is not what is measured
        return
    here = Path(__file__).resolve().parents[1]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old", type=Path, required=True, help="checkout of the code to compare with")
    parser.add_argument("--new", type=Path, default=here, help="checkout measured as new (default: this one)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--latent-dim", type=int, default=64)
    parser.add_argument("--chunk-rows", type=int, default=1024)
    parser.add_argument("--random-items", type=int, default=20_000)
    parser.add_argument("--chunk-reads", action="store_true", help="also measure the new code with MEDNF_UNPACK=0")
    args = parser.parse_args()
    variants = [("old", args.old.resolve(), "1"), ("new", args.new.resolve(), "1")]
    if args.chunk_reads:
        variants.append(("new, MEDNF_UNPACK=0", args.new.resolve(), "0"))
    with tempfile.TemporaryDirectory() as tmp:
        home = str(Path(tmp) / "home")
        os.environ["MEDNF_HOME"] = home  # remembered verifications stay in the temporary folder
        root = Path(tmp) / "PhantomNF"
        started = time.perf_counter()
        # written in a child process: ru_maxrss carries over from a parent into the processes it starts, so the
        # parent stays small (standard library only) and every measured process starts from its own imports
        subprocess.run([sys.executable, __file__, "--make", str(root), str(args.rows), str(args.latent_dim),
                        str(args.chunk_rows), tmp], env={**os.environ, "PYTHONPATH": str(args.new.resolve())},
                       check=True, capture_output=True)
        made = time.perf_counter() - started
        stored = sum(f.stat().st_size for f in (root / "latents.zarr" / "train").rglob("*") if f.is_file())
        results = {name: {mode: run_child(code, root, mode, args.random_items, home, unpack) for mode in MODES}
                   for name, code, unpack in variants}
        unpacked = max(int(str(r["first access"]["unpacked_bytes"])) for r in results.values())
    print(f"train split {args.rows} × P={args.latent_dim} float32 ({args.rows * args.latent_dim * 4 / 2**20:.1f} MiB "
          f"in memory, {stored / 2**20:.1f} MiB stored, {unpacked / 2**20:.1f} MiB unpacked), chunks of "
          f"{args.chunk_rows} rows; written in {made:.0f} s\n")
    print("| code | first access | " + " | ".join(SPEED) + " |")
    print("|---|" + "---:|" * len(MODES))
    for name, by_mode in results.items():
        cells = [f"{by_mode['first access']['seconds']:.2f} s"]
        cells += [f"{by_mode[mode]['rows_per_s']:,.0f} rows/s" for mode in SPEED]
        print(f"| {name} | " + " | ".join(cells) + " |")
    kinds = [f"{name}: {by_mode[SPEED[0]]['latents']}" for name, by_mode in results.items()]
    print(f"\nds.latents is a {', '.join(kinds)}")
    print("\nmemory of each process (MiB): RSS after imports → peak RSS; at the end Rss / Private / Anonymous:\n")
    print("| code | " + " | ".join(MODES) + " |")
    print("|---|" + "---:|" * len(MODES))
    for name, by_mode in results.items():
        cells = []
        for r in by_mode.values():
            now = r["now"]
            assert isinstance(now, dict)
            end = f"; {now['rss']} / {now['private']} / {now['anonymous']}" if now else ""
            cells.append(f"{r['rss_after_imports_mib']} → {r['peak_rss_mib']}{end}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
