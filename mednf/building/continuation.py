"""``mednf build NAME --continue-to N``: more meta-iterations for a finished build, then a new dataset.

A finished build keeps its last checkpoint (θ, AdamW moments, scheduler, validation history) and its best θ
in ``<out>/.continue/`` (not content: never exported or checksummed). Continuing to N > S iterations:

1. a scratch build folder ``<parent>/.<Name>.continue/`` gets those checkpoints, ``training.csv`` and
   ``build.log``; the checkpoint is **re-planned**: its engine becomes the finished build's with
   ``meta.steps = N`` and its schedule gains the segment ``{"from": S + 1, "length": N}``. The learning
   rate of iteration t > S is then that of a run planned for N from the start (cosine:
   ``β·½(1 + cos(π·t/N))``, so it rises from ≈ 0 at S to ``β·½(1 + cos(π·S/N))``; constant: unchanged, and
   the result is exactly that of one uninterrupted run to N);
2. the normal build runs there (resumable: a killed continuation resumes with the same command), from
   the checkpoint's iteration S to N, validating as before (a new best θ replaces the old one only if it
   is better), then fits every split again and writes the dataset;
3. only then is the old dataset replaced (two renames under the dataset lock), so until the new one is
   complete the old one stays as it was.

The settings are the finished build's (its manifest), not the builder file's: a change of settings is a
new build (``--restart``).
"""

from __future__ import annotations

import dataclasses
import os
import shutil
from pathlib import Path

from mednf.building.trainer import BEST, CURVES, LAST
from mednf.engine.config import EngineConfig
from mednf.engine.meta import lr_factor
from mednf.errors import BuildError
from mednf.format.layout import CONTINUE, LOG, MANIFEST, TRAINING_CSV, WORK
from mednf.format.manifest import Manifest
from mednf.format.tensors import load_tensors, save_tensors
from mednf.sources.spec import BuilderSpec


def keep_checkpoints(work: Path, out: Path) -> None:
    """Move the last and best checkpoints of a finished build from ``work`` to ``out/.continue`` (each file
    by one rename: a kill in between leaves the rest in ``work``, moved at the next rerun)."""
    keep = out / CONTINUE
    for name in (LAST, BEST):
        if (work / name).is_file():
            keep.mkdir(exist_ok=True)
            os.replace(work / name, keep / name)


def scratch_folder(out: Path) -> Path:
    """Where the continuation of ``out`` is built."""
    return out.parent / f".{out.name}.continue"


def continued_settings(out: Path, target: int) -> tuple[Manifest, BuilderSpec, EngineConfig]:
    """The finished build in ``out`` and its spec and engine re-planned to ``target`` iterations; a one-line
    BuildError if it cannot be continued."""
    fix = f"build it with `mednf build NAME --steps {target}` instead"
    if not (out / MANIFEST).is_file():
        why = "an unfinished build (rerun the same `mednf build` to finish it first)" if (out / WORK).is_dir() \
            else "no dataset"
        raise BuildError(f"--continue-to {target} needs a finished build in {out}, which holds {why}")
    manifest = Manifest.read(out)
    if manifest.origin is not None:
        raise BuildError(f"--continue-to {target}: {out} was imported ({manifest.origin.get('kind')}), not built by "
                         f"mednf, so it has no meta-training checkpoint; {fix}")
    done = int(manifest.meta_training["steps"])
    if target <= done:
        raise BuildError(f"--continue-to {target} is invalid: {manifest.name} has finished {done} meta-iterations; "
                         f"give a number above {done}")
    if not (out / CONTINUE / LAST).is_file():
        raise BuildError(f"--continue-to {target}: {out / CONTINUE / LAST} is missing (built by an older mednf, or "
                         f"removed); {fix}")
    cfg = EngineConfig.from_dict(manifest.engine)
    cfg = dataclasses.replace(cfg, meta=dataclasses.replace(cfg.meta, steps=target))
    return manifest, BuilderSpec.from_dict(manifest.builder), cfg


def prepare_scratch(out: Path, manifest: Manifest, cfg: EngineConfig) -> Path:
    """The scratch build folder of the continuation, seeded with the re-planned checkpoints, the training log
    and the build log (kept as it is when it exists: a continuation killed earlier resumes)."""
    scratch = scratch_folder(out)
    work = scratch / WORK
    if work.is_dir():
        return scratch
    staging = scratch.parent / f"{scratch.name}.staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)  # a scratch folder without state is a leftover
    (staging / WORK).mkdir(parents=True)
    done = int(manifest.meta_training["steps"])
    for name in (LAST, BEST):
        source = out / CONTINUE / name
        if not source.is_file():
            continue
        tensors, meta = load_tensors(source)
        schedule = meta.get("schedule") or [{"from": 1, "length": done}]
        meta |= {"engine": cfg.to_dict(), "schedule": [*schedule, {"from": done + 1, "length": cfg.meta.steps}]}
        if "optimizer" in meta:  # the next step's lr: the re-planned schedule's at iteration `done` (0-based)
            lr = cfg.meta.meta_lr * lr_factor(cfg.meta, done)
            for group in meta["optimizer"]["param_groups"]:
                group["lr"] = lr
            meta["scheduler"]["_last_lr"] = [lr] * len(meta["scheduler"].get("_last_lr", [lr]))
        save_tensors(staging / WORK / name, tensors, meta)
    for source, target in ((out / TRAINING_CSV, staging / WORK / CURVES), (out / LOG, staging / LOG)):
        if source.is_file():
            shutil.copyfile(source, target)
    os.replace(staging, scratch)  # complete or absent
    return scratch


def swap_in(scratch: Path, out: Path) -> None:
    """Replace the dataset ``out`` by the finished continuation ``scratch`` (the caller holds the lock)."""
    if not (scratch / MANIFEST).is_file():
        raise BuildError(f"{scratch} is not complete; rerun the same command to finish the continuation")
    old = out.parent / f".{out.name}.replaced-{os.getpid()}"
    os.replace(out, old)
    os.replace(scratch, out)
    shutil.rmtree(old, ignore_errors=True)
