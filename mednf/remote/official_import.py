"""``mednf import-official``: turn one sub-dataset of the official MedNF release into mednf's format.

Reads the release with :mod:`mednf.remote.official` (weights-only, allow-listed), checks it against the builder
of the named sub-dataset (channels, dimensionality, label schema, split sizes), and writes a normal MedNF
dataset (``model.safetensors``, ``latents.zarr``, ``index.parquet``, card, manifest last) into a temporary
folder that is renamed to ``out`` only when complete. The manifest's ``origin`` says that the data came from
the official release, how it was read, and which source samples have no datapoint: the official fit dropped
each split's last incomplete batch, so those rows are absent (``origin.missing``), never invented.

Reconstruction PSNR/SSIM are measured only when asked (``measure=True``, needs the MedMNIST file): on a
CPU decoding a whole official split takes hours. Without it the index holds NaN and ``mednf eval`` measures
later. Labels are compared with the MedMNIST file whenever it is present locally.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mednf.engine.config import FieldConfig
from mednf.engine.field import decode
from mednf.engine.fit import as_float_signals
from mednf.engine.metrics import reconstruction_metrics
from mednf.errors import OfficialFormatError, OfficialImportError
from mednf.format.layout import check_outside_datasets
from mednf.format.manifest import new_manifest
from mednf.format.records import MetaTraining, Origin
from mednf.format.splits import SPLITS
from mednf.format.writer import DatasetWriter, SplitIndex, row_blocks
from mednf.io.files import make_scratch
from mednf.io.lock import dataset_lock
from mednf.remote.install import remove_dead_scratch
from mednf.remote.official import OfficialModel, OfficialSplit, missing_indices, read_official_model, read_split
from mednf.sources.base import SplitData
from mednf.sources.kinds import local_splits, official_description, source_card_line
from mednf.sources.medmnist import medmnist_root as default_root
from mednf.sources.spec import BuilderSpec, load_builder, resolve_engine

OFFICIAL_DOI = "10.5281/zenodo.14898708"




def _check_labels(labels: np.ndarray, spec: BuilderSpec, where: str) -> np.ndarray:
    """Labels ``[n, w]`` as the index stores them (``[n, 1]`` class, or ``[n, L]`` 0/1 for multi-label)."""
    names = spec.labels.names
    if spec.labels.task == "multi-label":
        if labels.shape[1] != len(names) or not np.isin(labels, (0, 1)).all():
            raise OfficialImportError(f"{where} has labels of width {labels.shape[1]} with values "
                                      f"{np.unique(labels)[:5]}: expected {len(names)} 0/1 flags for {spec.name}; "
                                      "is --name right?")
        return labels
    if labels.shape[1] != 1 or labels.min() < 0 or labels.max() >= len(names):
        raise OfficialImportError(f"{where} has labels of width {labels.shape[1]} in [{labels.min()}, {labels.max()}]: "
                           f"expected one class id in 0..{len(names) - 1} for {spec.name}; is --name right?")
    return labels


def import_official(directory: str | Path, name: str, out: str | Path, *, medmnist_root: str | Path | None = None,
                    measure: bool = False, w0: float | None = None, w0_increment: float | None = None,
                    origin: dict[str, Any] | None = None, device: str | torch.device | None = None,
                    progress: bool = True) -> Path:
    """Import the official release folder ``directory`` (model.pt, train/, val/, test/) of sub-dataset
    ``name`` (e.g. ``"ChestNF"``) into ``out`` (must not exist yet); returns ``out``."""
    started = time.perf_counter()
    directory, out = Path(directory).expanduser(), Path(out).expanduser()
    spec = load_builder(name)
    _check_layout(directory, out, spec)
    model = read_official_model(directory / "model.pt", w0=w0, w0_increment=w0_increment)
    field = model.field
    if (field.in_dims, field.out_dims) != (spec.source.dims, spec.source.channels):
        raise OfficialImportError(f"model.pt is a {field.in_dims}D field with {field.out_dims} channel(s), "
                                  f"{spec.name} has {spec.source.dims}D images with {spec.source.channels}; "
                                  "is --name right?")
    splits = _read_datapoints(directory, spec, field.latent_dim, progress)
    missing = _missing_samples(directory, spec, splits)
    source = _check_against_source(spec, splits, medmnist_root, measure)
    release = Release(model, splits, missing, source, measure, device, progress)
    records = _records(spec, directory, release, origin)
    with dataset_lock(out, "import"):
        if out.exists() and (not out.is_dir() or any(out.iterdir())):  # again, now that no one else writes it
            raise OfficialImportError(f"--out {out} exists and is not empty; remove it or choose another folder")
        remove_dead_scratch(out)  # .<Name>.import-<pid>/ of killed imports (marked as mednf's scratch)
        box = make_scratch(out.parent, f".{out.name}.import-{os.getpid()}")
        try:
            work = box / out.name
            _write(work, spec, release, records, time.perf_counter() - started)
            if out.exists():
                out.rmdir()  # empty (checked above)
            os.replace(work, out)
        finally:
            shutil.rmtree(box, ignore_errors=True)
    return out


@dataclass
class Release:
    """What was read of one sub-dataset of the release, and how to write it."""

    model: OfficialModel
    splits: dict[str, OfficialSplit]  # split → latents [n, P], labels [n, w], source indices [n]
    missing: dict[str, list[int]]  # split → source indices without a datapoint
    source: dict[str, SplitData] | None  # the MedMNIST splits when present locally (labels checked against them)
    measure: bool  # decode every latent and record PSNR/SSIM
    device: str | torch.device | None
    progress: bool


def _check_layout(directory: Path, out: Path, spec: BuilderSpec) -> None:
    """The release folder has the official layout and ``out`` is free and outside every dataset (one-line errors
    otherwise)."""
    check_outside_datasets(out, "--out")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise OfficialImportError(f"--out {out} exists and is not empty; remove it or choose another folder")
    if not directory.is_dir():
        raise OfficialFormatError(f"{directory} is not a folder; give the official release folder of {spec.name} "
                                  "(model.pt, train/, val/, test/)")
    absent = [s for s in SPLITS if not (directory / s).is_dir()]
    if absent:
        raise OfficialFormatError(f"{directory} has no {', '.join(absent)}/ folder: expected the official layout "
                                  "model.pt, train/, val/, test/")


def _read_datapoints(directory: Path, spec: BuilderSpec, latent_dim: int, progress: bool) -> dict[str, OfficialSplit]:
    """Every split's datapoints, checked against the builder's split sizes and label schema."""
    total = sum(len(list((directory / s).glob("datapoint_*.pt"))) for s in SPLITS)
    splits = {}
    with tqdm(total=total, desc=f"read {spec.name} datapoints", unit="file", disable=not progress) as bar:
        for split in SPLITS:
            part = read_split(directory / split, latent_dim, progress=bar.update)
            expected = spec.splits[split]
            if part.indices[-1] >= expected:
                raise OfficialImportError(f"{directory / split} has datapoint_{part.indices[-1]}.pt, but "
                                          f"{spec.name} {split} has {expected} samples (0..{expected - 1}); "
                                          "is --name right?")
            part.labels = _check_labels(part.labels, spec, str(directory / split))
            splits[split] = part
    return splits


def _missing_samples(directory: Path, spec: BuilderSpec, splits: dict[str, OfficialSplit]) -> dict[str, list[int]]:
    """Per split, the source indices without a datapoint: only a dropped last batch, else the copy is damaged."""
    missing = {s: missing_indices(p.indices, spec.splits[s]) for s, p in splits.items()}
    for split, absent in missing.items():
        # the official fit drops only the *last* incomplete batch: a gap elsewhere means a damaged copy
        if absent and absent != list(range(absent[0], spec.splits[split])):
            gaps = [i for i in absent if i < len(splits[split].indices)]
            raise OfficialImportError(f"{directory / split} lacks datapoints {gaps[:5]} inside the split (not only a "
                                      "dropped last batch); the release is incomplete, unpack or download it again")
    return missing


def _check_against_source(spec: BuilderSpec, splits: dict[str, OfficialSplit], medmnist_root: str | Path | None,
                          measure: bool) -> dict[str, SplitData] | None:
    """The MedMNIST splits when present locally, after checking the release's labels against them."""
    source = local_splits(spec, medmnist_root)
    if source is None:
        if measure:
            raise OfficialImportError(f"measuring needs {default_root(medmnist_root) / spec.source.file_name} "
                                      "(official md5); download it there or leave out --measure")
        return None
    for split, part in splits.items():
        wrong = int((source[split].labels[part.indices] != part.labels).any(axis=1).sum())
        if wrong:
            raise OfficialImportError(f"{wrong} of {len(part.indices)} {split} labels differ from "
                                      f"{spec.source.file_name} at the same indices; the release is not "
                                      f"{spec.name} at {spec.source.size}px")
    return source


def _records(spec: BuilderSpec, directory: Path, release: Release,
             origin: dict[str, Any] | None) -> tuple[dict[str, Any], MetaTraining, Origin]:
    """The manifest's ``source``, ``meta_training`` and ``origin`` of an imported release."""
    source = {**official_description(spec), "labels_checked": release.source is not None}
    training = MetaTraining(steps=None, best_step=None, by="the MedFuncta authors (official release)", history=[],
                            note="engine.meta and engine.fit are mednf's preset for this builder, assumed, not read "
                                 "from the release; only engine.field is read from model.pt")
    model = release.model
    where = Origin(kind="official-release", doi=OFFICIAL_DOI, **(origin or {"folder": str(directory)}),
                   model_file="whole pickled module (read with inert stand-ins)" if model.whole_module
                   else "state dict", w0s=list(model.w0s), missing=release.missing,
                   missing_note="source indices without a datapoint: the official fit dropped each split's last "
                                "incomplete batch", measured=release.measure)
    return source, training, where


def _write(work: Path, spec: BuilderSpec, release: Release, records: tuple[dict[str, Any], MetaTraining, Origin],
           seconds: float) -> None:
    """The dataset in ``work``: θ, latents, index (measured if asked), card, manifest last."""
    field, rows = release.model.field, spec.build.block_rows
    writer = DatasetWriter(work, latent_dim=field.latent_dim, chunk_rows=rows)
    writer.prepare()
    writer.write_theta(release.model.theta, {"field": dataclasses.asdict(field), "origin": "official MedNF release"})
    writer.create_latents({s: len(p.indices) for s, p in release.splits.items()}, {"name": spec.name})
    index = {}
    for split, part in release.splits.items():
        n = len(part.indices)
        for start, stop in row_blocks(n, rows):
            writer.write_latents(split, start, part.latents[start:stop])
        psnr = np.full(n, np.nan, dtype=np.float32)
        ssim = np.full(n, np.nan, dtype=np.float32)
        if release.measure and release.source is not None:
            psnr, ssim = _measure(release.model.theta, field, part.latents,
                                  release.source[split].images[part.indices], release.device, release.progress, split)
        index[split] = SplitIndex(part.indices, part.labels, psnr, ssim)
    source, training, origin = records
    cfg = resolve_engine(spec).replace(field=dataclasses.asdict(field))
    manifest = new_manifest(spec, cfg, source=source, chunk_rows=rows, meta_training=training, fit=None,
                            device=str(release.device or "cpu"), world_size=1, build_seconds=seconds, origin=origin)
    writer.finish(manifest, index, source_card_line(manifest.source))


def _measure(theta: dict[str, torch.Tensor], field: FieldConfig, latents: np.ndarray, images: np.ndarray,
             device: str | torch.device | None, progress: bool, split: str,
             batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """PSNR and SSIM ``[n]`` of the decoded latents ``[n, P]`` against ``images`` (uint8 or float, channels-first)."""
    device = torch.device(device or "cpu")
    theta = {k: v.to(device) for k, v in theta.items()}
    spatial = tuple(images.shape[2:])
    psnr, ssim = np.empty(len(latents), np.float32), np.empty(len(latents), np.float32)
    for a in tqdm(range(0, len(latents), batch), desc=f"measure {split}", disable=not progress):
        phi = torch.from_numpy(latents[a:a + batch]).to(device)
        decoded = decode(theta, phi, field, spatial).cpu()
        _, p, s = reconstruction_metrics(decoded, as_float_signals(images[a:a + batch]))
        psnr[a:a + batch], ssim[a:a + batch] = p.numpy(), s.numpy()
    return psnr, ssim
