"""The one writer of dataset directories: build, HF download and official import all go through it.

Order of writes (each file atomic, the manifest last, so its presence means "complete")::

    writer = DatasetWriter(root, latent_dim=P, chunk_rows=R)
    writer.prepare()                              # folder exists; temporaries of killed runs removed
    writer.create_latents({"train": N, ...})      # once (rank 0): empty [N, P] arrays, NaN fill
    writer.write_latents("train", start, block)   # chunk-aligned, any process, any order
    writer.write_theta(theta, meta)
    manifest = writer.finish(manifest, index, source_line)  # index, card, files, content check, mednf.json

:meth:`DatasetWriter.finish` reads every split's latents back block by block: rows never written read as
NaN and are refused; the digest of the raw float32 rows goes into the manifest (it identifies the content
independently of compression; HF copies are verified by it). Per-split statistics are computed from
the index here, so every producer records them the same way.

Deterministic bytes: the same inputs give the same sha256 for every content file (Zarr chunks via Blosc
with fixed settings, Parquet via pyarrow, safetensors via :mod:`mednf.format.tensors`, the card without
timings). Libraries: zarr (v3; concurrent writers are safe on disjoint chunk-aligned row blocks), pyarrow.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mednf.errors import FormatError
from mednf.format.card import render_card
from mednf.format.layout import CARD, INDEX, LATENTS, MANIFEST, MODEL, content_files
from mednf.format.manifest import FileEntry, Manifest, SplitStats
from mednf.format.reader import check_structure
from mednf.format.tensors import save_tensors
from mednf.io.files import atomic_write_bytes, remove_temporaries, sha256_file


@dataclass
class SplitIndex:
    """The index rows of one split (row ``i`` of the latents array is sample ``i``)."""

    source_index: np.ndarray  # [N] int: index of each sample in the source split
    labels: np.ndarray  # [N, L] int: L = 1 (class id) or the number of labels (0/1 flags, multi-label)
    psnr: np.ndarray  # [N] float (NaN: not measured)
    ssim: np.ndarray  # [N] float (NaN: undefined or not measured)
    baselines: dict[str, float] | None = None  # the split's PSNR without latents (mednf.engine.baselines)


def row_blocks(count: int, rows: int) -> list[tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``0..count`` in blocks of ``rows`` (the chunks of a latent array)."""
    return [(start, min(start + rows, count)) for start in range(0, count, rows)]


def index_digest(rows: SplitIndex) -> str:
    """sha256 of a split's index rows in a canonical form (little-endian int64 source indices and labels,
    float32 PSNR and SSIM), independent of how Parquet encodes them: what a copy is checked against."""
    digest = hashlib.sha256()
    for column, dtype in ((rows.source_index, "<i8"), (rows.labels, "<i8"), (rows.psnr, "<f4"), (rows.ssim, "<f4")):
        digest.update(np.ascontiguousarray(np.asarray(column), dtype=dtype).tobytes())
    return digest.hexdigest()


def latent_digest(latents: np.ndarray) -> str:
    """sha256 of a latent matrix ``[N, P]`` as raw little-endian float32 rows (what the manifest records)."""
    return hashlib.sha256(np.ascontiguousarray(latents, dtype="<f4").tobytes()).hexdigest()


class DatasetWriter:
    """Writes the files of one dataset directory (see the module docstring)."""

    def __init__(self, root: Path, *, latent_dim: int, chunk_rows: int) -> None:
        self.root = Path(root)
        self.latent_dim = latent_dim
        self.chunk_rows = chunk_rows

    def prepare(self) -> None:
        """Create the folder and remove temporary files of killed runs (call while holding its lock)."""
        self.root.mkdir(parents=True, exist_ok=True)
        remove_temporaries(self.root)

    # ------------------------------------------------------------------ latents
    def create_latents(self, counts: dict[str, int], attrs: dict[str, Any] | None = None) -> None:
        """``latents.zarr`` with one empty ``[N, P]`` float32 array per split (once, before any block).

        Attributes are written here: concurrent writers of blocks then touch chunk files only.
        """
        import zarr
        from zarr.codecs import BloscCodec

        group = zarr.open_group(str(self.root / LATENTS), mode="w", zarr_format=3)
        group.attrs.update({"format": "mednf-latents", "latent_dim": self.latent_dim, **(attrs or {})})
        for split, count in counts.items():
            array = group.create_array(
                split, shape=(count, self.latent_dim), chunks=(min(self.chunk_rows, max(count, 1)), self.latent_dim),
                dtype="float32", fill_value=float("nan"),
                compressors=BloscCodec(cname="zstd", clevel=5, shuffle="bitshuffle"),
            )
            array.attrs.update({"split": split, "latent_dim": self.latent_dim, **(attrs or {})})

    def write_latents(self, split: str, start: int, latents: np.ndarray) -> None:
        """Rows ``[start, start + n)`` of a split; ``start`` must be chunk-aligned (disjoint per writer)."""
        import zarr

        if start % self.chunk_rows:
            raise ValueError(f"latent block start {start} is not a multiple of chunk_rows {self.chunk_rows}")
        array = zarr.open_array(str(self.root / LATENTS / split), mode="r+")
        array[start:start + len(latents)] = np.asarray(latents, dtype=np.float32)

    def read_latents(self, split: str, start: int, stop: int) -> np.ndarray:
        """Rows ``[start, stop)`` of a split as written so far ``[n, P]`` float32."""
        import zarr

        return np.asarray(zarr.open_array(str(self.root / LATENTS / split), mode="r")[start:stop])

    # ------------------------------------------------------------------ θ
    def write_theta(self, theta: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
        """θ as ``model.safetensors`` (``meta``: the field configuration and, for imports, the origin)."""
        save_tensors(self.root / MODEL, theta, {"format": "mednf-theta", **meta})

    # ------------------------------------------------------------------ finish
    def finish(self, manifest: Manifest, index: dict[str, SplitIndex], source_line: str) -> Manifest:
        """Write index, card and manifest; returns the manifest as written.

        ``manifest`` holds every field but ``splits`` and ``files``, which are computed here from ``index``
        and the files on disk; ``source_line`` is the card's line on where the data came from.
        """
        splits = {split: self._split_stats(split, rows, manifest.latent.dim) for split, rows in index.items()}
        self._write_index(index, manifest.multi_label)
        manifest = manifest.replace(splits=splits, files={})
        atomic_write_bytes(self.root / CARD, render_card(manifest, source_line, root=self.root).encode("utf-8"))
        manifest = manifest.replace(files=self.file_table())
        check_structure(self.root, manifest)
        atomic_write_bytes(self.root / MANIFEST, manifest.dumps().encode("utf-8"))  # last: "complete"
        return manifest

    def _split_stats(self, split: str, rows: SplitIndex, latent_dim: int) -> SplitStats:
        import zarr

        count = len(rows.source_index)
        if not (len(rows.labels) == len(rows.psnr) == len(rows.ssim) == count):
            raise ValueError(f"index columns of split {split!r} have different lengths")
        array = zarr.open_array(str(self.root / LATENTS / split), mode="r")
        if array.shape != (count, latent_dim):
            raise FormatError(f"latents of split {split!r} have shape {array.shape}, expected ({count}, {latent_dim}); "
                              "rerun with --restart")
        digest, missing = hashlib.sha256(), 0
        for a, b in row_blocks(count, self.chunk_rows):  # block by block: bounded memory
            block = np.ascontiguousarray(array[a:b], dtype="<f4")
            missing += int(np.isnan(block).any(axis=1).sum())
            digest.update(block.tobytes())
        if missing:
            raise FormatError(f"latents of split {split!r} have {missing} unwritten (NaN) rows of {count}; "
                              "rerun the same command to fit them (or --restart)")
        psnr, ssim = np.asarray(rows.psnr, np.float64), np.asarray(rows.ssim, np.float64)
        measured = bool(np.isfinite(psnr).any())
        return SplitStats(count=count,
                          psnr_mean=float(np.nanmean(psnr)) if measured else None,
                          psnr_std=float(np.nanstd(psnr)) if measured else None,
                          ssim_mean=float(np.nanmean(ssim)) if np.isfinite(ssim).any() else None,
                          latents_sha256=digest.hexdigest(), index_sha256=index_digest(rows),
                          baselines=rows.baselines)

    def _write_index(self, index: dict[str, SplitIndex], multi_label: bool) -> None:
        """``index.parquet``: split (dictionary), row, source_index, label | labels, psnr, ssim."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        names = list(index)
        counts = [len(rows.source_index) for rows in index.values()]
        split_ids = np.concatenate([np.full(n, i, np.int32) for i, n in enumerate(counts)])
        labels = np.concatenate([np.asarray(rows.labels).reshape(len(rows.labels), -1) for rows in index.values()])
        cols: dict[str, Any] = {
            "split": pa.DictionaryArray.from_arrays(pa.array(split_ids), pa.array(names, pa.string())),
            "row": pa.array(np.concatenate([np.arange(n, dtype=np.int64) for n in counts])),
            "source_index": pa.array(np.concatenate([rows.source_index for rows in index.values()]).astype(np.int64)),
        }
        if multi_label:
            cols["labels"] = pa.FixedSizeListArray.from_arrays(pa.array(labels.astype(np.int8).reshape(-1)),
                                                               labels.shape[1])
        else:
            cols["label"] = pa.array(labels[:, 0].astype(np.int64))
        cols["psnr"] = pa.array(np.concatenate([rows.psnr for rows in index.values()]).astype(np.float32))
        cols["ssim"] = pa.array(np.concatenate([rows.ssim for rows in index.values()]).astype(np.float32))
        buffer = pa.BufferOutputStream()
        pq.write_table(pa.table(cols), buffer, compression="zstd")
        atomic_write_bytes(self.root / INDEX, buffer.getvalue().to_pybytes())

    def file_table(self) -> dict[str, FileEntry]:
        """``{relative path: FileEntry}`` of every content file, hashed now."""
        return {p.relative_to(self.root).as_posix(): FileEntry(sha256=sha256_file(p), size=p.stat().st_size)
                for p in content_files(self.root)}
