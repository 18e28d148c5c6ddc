"""The last stage (rank 0): check that every row was fitted, write ``index.parquet`` (with each split's
baselines), ``model.safetensors``, ``training.csv`` / ``training.png`` (:mod:`mednf.building.curves`),
``reconstructions.png`` (the first test samples) and the card, checksum every file, write ``mednf.json``
last — its presence means "complete" — and drop ``.partial`` (keeping the checkpoints for ``--continue-to``).
"""

from __future__ import annotations

import dataclasses
import shutil
import time
from typing import Any

import numpy as np
import torch

from mednf.building.continuation import keep_checkpoints
from mednf.building.curves import plot_training, read_training
from mednf.building.fitting import collect_records
from mednf.building.metatrain import Trained
from mednf.building.recipe import recipe_record
from mednf.building.run import BuildRun
from mednf.building.trainer import CURVES, TrainSummary
from mednf.engine import field as nf
from mednf.engine.baselines import MARGIN_DB, split_baselines, zero_latent_image
from mednf.engine.execution import Execution
from mednf.engine.fit import as_float_signals, fit_compile_report
from mednf.engine.fused_latent_grad import fit_kernel, kernel_record
from mednf.engine.memory import peak_memory
from mednf.engine.planner import MemoryPlan
from mednf.engine.precision import float32_products
from mednf.figures import grid_figure, grid_title, save_figure
from mednf.format.layout import RECONSTRUCTIONS_PNG, TRAINING_CSV, TRAINING_PNG
from mednf.format.manifest import Manifest, new_manifest
from mednf.format.splits import SPLITS
from mednf.format.writer import DatasetWriter, SplitIndex
from mednf.io.files import atomic_write_bytes
from mednf.sources.base import SourceData, SplitData
from mednf.sources.kinds import recorded_source, source_card_line

PREVIEW_SAMPLES = 8  # test samples in reconstructions.png


def finish(run: BuildRun, writer: DatasetWriter, source: SourceData, trained: Trained, execution: Execution,
           plan: MemoryPlan, fit_batch: int) -> None:
    """On rank 0: the dataset's files and its manifest (:func:`finalize`), then the build's last line."""
    if not run.dist.is_main:
        return
    manifest = finalize(run, writer, source, trained, execution, plan, fit_batch)
    line = ", ".join(f"{s} {v.count} @ {v.psnr_mean:.2f} dB" for s, v in manifest.splits.items())
    run.say(f"done: {run.out} ({line}); {(time.perf_counter() - run.started) / 60:.1f} min this run")


def finalize(run: BuildRun, writer: DatasetWriter, source: SourceData, trained: Trained, execution: Execution,
             plan: MemoryPlan, fit_batch: int) -> Manifest:
    """Index (with each split's baselines), θ, card and manifest, then drop ``.partial``."""
    spec, cfg, summary, theta = run.spec, run.cfg, trained.summary, trained.theta
    device, precision = execution.device, execution.precision
    rows = spec.build.block_rows
    fit_seconds = 0.0  # summed over blocks (and ranks), across resumed runs
    zero = zero_latent_image(theta, cfg.field, tuple(trained.mean.shape[1:]))
    index = {}
    for split in SPLITS:
        data = source.splits[split]
        psnr, ssim, seconds = collect_records(run.work, split, len(data.images), rows)
        fit_seconds += seconds
        index[split] = SplitIndex(data.source_index, data.labels, psnr, ssim,
                                  baselines=split_baselines(data.images, trained.mean, zero))
    writer.write_theta(theta, {"field": dataclasses.asdict(cfg.field)})
    curves = write_curves(run, summary)
    preview = write_preview(run, writer, theta, source.splits["test"], index["test"].psnr)
    total = sum(len(d.images) for d in source.splits.values())
    manifest = new_manifest(
        spec, cfg, source=recorded_source(spec, source), chunk_rows=rows,
        meta_training={"steps": summary.steps, "best_step": summary.best_step,
                       "best_val_psnr": summary.best_val_psnr, "val_samples": spec.build.val_samples,
                       "history": summary.history, "seconds": summary.seconds,
                       "memory": plan.to_dict() | {"measured_peak_bytes": peak_memory(device)},
                       "precision": precision.to_dict(), "float32_products": float32_products(precision),
                       "curves": curves, "schedule": summary.schedule,
                       **({"compiled": summary.compiled} if summary.compiled is not None else {}),
                       **({"recipe": recipe} if (recipe := recipe_record(spec.preset, cfg)) else {}),
                       "baseline_check": {"val_mean_image_psnr": trained.val_baseline, "margin_db": MARGIN_DB,
                                          "learns_per_sample": summary.learns_per_sample}
                       | (summary.diagnosis.as_dict() if summary.diagnosis is not None else {})},
        fit={"seconds": fit_seconds, "signals_per_second": total / fit_seconds, "batch_size": fit_batch}
        | kernel_record(fit_kernel(precision, device))
        | ({"check": check.to_dict()} if (check := fit_compile_report(cfg.field, precision, device)) else {})
        | ({"preview": preview} if preview else {}),
        device=run.device_name, world_size=run.dist.world, build_seconds=summary.seconds + fit_seconds)
    manifest = writer.finish(manifest, index, source_card_line(manifest.source))  # last: means "complete"
    keep_checkpoints(run.work, writer.root)  # for --continue-to
    shutil.rmtree(run.work, ignore_errors=True)
    return manifest


def write_curves(run: BuildRun, summary: TrainSummary) -> dict[str, Any]:
    """``training.csv`` from the run's log and its plot ``training.png`` into the dataset; what the manifest
    records of them. A log that does not hold every iteration (meta-training began under a mednf that wrote
    none) is kept with ``complete: false`` and a warning."""
    source = run.work / CURVES
    if not source.is_file():
        run.say("warning: this build's meta-training log is missing (begun by an older mednf); the dataset has no "
                "training.csv / training.png")
        return {}
    atomic_write_bytes(run.out / TRAINING_CSV, source.read_bytes())
    done = [int(r["iteration"]) for r in read_training(run.out / TRAINING_CSV) if r["kind"] == "train"]
    complete = done == list(range(1, summary.steps + 1))
    if not complete:
        run.say(f"warning: training.csv holds {len(done)} of {summary.steps} iterations (meta-training began "
                "under a mednf that wrote no log); it is kept as it is")
    plot_training(run.out / TRAINING_CSV, run.out / TRAINING_PNG, best_step=summary.best_step,
                  title=f"{run.spec.name}: {summary.steps} meta-iterations, best validation "
                        f"{summary.best_val_psnr:.2f} dB at {summary.best_step}")
    return {"csv": TRAINING_CSV, "png": TRAINING_PNG, "complete": complete}


def write_preview(run: BuildRun, writer: DatasetWriter, theta: dict[str, torch.Tensor], test: SplitData,
                  psnr: np.ndarray) -> dict[str, Any]:
    """``reconstructions.png``: the first :data:`PREVIEW_SAMPLES` test samples as input / reconstruction /
    |error| rows (:func:`mednf.figures.grid_figure`), what the card shows; what the manifest records of it."""
    count = min(PREVIEW_SAMPLES, len(test.images))
    if count == 0:
        return {}
    spatial = tuple(test.images.shape[2:])
    latents = torch.from_numpy(writer.read_latents("test", 0, count))  # [n, P]
    theta = {k: v.detach().cpu().float() for k, v in theta.items()}
    try:  # bounded memory (a 64³ volume at L = 256 is 2 GiB per layer and signal at once)
        recon = nf.decode_in_chunks(theta, latents, count, run.cfg.field, spatial).numpy()  # [n, D, *spatial]
        inputs = as_float_signals(np.ascontiguousarray(test.images[:count])).numpy()
        fig = grid_figure(recon, inputs, indices=range(count), psnr=psnr[:count],
                          title=grid_title(run.spec.name, "test", spatial, count))
        save_figure(fig, writer.root / RECONSTRUCTIONS_PNG)
    except (MemoryError, RuntimeError) as err:  # torch's CPU allocator raises RuntimeError ("can't allocate")
        if not isinstance(err, (MemoryError, torch.OutOfMemoryError)) and "allocat" not in str(err):
            raise
        run.say(f"warning: not enough memory to draw {RECONSTRUCTIONS_PNG}; the dataset has none")
        return {}
    return {"png": RECONSTRUCTIONS_PNG, "split": "test", "samples": count}
