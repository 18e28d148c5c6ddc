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
   complete the old one stays as it was. A kill between the renames is finished at the next build of the
   folder (:func:`recover_swap`); a continuation killed after it was complete is swapped in, not redone;
   one killed on the way to another target is discarded and started again from ``.continue/``. A
   continuation refused with a one-line error (other source data, say) removes the scratch folder it made
   (:func:`scratch_attempt`).

The scratch folder and the old dataset during the swap (``<parent>/.<Name>.replaced/``) are build folders
that carry mednf's mark (:func:`mednf.io.files.write_owner_mark`): mednf moves or removes them only then. A
folder of someone else's at one of those names is a one-line error, never removed, moved or written into.

The settings are the finished build's (its manifest), not the builder file's: a change of settings is a
new build (``--restart``).
"""

from __future__ import annotations

import dataclasses
import glob
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mednf.arguments import CLI, Wording
from mednf.building.distributed import Dist
from mednf.building.identity import result_neutral
from mednf.building.options import BuildOptions
from mednf.building.trainer import BEST, CURVES, LAST
from mednf.engine.config import EngineConfig
from mednf.engine.meta import lr_factor
from mednf.errors import BuildError, ConfigError, MednfError
from mednf.format.layout import CONTINUE, LOG, MANIFEST, OWNER_MARK, TRAINING_CSV, WORK, earlier_build
from mednf.format.manifest import Manifest
from mednf.format.tensors import load_tensors, save_tensors
from mednf.io.files import make_scratch, owner_mark, sweep_dead_scratch, write_owner_mark
from mednf.sources.kinds import outdated_source
from mednf.sources.spec import BuilderSpec

_TARGET = "continue-target"  # in the scratch's .partial: the iteration count it works towards


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


def check_options(options: BuildOptions) -> None:
    """``--continue-to N`` continues with the finished build's own settings: a one-line ConfigError for a bad
    N, or for any option given beside it that would change the result (:mod:`mednf.building.identity`)."""
    target, wording = options.continue_to, options.wording
    if not isinstance(target, int) or isinstance(target, bool) or target < 1:
        raise ConfigError(f"{wording.label('continue_to')} {target!r} is invalid: expected a number of "
                          "meta-iterations ≥ 1")
    restart = wording.option("restart", True)
    flags = [wording.option(name) for name in ("size", "preset", "max_samples")
             if getattr(options, name) is not None] + ([restart] if options.restart else [])
    given = [*options.overrides.items(), ("build", options.build_overrides)]
    changed = flags + [f"{section}.{key}" for section, values in given for key in values
                       if not result_neutral(section, key)]
    if changed:
        raise ConfigError(f"{wording.option('continue_to', target)} continues the finished build with its own "
                          f"settings, but {', '.join(changed)} was given; drop it, or build anew with {restart}")


def with_neutral_options(spec: BuilderSpec, cfg: EngineConfig,
                         options: BuildOptions) -> tuple[BuilderSpec, EngineConfig]:
    """The continued settings with the result-neutral ones given now (fit batching, checkpoint interval)."""
    neutral_fit = {k: v for k, v in options.overrides.get("fit", {}).items() if result_neutral("fit", k)}
    if neutral_fit:
        cfg = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, **neutral_fit))
    return dataclasses.replace(spec, build=dataclasses.replace(spec.build, **options.build_overrides)), cfg


def continued_settings(out: Path, target: int, wording: Wording = CLI) -> tuple[Manifest, BuilderSpec, EngineConfig]:
    """The finished build in ``out`` and its spec and engine re-planned to ``target`` iterations; a one-line
    BuildError if it cannot be continued (``wording``: how the caller names the options)."""
    given = wording.option("continue_to", target)
    fix = f"build it with {wording.command('build', 'NAME', steps=target)} instead"
    if not (out / MANIFEST).is_file():
        again = "the same `mednf.build` call" if wording.python else "the same `mednf build`"
        why = f"an unfinished build (rerun {again} to finish it first)" if (out / WORK).is_dir() else "no dataset"
        raise BuildError(f"{given} needs a finished build in {out}, which holds {why}")
    manifest = Manifest.read(out)
    if manifest.origin is not None:
        raise BuildError(f"{given}: {out} was imported ({manifest.origin.kind}), not built by "
                         f"mednf, so it has no meta-training checkpoint; {fix}")
    outdated = outdated_source(manifest.source)
    if outdated:
        raise BuildError(f"{given}: {manifest.name} cannot be continued, {outdated}; rebuild it "
                         f"with {wording.option('restart', True)}")
    done = int(manifest.meta_training.steps)
    if target <= done:
        raise BuildError(f"{given} is invalid: {manifest.name} has finished {done} meta-iterations; "
                         f"give a number above {done}")
    if not (out / CONTINUE / LAST).is_file():
        raise BuildError(f"{given}: {out / CONTINUE / LAST} is missing (built by an older mednf, or "
                         f"removed); {fix}")
    cfg = EngineConfig.from_dict(manifest.engine)
    cfg = dataclasses.replace(cfg, meta=dataclasses.replace(cfg.meta, steps=target))
    return manifest, BuilderSpec.from_dict(manifest.builder), cfg


def replaced_folder(out: Path) -> Path:
    """Where the old dataset waits during the swap (a fixed name, so a killed swap can be finished)."""
    return out.parent / f".{out.name}.replaced"


def is_build_folder(folder: Path) -> bool:
    """``folder`` is a real folder that mednf marked as a build's, or a build of a mednf that did not mark its
    folders yet (:func:`~mednf.format.layout.earlier_build`): the only kind mednf moves or removes here."""
    if folder.is_symlink() or not folder.is_dir():
        return False
    mark = owner_mark(folder)
    return mark[0] == "build" if mark is not None else earlier_build(folder)


def check_scratch_names(out: Path) -> None:
    """A one-line BuildError if something that is not mednf's sits where the continuation of ``out`` works
    (its scratch folder, the old dataset's place during the swap): it is never removed, moved or written into."""
    for path in (scratch_folder(out), replaced_folder(out)):
        if (path.exists() or path.is_symlink()) and not is_build_folder(path):
            raise BuildError(f"{path} is in the way of the continuation of {out} and is not a build folder of "
                             "mednf's: mednf never writes into, moves or removes it; move it away and run the "
                             "command again")


def recover_swap(out: Path) -> bool:
    """Finish or undo a swap that was killed between its two renames (call it holding the lock): without
    ``out``, a complete continuation takes its place, else the old dataset goes back; a leftover old copy
    beside a present ``out`` is removed. Only folders of mednf's (:func:`is_build_folder`) are moved or
    removed. True if a complete continuation was put in place."""
    scratch, old = scratch_folder(out), replaced_folder(out)
    scratch_ours, old_ours = is_build_folder(scratch), is_build_folder(old)
    if ((scratch_ours or old_ours) and out.is_dir() and not out.is_symlink()
            and {p.name for p in out.iterdir()} <= {OWNER_MARK}):
        shutil.rmtree(out)  # made and marked by a build (before it took the lock) that holds nothing yet
    finished = False
    if not out.exists() and not out.is_symlink():
        if scratch_ours and (scratch / MANIFEST).is_file():
            os.replace(scratch, out)
            finished = True
        elif old_ours:
            os.replace(old, out)
    if out.exists() and old_ours and old.exists():
        shutil.rmtree(old, ignore_errors=True)
    return finished


def _scratch_target(scratch: Path) -> int | None:
    """The iteration count the continuation in ``scratch`` works towards (None: nothing usable there)."""
    if (scratch / MANIFEST).is_file():
        try:
            return int(Manifest.read(scratch).meta_training.steps)
        except (MednfError, KeyError, TypeError, ValueError):
            return None
    try:
        return int((scratch / WORK / _TARGET).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def prepare_scratch(out: Path, manifest: Manifest, cfg: EngineConfig) -> Path:
    """The scratch build folder of the continuation, seeded with the re-planned checkpoints, the training log
    and the build log, and marked as a build of mednf's. A scratch folder working towards the same target (a
    continuation killed earlier, finished or not) is kept and resumes; one with another target is discarded.
    The seed is put together in a staging folder of its own (:func:`mednf.io.files.make_scratch`, removed
    whatever happens) and moved in by one rename: complete or absent."""
    check_scratch_names(out)
    scratch = scratch_folder(out)
    if scratch.exists() and _scratch_target(scratch) == cfg.meta.steps:
        return scratch
    sweep_dead_scratch(scratch.parent.glob(f"{glob.escape(scratch.name)}.staging-*"))  # of killed continuations
    box = make_scratch(scratch.parent, f"{scratch.name}.staging-{os.getpid()}")
    try:
        staging = box / out.name
        _seed(staging, out, manifest, cfg)
        if scratch.exists():
            shutil.rmtree(scratch)  # mednf's (checked above): another target, or a leftover without state
        os.replace(staging, scratch)  # complete or absent
    finally:
        shutil.rmtree(box, ignore_errors=True)
    return scratch


def _seed(staging: Path, out: Path, manifest: Manifest, cfg: EngineConfig) -> None:
    """A new build folder ``staging`` marked as mednf's, holding the finished build's checkpoints re-planned to
    ``cfg`` (:func:`prepare_scratch`), its training log and its build log."""
    (staging / WORK).mkdir(parents=True)
    write_owner_mark(staging, "build", manifest.name)
    (staging / WORK / _TARGET).write_text(str(cfg.meta.steps), encoding="utf-8")
    done = int(manifest.meta_training.steps)
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


@contextmanager
def scratch_attempt(out: Path, manifest: Manifest, cfg: EngineConfig, dist: Dist) -> Iterator[Path]:
    """The scratch folder of this continuation (:func:`prepare_scratch`, on rank 0), for the ``with`` block that
    builds in it. A one-line error (:class:`~mednf.errors.MednfError`, e.g. other source data) removes a scratch
    folder this attempt made, so a refused continuation leaves nothing behind; a kill or an interrupt keeps it
    (the same command resumes), as does an error in a scratch folder an earlier attempt left to resume."""
    check_scratch_names(out)  # on every rank: all of them stop
    scratch = scratch_folder(out)
    made_now = _scratch_target(scratch) != cfg.meta.steps
    if dist.is_main:
        prepare_scratch(out, manifest, cfg)
    dist.barrier()
    try:
        yield scratch
    except MednfError:
        if dist.is_main and made_now:
            shutil.rmtree(scratch, ignore_errors=True)
        raise


def swap_in(scratch: Path, out: Path) -> None:
    """Replace the dataset ``out`` by the finished continuation ``scratch`` (the caller holds the lock; a kill
    between the two renames is finished by :func:`recover_swap` at the next build). ``out`` gets mednf's mark
    first (a build of an earlier mednf has none), so its place during the swap is recognisably mednf's."""
    if not (scratch / MANIFEST).is_file():
        raise BuildError(f"{scratch} is not complete; rerun the same command to finish the continuation")
    check_scratch_names(out)
    old = replaced_folder(out)
    if old.exists():
        shutil.rmtree(old)  # mednf's (checked above): left by a swap whose out was put back
    if owner_mark(out) is None:
        write_owner_mark(out, "build", Manifest.read(scratch).name)
    os.replace(out, old)
    os.replace(scratch, out)
    shutil.rmtree(old, ignore_errors=True)
