"""``mednf build``: one sub-dataset from its builder spec to a complete, verified dataset directory.

Stages, each resumable (state in ``<out>/.partial``):

1. **meta-training** (:mod:`mednf.building.trainer`): checkpoints, validation, best θ kept;
2. **fitting**: every sample of train/val/test in blocks of ``block_rows`` rows (= one Zarr chunk);
   block ``b`` of a split belongs to rank ``b mod world``; a finished block leaves a record
   (``.partial/blocks/<split>-<b>.npz``: PSNR, SSIM) written after its latents, so a block without a
   record is simply fitted again;
3. **finalize** (rank 0): check that every row was written, write ``index.parquet``,
   ``model.safetensors``, ``training.csv`` / ``training.png`` (:mod:`mednf.building.curves`),
   ``reconstructions.png`` (the first test samples) and the card, checksum every file, write ``mednf.json``
   last, drop ``.partial``.

A build directory is locked while a build runs in it (:func:`mednf.io.lock.dataset_lock`, the lock that
downloads and imports take too; the OS releases it even on SIGKILL). The build's identity (spec, engine,
source) is stored on first start; a rerun with other settings is refused unless ``--restart``.

Memory: before anything is allocated (before the source is read) every rank plans its meta micro-batch and
fit batch inside the memory budget (``memory_budget``; :mod:`mednf.engine.planner`) and refuses in one line
when one signal does not fit; after the source is read it plans again with what the process then holds.
The budget and the plan go to build.log and the manifest (``meta_training.memory``), not into the
identity: they change how the work is split, not its result (beyond float rounding), so a rerun with
another budget resumes.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import platform
import shutil
import sys
import time
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mednf.building.continuation import (
    continued_settings,
    keep_checkpoints,
    prepare_scratch,
    recover_swap,
    scratch_folder,
    swap_in,
)
from mednf.building.curves import check_tensorboard, plot_training, read_training
from mednf.building.distributed import Dist, setup
from mednf.building.trainer import CURVES, MetaTrainer, TrainSummary
from mednf.engine import field as nf
from mednf.engine.baselines import MARGIN_DB, mean_image, psnr_against, split_baselines, zero_latent_image
from mednf.engine.device import resolve_device
from mednf.engine.execution import Execution
from mednf.engine.config import RESULT_NEUTRAL_FIT, EngineConfig
from mednf.engine.fit import as_float_signals, fit_latents
from mednf.engine.fused_latent_grad import fit_kernel, kernel_record, requested_kernel
from mednf.engine.memory import MemoryBudget, peak_memory, resolve_budget
from mednf.engine.planner import MemoryPlan, fit_batch_now, plan_memory
from mednf.errors import BuildError, ConfigError, LockedError, MednfError
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
    mednf_home,
)
from mednf.format.manifest import Manifest, new_manifest
from mednf.format.reader import verify_dataset
from mednf.format.writer import DatasetWriter, SplitIndex, row_blocks
from mednf.io.files import atomic_write_bytes, atomic_write_json
from mednf.io.lock import dataset_lock
from mednf.sources.base import SourceData, SplitData
from mednf.sources.kinds import outdated_source, recorded_source, source_card_line
from mednf.sources.read import load_source
from mednf.format.splits import SPLITS
from mednf.sources.spec import BuilderSpec, load_builder, resolve_engine

log = logging.getLogger("mednf.building.pipeline")
PREVIEW_SAMPLES = 8  # test samples in reconstructions.png


@dataclass
class BuildOptions:
    out: Path | None = None  # default: $MEDNF_HOME/<Name>
    gpu: int | None = None  # None → CPU
    size: int | None = None
    preset: str | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # engine sections
    build_overrides: dict[str, int] = field(default_factory=dict)  # [build] settings
    medmnist_root: Path | None = None
    source_npz: Path | None = None
    max_samples: int | None = None
    download: bool = True
    restart: bool = False
    progress: bool = True
    memory_budget: MemoryBudget | str | int | None = None  # "8GB", bytes; None → a safe share of free memory
    continue_to: int | None = None  # continue a finished build's meta-training to this many iterations
    tensorboard: Path | None = None  # also log the training curves (and validation images) there



def prepare_spec(name_or_path: str | Path, options: BuildOptions) -> tuple[BuilderSpec, EngineConfig]:
    """The spec with --size/--preset/[build] overrides applied, and its engine config."""
    spec = load_builder(name_or_path)
    if options.size is not None:
        spec = spec.with_size(options.size)
    if options.preset is not None:  # another preset replaces the builder's whole [engine] section
        spec = dataclasses.replace(spec, preset=options.preset, engine_overrides={})
    if options.build_overrides:
        known = {f.name for f in dataclasses.fields(spec.build)}
        unknown = sorted(set(options.build_overrides) - known)
        if unknown:
            raise ConfigError(f"build settings {unknown} are unknown: expected {sorted(known)}; check --set build.*")
        spec = dataclasses.replace(spec, build=dataclasses.replace(spec.build, **options.build_overrides))
    if options.max_samples is not None and options.max_samples < 1:
        raise ConfigError(f"--max-samples {options.max_samples} is invalid: expected an integer ≥ 1")
    return spec, resolve_engine(spec, options.overrides)


@contextmanager
def _directory_lock(out: Path, dist: Dist):
    """The dataset lock of ``out`` (:mod:`mednf.io.lock`) for the whole build: rank 0 holds it, every rank
    learns the outcome."""
    with ExitStack() as stack:
        error = ""
        if dist.is_main:
            try:
                stack.enter_context(dataset_lock(out, "build"))
            except LockedError as err:
                error = str(err)
        if not dist.agree(not error):
            raise BuildError(error or f"{out} is locked by another process (see rank 0)")
        yield


RESULT_NEUTRAL_BUILD = ("checkpoint_every",)  # [build] settings that change when state is saved, not the result


def _builder_identity(builder: dict[str, Any]) -> dict[str, Any]:
    """A spec's ``to_dict()`` (or a manifest's ``builder``) without what does not change the result."""
    build_settings = {k: v for k, v in builder["build"].items() if k not in RESULT_NEUTRAL_BUILD}
    return builder | {"path": "", "build": build_settings}


def _engine_identity(engine: dict[str, Any]) -> dict[str, Any]:
    """An engine dict without the fit's batching settings (:meth:`EngineConfig.result_dict`)."""
    return EngineConfig.from_dict(engine).result_dict()


def _identity(spec: BuilderSpec, cfg: EngineConfig, source: SourceData) -> dict[str, Any]:
    """What makes two runs the same build (JSON-normalised, so it compares equal after a round trip). Settings
    that change how the work is split or saved, not its result (checkpoint interval, fit batch size, memory
    budgets), are left out: a rerun with other values resumes."""
    identity = {"builder": _builder_identity(spec.to_dict()), "engine": cfg.result_dict(), "source": source.description}
    return json.loads(json.dumps(identity))


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    if isinstance(old, dict) and isinstance(new, dict):
        return [d for k in sorted(set(old) | set(new), key=str)
                for d in _differences(old.get(k), new.get(k), f"{prefix}{k}.")]
    return [] if old == new else [f"{prefix.rstrip('.')}: {old!r} → {new!r}"]


def _check_identity(work: Path, identity: dict[str, Any], dist: Dist) -> None:
    path = work / "build.json"
    if path.is_file():
        old = json.loads(path.read_text(encoding="utf-8"))
        if isinstance(old, dict) and {"builder", "engine"} <= set(old):  # as written by any mednf version
            old = json.loads(json.dumps(old | {"builder": _builder_identity(old["builder"]),
                                               "engine": _engine_identity(old["engine"])}))
        if old != identity:
            differ = _differences(old, identity)
            raise BuildError(f"{work.parent} holds an unfinished build with other settings ({'; '.join(differ[:3])}); "
                             "rerun with the same options, or pass --restart to discard it")
    elif dist.is_main:
        atomic_write_json(path, identity)


def _setup_logging(out: Path, dist: Dist) -> logging.Handler | None:
    log.setLevel(logging.INFO)
    if not dist.is_main:
        return None
    handler = logging.FileHandler(out / LOG, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    return handler


def _say(message: str, dist: Dist) -> None:
    """Log to build.log and, on rank 0, to the console (above any progress bar)."""
    log.info(message)
    if dist.is_main:
        from tqdm.auto import tqdm

        tqdm.write(message, file=sys.stderr)


def _fit_splits(writer: DatasetWriter, work: Path, theta: dict[str, torch.Tensor], cfg: EngineConfig, spec: BuilderSpec,
                source: SourceData, execution: Execution, dist: Dist, progress: bool, plan: MemoryPlan) -> int:
    """Fit every block this rank owns and has not finished (each block's record holds its seconds), in
    batches planned now, beside what meta-learning left (:func:`mednf.engine.planner.fit_batch_now`);
    returns that batch size."""
    from tqdm.auto import tqdm

    batch = fit_batch_now(plan, cfg, source.splits["train"].images.shape[2:], execution.device)
    fit = dataclasses.replace(cfg.fit, batch_size=batch)
    _say(f"fitting in batches of {batch} signals", dist)

    records = work / "blocks"
    records.mkdir(exist_ok=True)
    rows = spec.build.block_rows
    todo: list[tuple[str, int, int, int]] = []
    total = 0
    for split in SPLITS:
        for b, (start, stop) in enumerate(row_blocks(len(source.splits[split].images), rows)):
            if b % dist.world != dist.rank:
                continue
            total += stop - start
            if not (records / f"{split}-{b:06d}.npz").is_file():
                todo.append((split, b, start, stop))
    done_before = total - sum(stop - start for _, _, start, stop in todo)
    if done_before:
        _say(f"fitting: {done_before} of {total} samples were already done, resuming", dist)
    bar = tqdm(total=total, initial=done_before, desc="fitting", unit="signal", dynamic_ncols=True,
               disable=not (progress and dist.is_main))
    for split, b, start, stop in todo:
        block_started = time.perf_counter()
        data = source.splits[split]
        result = fit_latents(theta, data.images[start:stop], cfg.field, fit, execution=execution, seed=spec.seed,
                             first_index=start, with_ssim=True,
                             on_batch=lambda n, _t, base=bar.n: bar.update(base + n - bar.n))
        writer.write_latents(split, start, result.latents.numpy())
        record = records / f"{split}-{b:06d}.npz"
        buffer = io.BytesIO()
        np.savez(buffer, psnr=result.psnr.numpy(), ssim=result.ssim.numpy(), start=np.int64(start),
                 seconds=np.float64(time.perf_counter() - block_started))
        atomic_write_bytes(record, buffer.getvalue())  # after the latents: a record means the block is done
        log.info(f"fitted {split}[{start}:{stop}] mean PSNR {float(result.psnr.mean()):.2f} dB")
    bar.close()
    return batch


def _collect_records(work: Path, split: str, count: int, rows: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-sample PSNR and SSIM of a split from its block records, and the fit seconds they took."""
    psnr = np.full(count, np.nan, dtype=np.float32)
    ssim = np.full(count, np.nan, dtype=np.float32)
    seconds = 0.0
    for b, (start, stop) in enumerate(row_blocks(count, rows)):
        path = work / "blocks" / f"{split}-{b:06d}.npz"
        if not path.is_file():
            raise BuildError(f"block {split}[{start}:{stop}] has no record in {path.parent}; rerun the build to fit it")
        with np.load(path, allow_pickle=False) as rec:
            if int(rec["start"]) != start or len(rec["psnr"]) != stop - start:
                raise BuildError(f"{path} does not describe rows {start}:{stop}; rerun with --restart")
            psnr[start:stop], ssim[start:stop] = rec["psnr"], rec["ssim"]
            seconds += float(rec["seconds"])
    return psnr, ssim, seconds


def _device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def _finalize(writer: DatasetWriter, work: Path, spec: BuilderSpec, cfg: EngineConfig, source: SourceData,
              theta: dict[str, torch.Tensor], summary: TrainSummary, execution: Execution, dist: Dist,
              plan: MemoryPlan, fit_batch: int, baseline: tuple[np.ndarray, float]) -> Manifest:
    """Index (with each split's baselines), θ, card and manifest (rank 0), then drop ``.partial``."""
    rows = spec.build.block_rows
    device, precision = execution.device, execution.precision
    fit_seconds = 0.0  # summed over blocks (and ranks), across resumed runs
    mean, val_baseline = baseline
    zero = zero_latent_image(theta, cfg.field, tuple(mean.shape[1:]))
    index = {}
    for split in SPLITS:
        data = source.splits[split]
        psnr, ssim, seconds = _collect_records(work, split, len(data.images), rows)
        fit_seconds += seconds
        index[split] = SplitIndex(data.source_index, data.labels, psnr, ssim,
                                  baselines=split_baselines(data.images, mean, zero))
    writer.write_theta(theta, {"field": dataclasses.asdict(cfg.field)})
    curves = _write_curves(work, writer.root, spec, summary, dist)
    preview = _write_preview(writer, spec, cfg, theta, source.splits["test"], index["test"].psnr, dist)
    total = sum(len(d.images) for d in source.splits.values())
    manifest = new_manifest(
        spec, cfg, source=recorded_source(spec, source), chunk_rows=rows,
        meta_training={"steps": summary.steps, "best_step": summary.best_step,
                       "best_val_psnr": summary.best_val_psnr, "val_samples": spec.build.val_samples,
                       "history": summary.history, "seconds": summary.seconds,
                       "memory": plan.to_dict() | {"measured_peak_bytes": peak_memory(device)},
                       "precision": precision.to_dict(), "curves": curves, "schedule": summary.schedule,
                       "baseline_check": {"val_mean_image_psnr": val_baseline, "margin_db": MARGIN_DB,
                                          "learns_per_sample": summary.learns_per_sample}
                       | (summary.diagnosis.as_dict() if summary.diagnosis is not None else {})},
        fit={"seconds": fit_seconds, "signals_per_second": total / fit_seconds, "batch_size": fit_batch}
        | kernel_record(fit_kernel(precision, device))
        | ({"preview": preview} if preview else {}),
        device=_device_name(device), world_size=dist.world, build_seconds=summary.seconds + fit_seconds)
    manifest = writer.finish(manifest, index, source_card_line(manifest.source))  # last: the manifest, whose presence means "complete"
    keep_checkpoints(work, writer.root)  # for --continue-to
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def _write_curves(work: Path, out: Path, spec: BuilderSpec, summary: TrainSummary, dist: Dist) -> dict[str, Any]:
    """``training.csv`` from the run's log and its plot ``training.png`` into the dataset; what the manifest
    records of them. A log that does not hold every iteration (meta-training began under a mednf that wrote
    none) is kept with ``complete: false`` and a warning."""
    source = work / CURVES
    if not source.is_file():
        _say("warning: this build's meta-training log is missing (begun by an older mednf); the dataset has no "
             "training.csv / training.png", dist)
        return {}
    atomic_write_bytes(out / TRAINING_CSV, source.read_bytes())
    done = [int(r["iteration"]) for r in read_training(out / TRAINING_CSV) if r["kind"] == "train"]
    complete = done == list(range(1, summary.steps + 1))
    if not complete:
        _say(f"warning: training.csv holds {len(done)} of {summary.steps} iterations (meta-training began under a "
             "mednf that wrote no log); it is kept as it is", dist)
    plot_training(out / TRAINING_CSV, out / TRAINING_PNG, best_step=summary.best_step,
                  title=f"{spec.name}: {summary.steps} meta-iterations, best validation {summary.best_val_psnr:.2f} dB "
                        f"at {summary.best_step}")
    return {"csv": TRAINING_CSV, "png": TRAINING_PNG, "complete": complete}


def _write_preview(writer: DatasetWriter, spec: BuilderSpec, cfg: EngineConfig, theta: dict[str, torch.Tensor],
                   test: SplitData, psnr: np.ndarray, dist: Dist) -> dict[str, Any]:
    """``reconstructions.png``: the first :data:`PREVIEW_SAMPLES` test samples as input / reconstruction /
    |error| rows (:func:`mednf.figures.grid_figure`), what the card shows; what the manifest records of it."""
    from mednf.figures import grid_figure, grid_title, save_figure

    count = min(PREVIEW_SAMPLES, len(test.images))
    if count == 0:
        return {}
    spatial = tuple(test.images.shape[2:])
    latents = torch.from_numpy(writer.read_latents("test", 0, count))  # [n, P]
    theta = {k: v.detach().cpu().float() for k, v in theta.items()}
    try:  # bounded memory (a 64³ volume at L = 256 is 2 GiB per layer and signal at once)
        recon = nf.decode_in_chunks(theta, latents, count, cfg.field, spatial).numpy()  # [n, D, *spatial]
        inputs = as_float_signals(np.ascontiguousarray(test.images[:count])).numpy()
        fig = grid_figure(recon, inputs, indices=range(count), psnr=psnr[:count],
                          title=grid_title(spec.name, "test", spatial, count))
        save_figure(fig, writer.root / RECONSTRUCTIONS_PNG)
    except (MemoryError, RuntimeError) as err:  # torch's CPU allocator raises RuntimeError ("can't allocate")
        if not isinstance(err, (MemoryError, torch.OutOfMemoryError)) and "allocat" not in str(err):
            raise
        _say(f"warning: not enough memory to draw {RECONSTRUCTIONS_PNG}; the dataset has none", dist)
        return {}
    return {"png": RECONSTRUCTIONS_PNG, "split": "test", "samples": count}


def _clear(out: Path) -> None:
    """--restart: remove an earlier build's files (only mednf's own names)."""
    for name in (MANIFEST, MODEL, INDEX, CARD, WORK, LATENTS, TRAINING_CSV, TRAINING_PNG, RECONSTRUCTIONS_PNG, CONTINUE):
        path = out / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def _rank_device(gpu: int | None) -> torch.device:
    device = resolve_device(gpu)
    if device.type == "cuda" and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per rank
        torch.cuda.set_device(device)
    return device


def build(name_or_path: str | Path, options: BuildOptions | None = None) -> Path:
    """Build (or resume, or confirm, or with ``continue_to`` continue) a dataset; returns its directory. See
    the module docstring."""
    options = options or BuildOptions()
    if options.tensorboard is not None:
        check_tensorboard()  # before any work
    if options.continue_to is not None:
        return _continue(name_or_path, options)
    spec, cfg = prepare_spec(name_or_path, options)
    device = _rank_device(options.gpu)
    budget = resolve_budget(options.memory_budget, device)
    _plan(spec, cfg, budget, device, (spec.source.size,) * spec.source.dims, _env_rank())  # refuse before any work
    out = Path(options.out or mednf_home() / spec.name).expanduser()
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as err:
        raise BuildError(f"output directory {out} is not writable ({err.strerror}); choose another --out") from None
    dist = setup(device)
    handler = None
    try:
        with _directory_lock(out, dist):
            if dist.is_main:
                recover_swap(out)  # a continuation killed in the middle of replacing this dataset
            dist.barrier()
            handler = _setup_logging(out, dist)
            return _build_locked(out, spec, cfg, options, device, dist, budget)
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        dist.close()


def _continue(name_or_path: str | Path, options: BuildOptions) -> Path:
    """``--continue-to N`` (:mod:`mednf.building.continuation`): the finished build's settings re-planned to N,
    built in a scratch folder, swapped in when complete."""
    target = options.continue_to
    if not isinstance(target, int) or isinstance(target, bool) or target < 1:
        raise ConfigError(f"--continue-to {target!r} is invalid: expected a number of meta-iterations ≥ 1")
    neutral_fit = {k: v for k, v in options.overrides.get("fit", {}).items() if k in RESULT_NEUTRAL_FIT}
    changed = ([f"--{name.replace('_', '-')}" for name in ("size", "preset", "max_samples")
                if getattr(options, name) is not None] + (["--restart"] if options.restart else [])
               + [f"{section}.{key}" for section, values in options.overrides.items() for key in values
                  if not (section == "fit" and key in RESULT_NEUTRAL_FIT)]
               + [f"build.{key}" for key in options.build_overrides if key not in RESULT_NEUTRAL_BUILD])
    if changed:
        raise ConfigError(f"--continue-to {target} continues the finished build with its own settings, but "
                          f"{', '.join(changed)} was given; drop it, or build anew with --restart")
    spec = load_builder(name_or_path)
    out = Path(options.out or mednf_home() / spec.name).expanduser()
    device = _rank_device(options.gpu)
    budget = resolve_budget(options.memory_budget, device)
    dist = setup(device)
    handler = None
    try:
        with _directory_lock(out, dist):
            finished = dist.agree(recover_swap(out)) if dist.is_main else dist.agree(True)
            if finished and Manifest.read(out).meta_training.get("steps") == target:
                _say(f"the continuation of {out} to {target} meta-iterations had finished; put it in place", dist)
                return out
            manifest, spec, cfg = continued_settings(out, target)
            if neutral_fit:
                cfg = dataclasses.replace(cfg, fit=dataclasses.replace(cfg.fit, **neutral_fit))
            spec = dataclasses.replace(spec, build=dataclasses.replace(spec.build, **options.build_overrides))
            if dist.is_main:
                prepare_scratch(out, manifest, cfg)
            dist.barrier()
            scratch = scratch_folder(out)
            handler = _setup_logging(scratch, dist)
            _say(f"continuing {manifest.name} from {manifest.meta_training['steps']} to {target} meta-iterations in "
                 f"{scratch}; {out} stays as it is until the new dataset is complete", dist)
            again = dataclasses.replace(options, continue_to=None, max_samples=manifest.source.get("max_samples"))
            _build_locked(scratch, spec, cfg, again, device, dist, budget, expect_source=manifest.source)
            if dist.is_main:
                swap_in(scratch, out)
                _say(f"replaced {out} by the continued build", dist)
            dist.barrier()
            return out
    finally:
        if handler is not None:
            log.removeHandler(handler)
            handler.close()
        dist.close()


def _resolve_execution(cfg: EngineConfig, device: torch.device, dist: Dist) -> Execution:
    """The build's device and what ``field.precision`` becomes there, resolved once for meta-learning and every
    fit; a fallback (bf16 without matrix units, tf32 off CUDA) is one ``warning:`` line in build.log and on the
    console. ``MEDNF_FIT_KERNEL`` is checked here too, so a bad value stops the build before meta-learning."""
    requested_kernel()
    execution = Execution.resolve(cfg.precision, device, warn=False)  # said here, in the build's own words
    used = execution.precision
    if used.effective != used.requested:
        _say(f"warning: precision {used.requested} is not available on {device}: {used.detail}; running "
             f"{used.effective} (recorded in the manifest)", dist)
    return execution


def _env_rank() -> tuple[int, int]:
    """(rank, world size) from torchrun's variables, before the process group exists."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _plan(spec: BuilderSpec, cfg: EngineConfig, budget: MemoryBudget, device: torch.device,
          spatial: tuple[int, ...], rank_world: tuple[int, int]) -> MemoryPlan:
    """This rank's memory plan (its share ``rank::world`` of each global batch); ConfigError if one signal
    does not fit."""
    rank, world = rank_world
    local = len(range(rank, cfg.meta.batch_size, world))
    rows_out = max(spec.build.block_rows, spec.build.val_samples)
    return plan_memory(cfg, spatial, budget=budget, device=device, local_batch=max(1, local), rows_out=rows_out)


def _build_locked(out: Path, spec: BuilderSpec, cfg: EngineConfig, options: BuildOptions,
                  device: torch.device, dist: Dist, budget: MemoryBudget,
                  expect_source: dict[str, Any] | None = None) -> Path:
    started = time.perf_counter()
    work = out / WORK
    writer = DatasetWriter(out, latent_dim=cfg.field.latent_dim, chunk_rows=spec.build.block_rows)
    if dist.is_main:
        if options.restart:
            _clear(out)
        writer.prepare()  # removes temporary files of killed runs (we hold the lock)
    dist.barrier()
    if (out / MANIFEST).is_file():
        manifest = verify_dataset(out, checksums=False)
        done = {"builder": _builder_identity(manifest.builder), "engine": _engine_identity(manifest.engine),
                "max_samples": manifest.source.get("max_samples")}
        wanted = json.loads(json.dumps({"builder": _builder_identity(spec.to_dict()), "engine": cfg.result_dict(),
                                        "max_samples": options.max_samples}))
        if done != wanted:
            raise BuildError(f"{out} holds a complete {manifest.name} built with other settings "
                             f"({'; '.join(_differences(done, wanted)[:3])}); pass --restart to rebuild it, "
                             "or choose another --out")
        outdated = outdated_source(manifest.source)
        if outdated:
            raise BuildError(f"{out} holds a complete {manifest.name} whose source this mednf no longer draws "
                             f"({outdated}); pass --restart to rebuild it, or choose another --out")
        if dist.is_main and work.is_dir():  # killed between the manifest and the clean-up
            keep_checkpoints(work, out)
            shutil.rmtree(work, ignore_errors=True)
        _say(f"{spec.name} is already complete in {out} (pass --restart to build it again)", dist)
        return out
    _say(f"building {spec.name} into {out} on {_device_name(device)}"
         + (f", {dist.world} processes" if dist.enabled else ""), dist)
    # rank 0 reads (and if needed downloads) first; the others then read the verified file
    source, error = None, ""
    for turn in ("main", "others"):
        if (turn == "main") == dist.is_main:
            try:
                source = load_source(spec, root=options.medmnist_root, source_npz=options.source_npz,
                                     max_samples=options.max_samples, download_missing=options.download,
                                     progress=options.progress, warn=lambda m: _say(f"warning: {m}", dist))
            except MednfError as err:
                error = str(err)
        if not dist.agree(not error):
            raise BuildError(error or "reading the source data failed on another rank (see its message)")
    assert source is not None
    expected = {k: v for k, v in (expect_source or {}).items() if k != "path"}  # where it was read: not identity
    if expect_source is not None and json.loads(json.dumps(source.description)) != expected:
        differ = _differences(expected, json.loads(json.dumps(source.description)))
        raise BuildError(f"the source data is not the one {spec.name} was built from ({'; '.join(differ[:3])}); "
                         "give the same files (--medmnist-root / --source-npz) to continue it")
    identity = _identity(spec, cfg, source)
    work.mkdir(exist_ok=True)
    dist.barrier()
    _check_identity(work, identity, dist)
    plan, error = None, ""
    try:  # again, now that the process holds the source images
        plan = _plan(spec, cfg, budget, device, tuple(source.splits["train"].images.shape[2:]), (dist.rank, dist.world))
    except ConfigError as err:
        error = str(err)
    if not dist.agree(not error):
        raise ConfigError(error or "the memory plan of another rank does not fit its budget (see its message)")
    assert plan is not None
    _say(plan.describe(), dist)
    execution = _resolve_execution(cfg, device, dist)
    _say(f"source: {source.description.get('file', source.description['kind'])}, splits {source.counts()}; "
         f"engine: K={cfg.field.num_layers} L={cfg.field.hidden_dim} P={cfg.field.latent_dim}, "
         f"{cfg.meta.steps} meta-iterations of B={cfg.meta.batch_size}", dist)

    mean = mean_image(source.splits["train"].images)  # [D, *spatial]: the mean-image baseline
    val_baseline = float(psnr_against(source.splits["val"].images[:spec.build.val_samples], mean).mean())
    trainer = MetaTrainer(cfg, spec.build, source.splits["train"].images, source.splits["val"].images, work,
                          seed=spec.seed, execution=execution, dist=dist, log=lambda m: _say(m, dist), plan=plan,
                          val_baseline=val_baseline, tensorboard=options.tensorboard)
    summary = trainer.run(progress=options.progress)
    theta = trainer.best_params()
    _say(f"meta-training done: best validation PSNR {summary.best_val_psnr:.2f} dB at iteration "
         f"{summary.best_step}", dist)

    created = work / "latents-created"
    if dist.is_main and not created.is_file():
        writer.create_latents(source.counts(), {"name": spec.name})
        atomic_write_bytes(created, b"")
    dist.barrier()
    fit_batch = _fit_splits(writer, work, theta, cfg, spec, source, execution, dist, options.progress, plan)
    dist.barrier()
    if dist.is_main:
        manifest = _finalize(writer, work, spec, cfg, source, theta, summary, execution, dist, plan, fit_batch,
                             (mean, val_baseline))
        line = ", ".join(f"{s} {v.count} @ {v.psnr_mean:.2f} dB" for s, v in manifest.splits.items())
        _say(f"done: {out} ({line}); {(time.perf_counter() - started) / 60:.1f} min this run", dist)
    dist.barrier()
    return out
