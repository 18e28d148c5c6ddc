"""``mednf build``: one sub-dataset from its builder spec to a complete, verified dataset directory.

:func:`build` settles what is fixed for the whole build (spec, engine, device, memory budget) into a
:class:`~mednf.building.run.BuildRun`, takes the folder (:func:`mednf.building.frame.build_frame`: the
ranks' process group, the dataset lock and build.log) and runs the stages of :func:`_build_locked`, one
function each, in this order:

1. :mod:`~mednf.building.prepare`: the folder (``--restart``), "is it complete already?", the source data,
   the build's identity (:mod:`mednf.building.identity`), the memory plan, the execution (device and
   precision);
2. :mod:`~mednf.building.metatrain`: meta-learning θ (:mod:`mednf.building.trainer`: checkpoints,
   validation, best θ kept);
3. :mod:`~mednf.building.fitting`: a latent for every sample, block by block;
4. :mod:`~mednf.building.finish`: index, θ, curves, preview, card, and ``mednf.json`` last.

Every stage is resumable (state in ``<out>/.partial``). A build directory is locked while a build runs in it
(:func:`mednf.io.lock.dataset_lock`, the lock that downloads and imports take too; the OS releases it even on
SIGKILL). The build's identity (spec, engine, source) is stored on first start; a rerun with other settings
is refused unless ``--restart``.

Memory: before anything is allocated (before the source is read) every rank plans its meta micro-batch and
fit batch inside the memory budget (``memory_budget``; :mod:`mednf.engine.planner`) and refuses in one line
when one signal does not fit; after the source is read it plans again with what the process then holds.
The budget and the plan go to build.log and the manifest (``meta_training.memory``), not into the
identity: they change how the work is split, not its result (beyond float rounding), so a rerun with
another budget resumes.

``--continue-to N`` (:func:`_continue`, :mod:`mednf.building.continuation`) runs the same stages in a
scratch folder with the finished build's settings and swaps the result in.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mednf.building import finish, fitting, metatrain, prepare
from mednf.building.buildlog import say
from mednf.building.continuation import (
    check_options,
    continued_settings,
    recover_swap,
    scratch_attempt,
    swap_in,
    with_neutral_options,
)
from mednf.building.curves import check_tensorboard
from mednf.building.distributed import env_rank, rank_device
from mednf.building.frame import build_frame
from mednf.building.options import BuildOptions, output_folder, prepare_spec
from mednf.building.run import BuildRun
from mednf.engine.memory import resolve_budget
from mednf.format.layout import check_build_folder, check_outside_datasets
from mednf.format.manifest import Manifest
from mednf.sources.spec import load_builder

__all__ = ["BuildOptions", "build"]


def build(name_or_path: str | Path, options: BuildOptions | None = None) -> Path:
    """Build (or resume, or confirm, or with ``continue_to`` continue) a dataset; returns its directory. See
    the module docstring."""
    options = options or BuildOptions()
    if options.tensorboard is not None:
        check_outside_datasets(options.tensorboard, options.wording.option("tensorboard"))  # before any work
        check_tensorboard()
    if options.continue_to is not None:
        return _continue(name_or_path, options)
    spec, cfg = prepare_spec(name_or_path, options)
    device = rank_device(options.gpu)
    budget = resolve_budget(options.memory_budget, device)
    prepare.plan_rank(spec, cfg, budget, device, (spec.source.size,) * spec.source.dims, env_rank())  # refuse now
    out = check_build_folder(output_folder(spec, options), options.wording.option("out"))
    created = prepare.make_writable(out, options.wording, spec.name)
    with build_frame(out, device) as frame:
        if frame.dist.is_main:
            recover_swap(out)  # a continuation killed in the middle of replacing this dataset
        frame.dist.barrier()
        frame.log_into(out)
        with prepare.removed_if_only_log(out, frame, created):  # failed before writing anything: no folder left
            return _build_locked(BuildRun(out, spec, cfg, options, device, frame.dist, budget))


def _continue(name_or_path: str | Path, options: BuildOptions) -> Path:
    """``--continue-to N`` (:mod:`mednf.building.continuation`): the finished build's settings re-planned to N,
    built in a scratch folder, swapped in when complete."""
    check_options(options)
    target = options.continue_to
    out = output_folder(load_builder(name_or_path), options)
    prepare.refuse_linked_state(out)
    device = rank_device(options.gpu)
    budget = resolve_budget(options.memory_budget, device)
    with build_frame(out, device) as frame:
        dist = frame.dist
        finished = dist.agree(recover_swap(out)) if dist.is_main else dist.agree(True)
        if finished and Manifest.read(out).meta_training.steps == target:
            say(f"the continuation of {out} to {target} meta-iterations had finished; put it in place", dist)
            return out
        manifest, spec, cfg = continued_settings(out, target, options.wording)
        spec, cfg = with_neutral_options(spec, cfg, options)
        with scratch_attempt(out, manifest, cfg, dist) as scratch:  # a refused attempt removes what it made
            frame.log_into(scratch)
            again = dataclasses.replace(options, continue_to=None, max_samples=manifest.source.get("max_samples"))
            run = BuildRun(scratch, spec, cfg, again, device, dist, budget)
            run.say(f"continuing {manifest.name} from {manifest.meta_training.steps} to {target} meta-iterations "
                    f"in {scratch}; {out} stays as it is until the new dataset is complete")
            _build_locked(run, continued_from=manifest.source)
        if dist.is_main:
            swap_in(scratch, out)
            run.say(f"replaced {out} by the continued build")
        dist.barrier()
        return out


def _build_locked(run: BuildRun, continued_from: dict[str, Any] | None = None) -> Path:
    """The stages of a build, in order; the caller holds the folder's lock. ``continued_from``: the finished
    build's ``source`` record, when this is its continuation (the data read must be the same)."""
    writer = prepare.open_folder(run)
    if prepare.already_complete(run):
        return run.out
    run.say(f"building {run.spec.name} into {run.out} on {run.device_name}"
            + (f", {run.dist.world} processes" if run.dist.enabled else ""))
    source = prepare.read_source(run, continued_from)
    if continued_from is not None:
        prepare.check_continued_source(run, source, continued_from)
    prepare.store_identity(run, source)
    prepare.keep_threads(run)
    plan = prepare.plan_with_source(run, source)
    execution = prepare.resolve_execution(run)
    prepare.describe(run, source)
    trained = metatrain.meta_train(run, source, plan, execution)
    fitting.create_latents(run, writer, source)
    fit_batch = fitting.fit_splits(run, writer, source, trained.theta, plan, execution)
    run.dist.barrier()
    finish.finish(run, writer, source, trained, execution, plan, fit_batch)
    run.dist.barrier()
    return run.out
