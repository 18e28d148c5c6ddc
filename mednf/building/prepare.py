"""The stages before meta-learning: the folder, "is it built already?", the source, the identity, the memory
plan and the execution (device and precision). Each is one function of :mod:`mednf.building.pipeline`'s list.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from mednf.arguments import CLI, Wording
from mednf.building.buildlog import say, stop_log
from mednf.building.continuation import keep_checkpoints
from mednf.building.distributed import on_every_rank
from mednf.building.frame import BuildFrame
from mednf.building.identity import build_identity, differences, source_identity, stored_identity
from mednf.building.recipe import recipe_record
from mednf.building.run import BuildRun
from mednf.engine.compiled import requested as requested_compile
from mednf.engine.config import EngineConfig
from mednf.engine.execution import Execution
from mednf.engine.fused_latent_grad import requested_kernel
from mednf.engine.memory import MemoryBudget
from mednf.engine.planner import MemoryPlan, plan_memory
from mednf.engine.presets import recipe_note, shorter_than_paper
from mednf.errors import BuildError, ConfigError, MednfError
from mednf.format.layout import (
    CARD,
    CONTINUE,
    INDEX,
    LATENTS,
    LOG,
    MANIFEST,
    MODEL,
    RECONSTRUCTIONS_PNG,
    TRAINING_CSV,
    TRAINING_PNG,
    WORK,
)
from mednf.format.reader import verify_dataset
from mednf.format.writer import DatasetWriter
from mednf.io.files import OWNER_MARK, atomic_write_json, owner_mark, write_owner_mark
from mednf.sources.base import SourceData
from mednf.sources.kinds import outdated_source, provide_again
from mednf.sources.read import load_source
from mednf.sources.spec import BuilderSpec

IDENTITY = "build.json"  # in .partial: the identity of the unfinished build
THREADS = "threads.json"  # in .partial: the CPU threads the build began with


def plan_rank(spec: BuilderSpec, cfg: EngineConfig, budget: MemoryBudget, device: torch.device,
              spatial: Sequence[int], rank_world: tuple[int, int]) -> MemoryPlan:
    """This rank's memory plan (its share ``rank::world`` of each global batch); ConfigError if one signal
    does not fit."""
    rank, world = rank_world
    local = len(range(rank, cfg.meta.batch_size, world))
    rows_out = max(spec.build.block_rows, spec.build.val_samples)
    return plan_memory(cfg, spatial, budget=budget, device=device, local_batch=max(1, local), rows_out=rows_out)


def refuse_linked_state(out: Path) -> None:
    """A one-line BuildError if the build state folder ``.partial`` or ``.continue`` of ``out`` is a symbolic link:
    mednf would write (and on --restart remove) its unfinished build wherever the link points."""
    for name in (WORK, CONTINUE):
        if (out / name).is_symlink():
            raise BuildError(f"{out / name} is a symbolic link: mednf keeps an unfinished build only in a real "
                             "folder of its own; remove the link and run the build again")


def make_writable(out: Path, wording: Wording = CLI, name: str | None = None) -> bool:
    """Create ``out`` (or take the empty folder or build folder :func:`~mednf.format.layout.check_build_folder`
    accepted) and mark it as the build folder of ``name`` (default: the folder's name): the mark is written
    atomically, never through a link, so it is also the check that ``out`` can be written. A one-line
    BuildError if it cannot be (``wording``: how the caller names ``out``) or its build state is a link
    (:func:`refuse_linked_state`). True if this call created the folder."""
    refuse_linked_state(out)
    try:
        created = not out.exists()
        out.mkdir(parents=True, exist_ok=True)
        mark = owner_mark(out)
        write_owner_mark(out, "build", mark[1] if mark else name or out.name)  # written each time: the probe
    except OSError as err:
        raise BuildError(f"output directory {out} is not writable ({err.strerror}); choose another "
                         f"{wording.option('out')}") from None
    return created


@contextmanager
def removed_if_only_log(out: Path, frame: BuildFrame, created: bool) -> Iterator[None]:
    """Around a build in ``out``: if it fails (an error, an interrupt) before writing anything but its log,
    what it wrote goes: a folder holding only ``build.log`` and mednf's mark is no dataset and no build to
    resume. The folder itself goes only if this build ``created`` it; an empty folder it was given stays,
    empty again. Every line of that log was also on the console (:func:`mednf.building.buildlog.say`); the
    last one says what was removed. The lock is still held (the caller's frame), so no other build can have
    started there."""
    try:
        yield
    except BaseException:
        if frame.dist.is_main and out.is_dir() and {p.name for p in out.iterdir()} <= {LOG, OWNER_MARK}:
            stop_log(frame.handler)
            frame.handler = None
            if created:
                shutil.rmtree(out, ignore_errors=True)
            else:
                for name in (LOG, OWNER_MARK):
                    (out / name).unlink(missing_ok=True)
            say(f"removed {out if created else f'build.log from {out}'}: the build failed before writing anything "
                "but build.log, whose lines are above", frame.dist)
        raise


def open_folder(run: BuildRun) -> DatasetWriter:
    """The writer of the dataset folder, after ``--restart`` removed an earlier build and temporary files of
    killed runs are gone (the caller holds the lock)."""
    refuse_linked_state(run.out)  # again under the lock: planted after the first look
    writer = DatasetWriter(run.out, latent_dim=run.cfg.field.latent_dim, chunk_rows=run.spec.build.block_rows)
    if run.dist.is_main:
        if run.options.restart:
            _clear(run.out)
        writer.prepare()
    run.dist.barrier()
    return writer


def _clear(out: Path) -> None:
    """--restart: remove an earlier build's files (only mednf's own names)."""
    names = (MANIFEST, MODEL, INDEX, CARD, WORK, LATENTS, TRAINING_CSV, TRAINING_PNG, RECONSTRUCTIONS_PNG, CONTINUE)
    for name in names:
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def already_complete(run: BuildRun) -> bool:
    """True if the folder holds this build complete (a rerun has nothing to do); a BuildError if it holds
    another complete build, or one whose source this mednf no longer draws."""
    if not (run.out / MANIFEST).is_file():
        return False
    manifest = verify_dataset(run.out, checksums=False)
    done = build_identity(manifest.builder, manifest.engine, max_samples=manifest.source.get("max_samples"))
    wanted = build_identity(run.spec.to_dict(), run.cfg, max_samples=run.options.max_samples)
    differ = differences(done, wanted)
    restart, out = run.options.wording.option("restart", True), run.options.wording.option("out")
    if manifest.name != run.spec.name:
        raise BuildError(f"{run.out} holds another dataset, {manifest.name} (this build is {run.spec.name}): choose "
                         f"another {out}, or pass {restart} to delete it and build {run.spec.name} there")
    if differ:
        raise BuildError(f"{run.out} holds a complete {manifest.name} built with other settings "
                         f"({'; '.join(differ[:3])}); pass {restart} to rebuild it, or choose another {out}")
    outdated = outdated_source(manifest.source)
    if outdated:
        raise BuildError(f"{run.out} holds a complete {manifest.name} whose source this mednf no longer draws "
                         f"({outdated}); pass {restart} to rebuild it, or choose another {out}")
    if run.dist.is_main and run.work.is_dir():  # killed between the manifest and the clean-up
        keep_checkpoints(run.work, run.out)
        shutil.rmtree(run.work, ignore_errors=True)
    run.say(f"{run.spec.name} is already complete in {run.out} (pass {restart} to build it again)")
    return True


def read_source(run: BuildRun, recorded: dict[str, Any] | None = None) -> SourceData:
    """The source data; rank 0 reads (and if needed downloads) first, the others then read the verified file.
    ``recorded``: the manifest ``source`` of the build this one continues, whose data is looked for where that
    build read it before anything is downloaded (as ``mednf decode`` / ``eval`` do)."""
    options = run.options

    def read() -> SourceData:
        return load_source(run.spec, root=options.medmnist_root, source_npz=options.source_npz,
                           max_samples=options.max_samples, download_missing=options.download,
                           progress=options.progress, warn=lambda m: run.say(f"warning: {m}"), recorded=recorded,
                           wording=options.wording)

    return on_every_rank(run.dist, read, MednfError, BuildError,
                         "reading the source data failed on another rank (see its message)", main_first=True)


def check_continued_source(run: BuildRun, source: SourceData, recorded: dict[str, Any]) -> None:
    """A continuation must read the data the finished build was made from (``recorded``: its manifest's
    ``source``). Both sides are compared as :func:`~mednf.building.identity.source_identity` (where the data
    was read is not part of it); the fix is the kind's own (:func:`mednf.sources.kinds.provide_again`)."""
    differ = differences(source_identity(recorded), source_identity(source.description))
    if differ:
        raise BuildError(f"the source data is not the one {run.spec.name} was built from ({'; '.join(differ[:3])}); "
                         f"to continue it, {provide_again(run.spec.name, recorded, run.options.wording)}")


def store_identity(run: BuildRun, source: SourceData) -> None:
    """Record what this build is (:mod:`mednf.building.identity`) on its first start; a rerun with other
    settings finds another identity stored and is refused."""
    identity = build_identity(run.spec.to_dict(), run.cfg, source=source.description)
    run.work.mkdir(exist_ok=True)
    run.dist.barrier()
    path = run.work / IDENTITY
    if path.is_file():
        differ = differences(stored_identity(json.loads(path.read_text(encoding="utf-8"))), identity)
        if differ:
            raise BuildError(f"{run.out} holds an unfinished build with other settings ({'; '.join(differ[:3])}); "
                             f"rerun with the same options, or pass {run.options.wording.option('restart', True)} to "
                             "discard it")
    elif run.dist.is_main:
        atomic_write_json(path, identity)


def keep_threads(run: BuildRun) -> None:
    """On the CPU, a resumed build runs with the thread count it began with: torch's reductions split their work
    by thread, so another count changes the last bits of the result, and a resume must give the bytes an
    uninterrupted build would. The count of a first start (``--threads``, or the cores free then) is recorded."""
    if run.device.type != "cpu":
        return
    path = run.work / THREADS
    now = torch.get_num_threads()
    if not path.is_file():
        if run.dist.is_main:
            atomic_write_json(path, {"threads": now})
        return
    try:
        began = json.loads(path.read_text(encoding="utf-8"))["threads"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # unreadable: the count of this start goes on, as for a build begun before it was recorded
    if type(began) is int and began >= 1 and began != now:
        torch.set_num_threads(began)
        run.say(f"resuming with the {began} CPU thread(s) this build began with, not {now}: another count changes "
                "the last bits of the result")


def plan_with_source(run: BuildRun, source: SourceData) -> MemoryPlan:
    """The memory plan again, now that the process holds the source images (every rank stops if one's does
    not fit); said in build.log."""
    spatial = tuple(source.splits["train"].images.shape[2:])
    plan = on_every_rank(run.dist, lambda: plan_rank(run.spec, run.cfg, run.budget, run.device, spatial,
                                                     (run.dist.rank, run.dist.world)),
                         ConfigError, ConfigError,
                         "the memory plan of another rank does not fit its budget (see its message)")
    run.say(plan.describe())
    return plan


def resolve_execution(run: BuildRun) -> Execution:
    """The build's device and what ``field.precision`` becomes there, resolved once for meta-learning and every
    fit; a fallback (bf16 without matrix units, tf32 off CUDA) is one ``warning:`` line in build.log and on the
    console. ``MEDNF_FIT_KERNEL`` and ``MEDNF_COMPILE`` are checked here too, so a bad value stops the build before
    meta-learning."""
    requested_kernel()
    requested_compile()
    execution = Execution.resolve(run.cfg.precision, run.device, warn=False)  # said here, in the build's words
    used = execution.precision
    if used.effective != used.requested:
        run.say(f"warning: precision {used.requested} is not available on {run.device}: {used.detail}; running "
                f"{used.effective} (recorded in the manifest)")
    return execution


def describe(run: BuildRun, source: SourceData) -> None:
    """One line in build.log: the source and the engine that meta-learns on it (and a note when a paper preset
    runs a shorter meta-training than the paper)."""
    cfg = run.cfg
    run.say(f"source: {source.description.get('file', source.description['kind'])}, splits {source.counts()}; "
            f"engine: K={cfg.field.num_layers} L={cfg.field.hidden_dim} P={cfg.field.latent_dim}, "
            f"{cfg.meta.steps} meta-iterations of B={cfg.meta.batch_size}")
    shorter = shorter_than_paper(run.spec.preset, cfg.meta.steps)
    if shorter:
        run.say(f"note: {shorter}")
    recipe = recipe_record(run.spec.preset, cfg)
    if recipe:
        run.say(f"note: {recipe_note(recipe)}")
