"""``mednf eval``: reconstruction quality of a MedNF dataset, decoded latents vs the source images.

Per sample: MSE, PSNR (data range 1) and SSIM (torchmetrics, as :mod:`mednf.engine.metrics`) of the clamped
native-resolution decode against the source image (MedMNIST root, or the regenerated phantoms). Written as
``summary.json`` (per split: means, sd, and the PSNR recorded at build time for comparison),
``samples.parquet`` (one row per sample) and optionally a PNG of inputs, reconstructions and |error| maps.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mednf.dataset import MedNFDataset
from mednf.engine.metrics import reconstruction_metrics
from mednf.errors import ConfigError, EvalError
from mednf.figures import dataset_figure, save_figure
from mednf.format.layout import check_outside_datasets
from mednf.format.splits import canonical_split
from mednf.io.files import atomic_write_bytes
from mednf.loading import find_dataset, load
from mednf.sources.kinds import images_unavailable
from mednf.sources.read import source_images


@dataclass
class SplitEval:
    """One split's per-signal reconstruction quality ``[N]`` against its source images."""

    split: str
    rows: np.ndarray  # [N]
    source_index: np.ndarray  # [N]
    mse: np.ndarray  # [N]
    psnr: np.ndarray  # [N] dB
    ssim: np.ndarray  # [N] (NaN when a side is < 11 pixels)
    stored_psnr: np.ndarray  # [N] recorded at build time (NaN for an unmeasured import)
    baselines: dict[str, float] | None = None  # the split's PSNR without latents, recorded at build

    def summary(self) -> dict[str, Any]:
        """Count, means (MSE, PSNR, SSIM, the stored PSNR), the PSNR's spread and the baselines, JSON-ready."""
        ssim = float(np.nanmean(self.ssim)) if np.isfinite(self.ssim).any() else None
        stored = float(np.nanmean(self.stored_psnr)) if np.isfinite(self.stored_psnr).any() else None
        return {"count": len(self.rows), "mse_mean": float(self.mse.mean()), "psnr_mean": float(self.psnr.mean()),
                "psnr_std": float(self.psnr.std()), "ssim_mean": ssim, "stored_psnr_mean": stored,
                "baselines": self.baselines}


@dataclass
class EvalReport:
    """What :func:`evaluate` measured on a dataset, split by split."""

    name: str
    splits: dict[str, SplitEval] = field(default_factory=dict)
    seconds: float = 0.0
    device: str = "cpu"

    def summary(self) -> dict[str, Any]:
        """The report with each split's :meth:`SplitEval.summary`, JSON-ready."""
        return {"name": self.name, "device": self.device, "seconds": self.seconds,
                "splits": {s: e.summary() for s, e in self.splits.items()}}


def _split_images(ds: MedNFDataset, medmnist_root: str | Path | None) -> np.ndarray:
    images = source_images(ds.manifest, ds.split, ds.source_index, medmnist_root)
    if images is None:
        raise EvalError(f"the source images of {ds.name} are not available: "
                        f"{images_unavailable(ds.manifest, medmnist_root)}")
    return images


def evaluate(name_or_path: str | Path, splits: str | Iterable[str] | None = ("test",), *,
             root: str | Path | None = None, medmnist_root: str | Path | None = None,
             device: str | torch.device | None = None, batch_size: int = 256, progress: bool = True) -> EvalReport:
    """Decode every latent of ``splits`` (None: all) and compare with the source images."""
    from tqdm.auto import tqdm

    path = find_dataset(name_or_path, root)
    device = torch.device(device or "cpu")
    start = time.perf_counter()
    dsets = load(path, split=None, device=device)
    available = list(dsets.keys())
    names = available if splits is None else [splits] if isinstance(splits, str) else list(splits)
    names = [canonical_split(s) if isinstance(s, str) else s for s in names]  # "validation" → "val"
    unknown = [s for s in names if s not in available]
    if unknown or not names:
        raise ConfigError(f"splits = {unknown or names!r} is invalid: expected some of {', '.join(available)} "
                          "(or None for all)")
    report = EvalReport(name=dsets[names[0]].name if names else str(path), device=str(device))
    for split in names:
        ds = dsets[split]
        images = _split_images(ds, medmnist_root)  # [N, D, *spatial]
        n = len(ds)
        mse, psnr, ssim = (np.empty(n, dtype=np.float64) for _ in range(3))
        with tqdm(total=n, desc=f"eval {split}", unit="img", disable=not progress) as bar:
            for a in range(0, n, batch_size):
                b = min(n, a + batch_size)
                decoded = ds.decode(np.arange(a, b), device=device)
                m, p, s = reconstruction_metrics(decoded, torch.from_numpy(images[a:b]))
                mse[a:b], psnr[a:b], ssim[a:b] = m.numpy(), p.numpy(), s.numpy()
                bar.update(b - a)
        report.splits[split] = SplitEval(split, ds.rows, ds.source_index, mse, psnr, ssim, ds.psnr.astype(np.float64),
                                         ds.manifest.splits[split].baselines)
    report.seconds = time.perf_counter() - start
    return report


def write_report(report: EvalReport, out: str | Path) -> Path:
    """``out/summary.json`` and ``out/samples.parquet`` (split, row, source_index, mse, psnr, ssim, stored_psnr)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = check_outside_datasets(Path(out), "--out")
    out.mkdir(parents=True, exist_ok=True)
    parts = list(report.splits.values())
    table = pa.table({
        "split": pa.array(np.concatenate([[e.split] * len(e.rows) for e in parts]) if parts else [], pa.string()),
        "row": pa.array(np.concatenate([e.rows for e in parts]) if parts else [], pa.int64()),
        "source_index": pa.array(np.concatenate([e.source_index for e in parts]) if parts else [], pa.int64()),
        **{k: pa.array(np.concatenate([getattr(e, k) for e in parts]) if parts else [], pa.float64())
           for k in ("mse", "psnr", "ssim", "stored_psnr")},
    })
    buffer = pa.BufferOutputStream()
    pq.write_table(table, buffer)
    # atomic writes: a file planted there (a link into a dataset, say) is replaced, never written through
    atomic_write_bytes(out / "samples.parquet", buffer.getvalue().to_pybytes())
    atomic_write_bytes(out / "summary.json", (json.dumps(report.summary(), indent=2) + "\n").encode("utf-8"))
    return out


def save_error_grid(name_or_path: str | Path, path: str | Path, *, split: str = "test", count: int = 8,
                    root: str | Path | None = None, medmnist_root: str | Path | None = None,
                    device: str | torch.device | None = None) -> Path:
    """PNG of the first ``count`` samples of ``split``: rows input, reconstruction and |error| (one colour
    scale, with its bar), the index and recorded PSNR under each sample (:mod:`mednf.figures`)."""
    path = check_outside_datasets(Path(path), "--plot")
    ds = load(name_or_path, split=split, root=root, device=device)
    positions = np.arange(min(count, len(ds)))
    if source_images(ds.manifest, ds.split, ds.source_index[positions], medmnist_root) is None:
        raise EvalError(f"the source images of {ds.name} are not available: "
                        f"{images_unavailable(ds.manifest, medmnist_root)}")
    fig = dataset_figure(ds, positions, root=medmnist_root, device=device, what="reconstruction error · ")
    return save_figure(fig, path)
