"""Chaos: one tiny `mednf build` killed with SIGKILL five times at seeded random points (meta-training,
fitting, finalize), restarted with the same command each time, then left to finish, is the uninterrupted
build of that command file for file (every sha256 of the manifest's table) and latent for latent."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import zarr
from conftest import report

from mednf.building.curves import read_training

# 12 samples per split in blocks of 4 rows (9 blocks), 60 meta-iterations with a checkpoint every 5
STEPS, SAMPLES, ROWS = 60, 12, 4
ARGS = ["--steps", str(STEPS), "--preset", "tiny", "--size", "32", "--max-samples", str(SAMPLES), "--quiet",
        "--set", f"build.block_rows={ROWS}", "--set", "build.val_every=20", "--set", "build.val_samples=4",
        "--set", "build.checkpoint_every=5"]
BLOCKS = 3 * -(-SAMPLES // ROWS)
# where each kill aims (a kill lands at a random delay after the phase is seen); seeded
PLAN = ["meta", "meta", "fit", "fit", "finalize"]
SEED = 20261201
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}  # the reference runs beside the chaos runs: 1 thread each


def command(out: Path) -> list[str]:
    """The one command of this test."""
    return [sys.executable, "-m", "mednf.cli", "build", "phantomnf", "--out", str(out), *ARGS]


def start(out: Path) -> subprocess.Popen:
    """The command in its own process group (killed as a whole)."""
    return subprocess.Popen(command(out), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=ENV,
                            start_new_session=True)


def records(out: Path) -> int:
    blocks = out / ".partial" / "blocks"
    return len(list(blocks.glob("*.npz"))) if blocks.is_dir() else 0


def checkpoint_mtime(out: Path) -> int:
    path = out / ".partial" / "meta-last.safetensors"
    return path.stat().st_mtime_ns if path.is_file() else 0


def phase(out: Path) -> str:
    """Where an interrupted build stands, from its files."""
    if (out / "mednf.json").is_file():
        return "complete"
    done = records(out)
    return "finalize" if done == BLOCKS else "fit" if done else "meta"


def kill_at(out: Path, target: str, delay: float, timeout: float = 120.0) -> str:
    """Start the build, wait until it does ``target`` work in this run, sleep ``delay`` s, SIGKILL it; the phase
    its files show afterwards."""
    ckpt, done = checkpoint_mtime(out), records(out)
    reached = {"meta": lambda: checkpoint_mtime(out) != ckpt or records(out) > 0,
               "fit": lambda: records(out) > done or records(out) == BLOCKS,
               "finalize": lambda: records(out) == BLOCKS}[target]
    proc = start(out)
    deadline = time.monotonic() + timeout
    try:
        while not reached():
            assert proc.poll() is None, f"the build ended before its {target} kill point: {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, f"{target} kill point not reached in {timeout} s"
            time.sleep(0.002)
        time.sleep(delay)
        assert proc.poll() is None, f"the build finished before the {target} kill ({delay:.3f} s after the phase)"
        os.killpg(proc.pid, signal.SIGKILL)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    return phase(out)


def latents(out: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(out / "latents.zarr"), mode="r")
    return {split: group[split][:] for split in ("train", "val", "test")}


def test_five_sigkills_at_random_points_then_the_same_build(tmp_path):
    started = time.perf_counter()
    reference_out, out = tmp_path / "ref" / "PhantomNF", tmp_path / "chaos" / "PhantomNF"
    reference = start(reference_out)  # uninterrupted, beside the chaos runs
    rng = random.Random(SEED)
    delays = {"meta": (0.0, 0.2), "fit": (0.0, 0.03), "finalize": (0.0, 0.02)}
    landed = [kill_at(out, target, rng.uniform(*delays[target])) for target in PLAN]
    final = subprocess.run(command(out), capture_output=True, text=True, env=ENV, timeout=300, check=False)
    assert final.returncode == 0, final.stderr[-3000:]
    assert reference.wait(timeout=300) == 0, reference.stderr.read()[-3000:]
    reference.stderr.close()
    report(f"chaos build: 5 SIGKILLs aimed at {PLAN}, landed in {landed}; "
           f"{time.perf_counter() - started:.1f} s with the reference build")
    assert {"meta", "fit", "finalize"} <= set(landed), landed  # the state each kill left behind

    ours = json.loads((out / "mednf.json").read_text())
    theirs = json.loads((reference_out / "mednf.json").read_text())
    differ = sorted(name for name in set(ours["files"]) | set(theirs["files"])
                    if ours["files"].get(name) != theirs["files"].get(name))
    assert differ in ([], ["training.csv"]), f"files that differ from the uninterrupted build: {differ}"
    # the training log: the same rows, each iteration once, whatever was killed; only wall times differ
    untimed = [[{k: v for k, v in row.items() if k != "seconds"} for row in read_training(root / "training.csv")]
               for root in (out, reference_out)]
    assert untimed[0] == untimed[1]
    for split, expected in latents(reference_out).items():
        np.testing.assert_array_equal(latents(out)[split], expected)
    assert not (out / ".partial").exists()
    leftovers = [p for pattern in (".*.tmp", ".*.part", "*.tmp", "*.part") for p in out.rglob(pattern)]
    assert not leftovers, leftovers
