"""The fitting stage: a latent for every sample of train/val/test, in blocks of ``block_rows`` rows (= one Zarr
chunk). Block ``b`` of a split belongs to rank ``b mod world``; a finished block leaves a record
(``.partial/blocks/<split>-<b>.npz``: PSNR, SSIM, seconds) written after its latents, so a block without a
record is simply fitted again."""

from __future__ import annotations

import dataclasses
import io
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mednf.building.buildlog import log
from mednf.building.run import BuildRun
from mednf.engine.execution import Execution
from mednf.engine.fit import fit_latents
from mednf.engine.planner import MemoryPlan, fit_batch_now
from mednf.errors import BuildError
from mednf.format.splits import SPLITS
from mednf.format.writer import DatasetWriter, row_blocks
from mednf.io.files import atomic_write_bytes
from mednf.sources.base import SourceData

CREATED = "latents-created"  # in .partial: the latent arrays exist (created once, by rank 0)


def create_latents(run: BuildRun, writer: DatasetWriter, source: SourceData) -> None:
    """The empty latent arrays of every split, once (a resumed build keeps those it made)."""
    created = run.work / CREATED
    if run.dist.is_main and not created.is_file():
        writer.create_latents(source.counts(), {"name": run.spec.name})
        atomic_write_bytes(created, b"")
    run.dist.barrier()


def _record(work: Path, split: str, block: int) -> Path:
    return work / "blocks" / f"{split}-{block:06d}.npz"


def fit_splits(run: BuildRun, writer: DatasetWriter, source: SourceData, theta: dict[str, torch.Tensor],
               plan: MemoryPlan, execution: Execution) -> int:
    """Fit every block this rank owns and has not finished (each block's record holds its seconds), in
    batches planned now, beside what meta-learning left (:func:`mednf.engine.planner.fit_batch_now`);
    returns that batch size."""
    cfg, dist = run.cfg, run.dist
    batch = fit_batch_now(plan, cfg, source.splits["train"].images.shape[2:], execution.device)
    fit = dataclasses.replace(cfg.fit, batch_size=batch)
    run.say(f"fitting in batches of {batch} signals")

    (run.work / "blocks").mkdir(exist_ok=True)
    todo: list[tuple[str, int, int, int]] = []
    total = 0
    for split in SPLITS:
        for b, (start, stop) in enumerate(row_blocks(len(source.splits[split].images), run.spec.build.block_rows)):
            if b % dist.world != dist.rank:
                continue
            total += stop - start
            if not _record(run.work, split, b).is_file():
                todo.append((split, b, start, stop))
    done_before = total - sum(stop - start for _, _, start, stop in todo)
    if done_before:
        run.say(f"fitting: {done_before} of {total} samples were already done, resuming")
    bar = tqdm(total=total, initial=done_before, desc="fitting", unit="signal", dynamic_ncols=True,
               disable=not (run.options.progress and dist.is_main))
    for split, b, start, stop in todo:
        block_started = time.perf_counter()
        result = fit_latents(theta, source.splits[split].images[start:stop], cfg.field, fit, execution=execution,
                             seed=run.spec.seed, first_index=start, with_ssim=True,
                             on_batch=lambda n, _t, base=bar.n: bar.update(base + n - bar.n))
        writer.write_latents(split, start, result.latents.numpy())
        buffer = io.BytesIO()
        np.savez(buffer, psnr=result.psnr.numpy(), ssim=result.ssim.numpy(), start=np.int64(start),
                 seconds=np.float64(time.perf_counter() - block_started))
        atomic_write_bytes(_record(run.work, split, b), buffer.getvalue())  # after the latents: the block is done
        log.info(f"fitted {split}[{start}:{stop}] mean PSNR {float(result.psnr.mean()):.2f} dB")
    bar.close()
    return batch


def collect_records(work: Path, split: str, count: int, rows: int) -> tuple[np.ndarray, np.ndarray, float]:
    """Per-sample PSNR and SSIM ``[count]`` of a split from its block records, and the fit seconds they took."""
    psnr = np.full(count, np.nan, dtype=np.float32)
    ssim = np.full(count, np.nan, dtype=np.float32)
    seconds = 0.0
    for b, (start, stop) in enumerate(row_blocks(count, rows)):
        path = _record(work, split, b)
        if not path.is_file():
            raise BuildError(f"block {split}[{start}:{stop}] has no record in {path.parent}; rerun the build to fit it")
        with np.load(path, allow_pickle=False) as rec:
            if int(rec["start"]) != start or len(rec["psnr"]) != stop - start:
                raise BuildError(f"{path} does not describe rows {start}:{stop}; rerun with --restart")
            psnr[start:stop], ssim[start:stop] = rec["psnr"], rec["ssim"]
            seconds += float(rec["seconds"])
    return psnr, ssim, seconds
