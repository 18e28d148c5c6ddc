"""``mednf.load``: a built MedNF dataset as a PyTorch dataset, a Hugging Face dataset, and decoded images.

- :class:`MedNFDataset` *is* a ``torch.utils.data.Dataset``: ``ds[i]`` → ``{'latent': [P], 'label',
  'index', 'psnr'}``; slices, lists and index arrays return a batch (stacked tensors). The split's latent
  matrix ``ds.latents`` ``[N, P]`` float32 of a local dataset is a read-only memory-mapped array (its
  ``base`` is the ``np.memmap``): on first use the split is unpacked once, chunk by chunk, into an
  uncompressed file in ``$MEDNF_HOME/.unpacked/`` (never into the dataset's folder) and mapped, so
  sequential, random and shuffled reads run at memory speed and
  ``DataLoader`` workers and other processes share its pages through the OS page cache
  (:mod:`mednf.format.lazy`; ChestNF train at P = 2048 takes 640 MB of disk there). For a URL, or a local
  split not unpacked (``MEDNF_UNPACK=0``, or no room on the cache's disk: one warning), it is a lazy
  array-like (:class:`~mednf.format.lazy.LazyLatents`) that reads Zarr chunks on demand (a URL's chunks
  fetched and verified, :mod:`mednf.remote.lazy`), decoded chunks kept in a bounded cache
  (``mednf.load(..., cache_bytes=...)``, default 256 MiB, shared by the splits of one load);
  ``np.asarray(ds.latents)`` materialises it. Every chunk is checked as it is read or unpacked (files
  unchanged, rows finite). ``DataLoader`` workers map the unpacked file or open the store themselves (a
  spawned one with an empty cache, a forked one with the parent's); nothing opened is pickled to them. A
  ``DataLoader`` fetches each batch with one gather (``__getitems__``), so workers rarely pay off unless
  items are decoded to images.
- ``ds.decode(indices, size=...)`` renders latents with θ at any resolution, batched, on CPU or GPU;
  ``ds.with_images(size)`` returns a view whose items also carry ``image``.
- ``ds.to_hf()`` builds a ``datasets.Dataset`` whose latent column wraps ``np.asarray(ds.latents)`` without
  a copy (Arrow ``fixed_size_list<float>[P]`` over its buffer: the memory map of an unpacked split, else the
  whole split read into memory), labels as ``ClassLabel``.
- ``transform`` (``mednf.load(..., transform=fn)``): every item passes through ``fn(item) -> item``, one
  sample at a time: ``ds[i]``, each sample of a ``DataLoader(ds, batch_size=…)`` batch (before
  collation), and with a batch index (``ds[10:20]``, lists, arrays, masks, :meth:`MedNFDataset.dataloader`)
  each sample's item, the results stacked by torch's ``default_collate``, so every path gives the same
  batches. A transform that raises is a one-line :class:`~mednf.errors.TransformError` naming the sample.
- ``ds.plot(indices)``: a matplotlib figure of inputs, reconstructions and |error| maps
  (:mod:`mednf.figures`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Callable, ItemsView, Iterator, KeysView, Sequence, ValuesView
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor

from mednf.arguments import optional_positive_int, positions, side_lengths
from mednf.engine.field import decode as decode_field
from mednf.engine.field import decode_in_chunks
from mednf.errors import ConfigError, FormatError, TransformError
from mednf.figures import dataset_figure
from mednf.format.lazy import DEFAULT_CACHE_BYTES, LazyLatents
from mednf.format.reader import DatasetFiles, open_dataset
from mednf.format.splits import SplitPart, canonical_split, check_split, hf_split
from mednf.optional import optional_import
from mednf.remote.fetch import is_url
from mednf.remote.lazy import open_remote

if TYPE_CHECKING:
    from mednf.remote.lazy import RemoteFiles

IndexLike = int | slice | Sequence[int] | np.ndarray | Tensor
Transform = Callable[[dict[str, Any]], dict[str, Any]]


def open_files(root: str | Path, *, verify: bool = True,
               cache_bytes: int = DEFAULT_CACHE_BYTES) -> DatasetFiles | RemoteFiles:
    """The files of a dataset: a local folder (verified, :mod:`mednf.format.reader`) or a URL
    (:mod:`mednf.remote.lazy`; every file verified as it arrives, so ``verify`` does not apply); both read
    latents by chunk, keeping at most ``cache_bytes`` of decoded chunks."""
    if is_url(root):
        return open_remote(str(root), cache_bytes=cache_bytes)
    return open_dataset(root, verify=verify, cache_bytes=cache_bytes)


class MedNFDataset(torch.utils.data.Dataset):
    """One split of a MedNF dataset (see the module docstring)."""

    def __init__(self, root: str | Path, split: str, *, device: str | torch.device | None = None,
                 image_size: int | Sequence[int] | None = None, verify: bool = True,
                 files: DatasetFiles | RemoteFiles | None = None, transform: Transform | None = None,
                 window: SplitPart | None = None) -> None:
        """``root``: a dataset folder or a URL (:func:`open_files`). ``verify``: check every file's sha256
        against the manifest first (remembered while the files are unchanged, see :mod:`mednf.format.reader`);
        ``files``: an already opened handle (shared by splits); ``transform``: applied to every item (see the
        module docstring). ``split`` may be ``"validation"`` for ``"val"``. ``window``: only the rows
        ``[window.start, window.stop)`` of the split (Hugging Face's ``"train[:10%]"``, see :func:`mednf.load`),
        indexed from 0 as a split of their own."""
        if transform is not None and not callable(transform):
            raise ConfigError(f"transform = {transform!r} is invalid: expected a function item -> item")
        self.files = files or open_files(root, verify=verify)
        self.root = self.files.root
        self.manifest = self.files.manifest
        self.split = self.manifest.check_split(split)
        self.name: str = self.manifest.name
        self.config = self.manifest.engine_config
        self.label_names: list[str] = list(self.manifest.labels.names)
        self.multi_label = self.manifest.multi_label
        self.device = torch.device(device) if device is not None else None
        self.image_size = image_size
        self.transform = transform
        self._window = window if window is not None and (window.start, window.stop) != (0, self.manifest.splits[
            self.split].count) else None
        self.split_spec = (f"{self.split}[{self._window.start}:{self._window.stop}]" if self._window is not None
                           else self.split)  # what this view holds, in Hugging Face's split syntax
        self._read_index()
        self._latents: np.ndarray | LazyLatents | None = None
        self._theta: dict[str, Tensor] | None = None

    def _read_index(self) -> None:
        table = self.files.index(self.split)
        self.rows = table["row"].to_numpy()  # [N], 0..N-1 (verified)
        self.source_index = table["source_index"].to_numpy()  # [N]
        self.psnr = table["psnr"].to_numpy()  # [N]
        self.ssim = table["ssim"].to_numpy()  # [N] (NaN where undefined)
        if self.multi_label:
            flat = table["labels"].combine_chunks().flatten().to_numpy()
            if flat.size != len(table) * len(self.label_names) or not np.isin(flat, (0, 1)).all():
                raise FormatError(f"{self.root}/index.parquet: the {self.split} labels are not one 0/1 flag per "
                                  f"label name ({len(self.label_names)}); rebuild it or download it again")
            self.labels = flat.reshape(len(table), len(self.label_names)).astype(np.int8)  # [N, L]
        else:
            self.labels = table["label"].to_numpy()  # [N]
            if len(self.labels) and (self.labels.min() < 0 or self.labels.max() >= len(self.label_names)):
                raise FormatError(f"{self.root}/index.parquet: {self.split} labels span {self.labels.min()}.."
                                  f"{self.labels.max()}, the manifest names {len(self.label_names)} classes; "
                                  "rebuild it or download it again")
        self._index_table = table
        if self._window is not None:  # views of the split's arrays, no copies
            rows = slice(self._window.start, self._window.stop)
            self.rows, self.source_index, self.psnr, self.ssim, self.labels = (
                self.rows[rows], self.source_index[rows], self.psnr[rows], self.ssim[rows], self.labels[rows])
            self._index_table = table.slice(self._window.start, len(self.rows))

    # ----------------------------------------------------------------- latents
    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers (spawn) reopen what they need
        state = self.__dict__.copy()
        state["_latents"] = None
        state["_theta"] = None
        return state

    @property
    def latents(self) -> np.ndarray | LazyLatents:
        """The split's latent matrix ``[N, P]`` float32, read-only: the memory map of its unpacked file (a local
        split, unpacked on first use), else a lazy array-like that reads the chunks of the rows indexed
        (``np.asarray`` → all of it, a new array). Opened on first use (files unchanged, shape); each chunk's
        rows are checked finite as it is read or unpacked."""
        if self._latents is None:
            latents = self.files.latent_rows(self.split)
            self._latents = latents if self._window is None else row_window(latents, self._window)
        return self._latents

    def __len__(self) -> int:
        return len(self.rows)

    def _positions(self, idx: IndexLike) -> np.ndarray | int:
        """The rows ``idx`` selects (:func:`mednf.arguments.positions`)."""
        return positions(idx, len(self.rows), self._describe)

    def _describe(self) -> str:
        return f"{self.name} {self.split_spec}"

    def __getitem__(self, idx: IndexLike) -> dict[str, Any]:
        pos = self._positions(idx)
        if isinstance(pos, int):
            label = torch.from_numpy(self.labels[pos].copy()) if self.multi_label else int(self.labels[pos])
            item = {"latent": torch.from_numpy(self.latents[pos].copy()), "label": label,
                    "index": int(self.source_index[pos]), "psnr": float(self.psnr[pos])}
            if self.image_size is not None:
                item["image"] = self.decode([pos], size=self.image_size)[0]
            return self._transformed(item, pos)
        if self.transform is not None:  # per item, then stacked: the batches of DataLoader(ds, batch_size=…)
            from torch.utils.data import default_collate

            items = self.__getitems__(pos.tolist())
            if not items:
                raise IndexError(f"an empty batch index of {self.name} {self.split_spec}: nothing to transform")
            return default_collate(items)
        batch = {"latent": torch.from_numpy(self.latents[pos]), "label": torch.from_numpy(self.labels[pos]),
                 "index": torch.from_numpy(self.source_index[pos]), "psnr": torch.from_numpy(self.psnr[pos])}
        if self.image_size is not None:
            batch["image"] = self.decode(pos, size=self.image_size)
        return batch

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """What a ``DataLoader`` calls for one batch: one gather for all rows, then per-sample views
        (``default_collate`` stacks them again)."""
        pos = self._positions(indices)
        images = self.decode(pos, size=self.image_size).unbind(0) if self.image_size is not None else None
        latents = torch.from_numpy(self.latents[pos]).unbind(0)
        labels = torch.from_numpy(self.labels[pos]).unbind(0) if self.multi_label else self.labels[pos].tolist()
        items = [{"latent": latent, "label": label, "index": index, "psnr": psnr}
                 for latent, label, index, psnr in zip(latents, labels, self.source_index[pos].tolist(),
                                                       self.psnr[pos].tolist())]
        if images is not None:
            for item, image in zip(items, images):
                item["image"] = image
        if self.transform is not None:
            items = [self._transformed(item, int(p)) for item, p in zip(items, pos)]
        return items

    def _transformed(self, item: dict[str, Any], pos: int) -> dict[str, Any]:
        """``item`` through :attr:`transform` (none: as it is); its failure is one line naming the sample."""
        if self.transform is None:
            return item
        name = getattr(self.transform, "__qualname__", None) or type(self.transform).__name__
        try:
            out = self.transform(item)
        except Exception as err:
            reason = (str(err).splitlines() or [""])[0]
            raise TransformError(f"transform {name} failed on sample {pos} of {self.name} {self.split_spec} (source "
                                 f"index {int(self.source_index[pos])}): {type(err).__name__}"
                                 + (f": {reason}" if reason else "") + "; fix the transform") from err
        if out is None:
            raise TransformError(f"transform {name} returned None for sample {pos} of {self.name} {self.split_spec}: "
                                 "expected the item; return it (e.g. `return item` after changing it)")
        return out

    def dataloader(self, batch_size: int = 256, *, shuffle: bool = False, drop_last: bool = False,
                   generator: torch.Generator | None = None, **kwargs: Any) -> torch.utils.data.DataLoader:
        """A ``DataLoader`` that hands whole index batches to :meth:`__getitem__`: one gather per batch and
        no per-sample dicts to collate (several times faster than ``DataLoader(ds, batch_size=...)``, same
        batches). ``kwargs`` go to ``DataLoader`` (``num_workers``, ``pin_memory``, …)."""
        from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

        order = RandomSampler(self, generator=generator) if shuffle else SequentialSampler(self)
        return DataLoader(self, sampler=BatchSampler(order, batch_size, drop_last), batch_size=None, **kwargs)

    # ----------------------------------------------------------------- decoding
    @property
    def native_size(self) -> tuple[int, ...]:
        """The spatial shape the dataset was built at, e.g. ``(64, 64)``."""
        src = self.manifest.builder["source"]
        return (src["size"],) * src["dims"]

    def theta(self, device: torch.device | str | None = None) -> dict[str, Tensor]:
        """θ (shared network) on ``device``."""
        device = torch.device(device or self.device or "cpu")
        if self._theta is None or next(iter(self._theta.values())).device != device:
            self._theta = {k: v.to(device) for k, v in self.files.theta().items()}  # cached on the last device used
        return self._theta

    def decode(self, indices: IndexLike | None = None, *, size: int | Sequence[int] | None = None,
               device: str | torch.device | None = None, batch_size: int | None = None) -> Tensor:
        """Images (or volumes) ``[n, D, *size]`` in [0, 1] from the latents at ``indices`` (default all).

        ``size`` may differ from the training resolution (the field is continuous); default native.
        Runs in batches on ``device`` (default: the dataset's device, else CPU); returns a CPU tensor.
        ``batch_size`` None → as many signals as keep one layer's activations near 256 MiB; a single
        signal larger than that is decoded in chunks of points. A result that cannot fit in memory is
        refused before anything is computed.
        """
        batch_size = optional_positive_int(batch_size, "batch_size",
                                           "or None to choose it from the memory a batch needs")
        pos = np.arange(len(self)) if indices is None else np.atleast_1d(self._positions(indices))
        spatial = self._spatial(size)
        device = torch.device(device or self.device or "cpu")
        field_cfg = self.config.field
        points, channels = math.prod(spatial), field_cfg.out_dims  # Python ints: no int64 overflow
        check_fits(len(pos) * channels * points * 4, f"decoding {len(pos)} signal(s) at size {spatial}",
                    "decode fewer indices or at a smaller size")
        images = decode_in_chunks(self.theta(device), lambda rows: torch.from_numpy(self.latents[pos[rows]]),
                                  len(pos), field_cfg, spatial, device=device, batch_size=batch_size)
        bad = ~torch.isfinite(images.flatten(1)).all(dim=1)  # [n]: a finite but absurd latent overflows
        if bool(bad.any()):
            rows = pos[bad.numpy()][:3].tolist()
            raise FormatError(f"decoding rows {rows} of {self.name} {self.split_spec} gives NaN/inf: their latents are "
                              "out of any trained range (damaged or edited); rebuild it or download it again")
        return images

    def _spatial(self, size: int | Sequence[int] | None) -> tuple[int, ...]:
        dims = len(self.native_size)
        if size is None:
            return self.native_size
        return side_lengths(size, dims)

    def plot(self, indices: IndexLike | None = None, *, size: int | Sequence[int] | None = None,
             with_inputs: bool = True, root: str | Path | None = None, columns: int = 8) -> Any:
        """A matplotlib ``Figure`` of the samples at ``indices`` (default the first 8): rows input,
        reconstruction (decoded at ``size``, default native) and |error|, the index and PSNR under each
        sample (:func:`mednf.figures.grid_figure`). ``with_inputs=False`` or source images that cannot
        be had (``root``: the MedMNIST folder) leave the input and |error| rows out, with a note. Needs
        matplotlib (a one-line ConfigError naming ``pip install matplotlib`` otherwise). Save it with
        ``fig.savefig("grid.png")`` or :func:`mednf.figures.save_figure`."""
        return dataset_figure(self, indices, size=size, with_inputs=with_inputs, root=root, columns=columns)

    def with_images(self, size: int | Sequence[int] | None = None) -> MedNFDataset:
        """A view whose items also hold ``image`` ``[D, *size]`` decoded on access (default native size)."""
        view = object.__new__(MedNFDataset)
        view.__dict__.update(self.__dict__)
        view.image_size = self._spatial(size)
        return view

    # ----------------------------------------------------------------- Hugging Face
    def hf_features(self) -> Any:
        """The ``datasets.Features`` of :meth:`to_hf`: latent ``[P]`` float32, label, index, psnr, ssim."""
        hf = _datasets()
        P = self.config.field.latent_dim
        label = (hf.List(hf.Value("int8"), length=len(self.label_names)) if self.multi_label
                 else hf.ClassLabel(names=self.label_names))
        return hf.Features({"latent": hf.List(hf.Value("float32"), length=P), "label": label,
                            "index": hf.Value("int64"), "psnr": hf.Value("float32"), "ssim": hf.Value("float32")})

    def to_hf(self, *, decode: bool = False, size: int | Sequence[int] | None = None) -> Any:
        """This split as a ``datasets.Dataset`` whose latent column wraps ``np.asarray(self.latents)`` ``[N, P]``
        without a copy: the memory map of an unpacked local split, else every chunk read into one new matrix
        (ChestNF train: 640 MB).

        ``decode=True`` adds an on-access transform that decodes an ``image`` column (``size`` as
        :meth:`decode`).
        """
        import pyarrow as pa

        datasets = _datasets()
        in_memory_table = optional_import("datasets.table", "to_hf()").InMemoryTable

        latents = np.asarray(self.latents)  # [N, P]: the memory map, or every chunk read (a URL's: fetched)
        N, P = latents.shape
        values = pa.Array.from_buffers(pa.float32(), N * P, [None, pa.py_buffer(latents)])
        label = (pa.FixedSizeListArray.from_arrays(pa.array(self.labels.reshape(-1), pa.int8()), self.labels.shape[1])
                 if self.multi_label else pa.array(self.labels, pa.int64()))
        table = pa.table({"latent": pa.FixedSizeListArray.from_arrays(values, P), "label": label,
                          "index": pa.array(self.source_index, pa.int64()), "psnr": pa.array(self.psnr, pa.float32()),
                          "ssim": pa.array(self.ssim, pa.float32())})
        info = datasets.DatasetInfo(features=self.hf_features(), description=f"{self.name} ({self.split_spec})")
        # datasets would otherwise fingerprint the table by serialising all of it (7 s for 100k × 2048);
        # the manifest's checksums already identify the content
        files = json.dumps({k: v.sha256 for k, v in self.manifest.files.items()}, sort_keys=True) + self.split_spec
        fingerprint = hashlib.sha256(files.encode()).hexdigest()[:16]
        named = hf_split(self.split) + self.split_spec[len(self.split):]  # "validation[0:10]"
        hf = datasets.Dataset(in_memory_table(table), info=info, split=datasets.NamedSplit(named),
                              fingerprint=fingerprint)
        if decode:
            spatial, field_cfg, theta = self._spatial(size), self.config.field, self.theta()
            device = next(iter(theta.values())).device

            def add_images(batch: dict[str, list]) -> dict[str, list]:
                phi = torch.as_tensor(np.asarray(batch["latent"], dtype=np.float32)).to(device)
                batch["image"] = list(decode_field(theta, phi, field_cfg, spatial).cpu())
                return batch

            hf = hf.with_transform(add_images)
        return hf

    def __repr__(self) -> str:
        return (f"MedNFDataset({self.name!r}, split={self.split_spec!r}, samples={len(self)}, "
                f"latent_dim={self.config.field.latent_dim}, root='{self.root}')")


class _RowWindow:
    """Rows ``[start, stop)`` of a lazy latent matrix, indexed as a matrix ``[stop - start, P]`` of its own (no row
    is read until indexed)."""

    def __init__(self, base: LazyLatents, start: int, stop: int) -> None:
        self.base, self.start, self.stop = base, start, stop
        self.shape = (stop - start, base.shape[1])
        self.dtype = base.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: Any) -> np.ndarray:
        return self.base[np.arange(self.start, self.stop)[key]]

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        rows = self.base[self.start:self.stop]
        return rows if dtype is None else rows.astype(dtype)


def row_window(latents: np.ndarray | LazyLatents, part: SplitPart) -> np.ndarray | LazyLatents:
    """The rows of ``part`` of a split's latent matrix: a view of an array (the memory map), else a lazy window."""
    if isinstance(latents, np.ndarray):
        return latents[part.start:part.stop]
    return _RowWindow(latents, part.start, part.stop)  # type: ignore[return-value]  # the same indexing surface


class MedNFConcat(torch.utils.data.ConcatDataset):
    """Several splits or slices of one dataset read as one (``mednf.load(name, split="train+validation")``):
    items, batches, :meth:`dataloader`, :meth:`decode` and :meth:`to_hf` as on :class:`MedNFDataset`, in the order
    of the parts; each batch is gathered per part."""

    def __init__(self, parts: list[MedNFDataset], spec: str) -> None:
        super().__init__(parts)
        self.parts = parts
        self.split_spec = spec
        first = parts[0]
        self.name, self.root, self.manifest, self.config = first.name, first.root, first.manifest, first.config
        self.label_names, self.multi_label = first.label_names, first.multi_label

    def _locate(self, pos: np.ndarray) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """``(part, where in pos, rows of that part)`` for the global positions ``pos`` ``[n]``."""
        part = np.searchsorted(np.asarray(self.cumulative_sizes), pos, side="right")  # [n]
        starts = np.concatenate([[0], self.cumulative_sizes[:-1]])
        return [(k, np.flatnonzero(part == k), pos[part == k] - starts[k]) for k in np.unique(part)]

    def __getitems__(self, indices: list[int]) -> list[dict[str, Any]]:
        """One gather per part for a batch (what a ``DataLoader`` calls)."""
        pos = np.atleast_1d(positions(indices, len(self), f"{self.name} {self.split_spec}"))
        items: list[dict[str, Any]] = [{} for _ in pos]
        for k, where, rows in self._locate(pos):
            for i, item in zip(where, self.parts[k].__getitems__(rows.tolist())):
                items[i] = item
        return items

    def __getitem__(self, idx: IndexLike) -> dict[str, Any]:  # type: ignore[override]
        pos = positions(idx, len(self), f"{self.name} {self.split_spec}")
        if isinstance(pos, int):
            return super().__getitem__(pos)
        from torch.utils.data import default_collate

        return default_collate(self.__getitems__(pos.tolist()))

    def dataloader(self, batch_size: int = 256, *, shuffle: bool = False, drop_last: bool = False,
                   generator: torch.Generator | None = None, **kwargs: Any) -> torch.utils.data.DataLoader:
        """As :meth:`MedNFDataset.dataloader`."""
        from torch.utils.data import BatchSampler, DataLoader, RandomSampler, SequentialSampler

        order = RandomSampler(self, generator=generator) if shuffle else SequentialSampler(self)
        return DataLoader(self, sampler=BatchSampler(order, batch_size, drop_last), batch_size=None, **kwargs)

    @property
    def latents(self) -> np.ndarray:
        """The parts' latent matrices one after the other ``[N, P]`` (a new array)."""
        return np.concatenate([np.asarray(part.latents) for part in self.parts])

    @property
    def labels(self) -> np.ndarray:
        """The parts' labels one after the other ``[N]`` (``[N, L]`` multi-label)."""
        return np.concatenate([part.labels for part in self.parts])

    def decode(self, indices: IndexLike | None = None, **kwargs: Any) -> Tensor:
        """Images ``[n, D, *size]`` of the samples at ``indices`` (default all); keywords as
        :meth:`MedNFDataset.decode`."""
        pos = np.arange(len(self)) if indices is None else np.atleast_1d(
            positions(indices, len(self), f"{self.name} {self.split_spec}"))
        pieces = [(where, self.parts[k].decode(rows, **kwargs)) for k, where, rows in self._locate(pos)]
        out = torch.empty((len(pos), *pieces[0][1].shape[1:]), dtype=pieces[0][1].dtype)
        for where, images in pieces:
            out[torch.from_numpy(where)] = images
        return out

    def to_hf(self, **kwargs: Any) -> Any:
        """One ``datasets.Dataset`` of all parts (``datasets.concatenate_datasets``); keywords as
        :meth:`MedNFDataset.to_hf`."""
        return _datasets().concatenate_datasets([part.to_hf(**kwargs) for part in self.parts])

    def __repr__(self) -> str:
        return (f"MedNFConcat({self.name!r}, split={self.split_spec!r}, samples={len(self)}, "
                f"latent_dim={self.config.field.latent_dim}, root='{self.root}')")


@dataclasses.dataclass
class MedNFDatasetDict:
    """All splits of one dataset (``mednf.load(..., split=None)``)."""

    splits: dict[str, MedNFDataset]

    def __getitem__(self, split: str) -> MedNFDataset:
        """One split (``"validation"`` for ``"val"``); a ConfigError naming the splits otherwise."""
        return self.splits[check_split(split, self.splits)]

    def __contains__(self, split: object) -> bool:
        return isinstance(split, str) and canonical_split(split) in self.splits

    def __iter__(self) -> Iterator[str]:
        return iter(self.splits)

    def __len__(self) -> int:
        return len(self.splits)

    def keys(self) -> KeysView[str]:
        """The split names, e.g. ``train``, ``val``, ``test``."""
        return self.splits.keys()

    def values(self) -> ValuesView[MedNFDataset]:
        """The splits' datasets."""
        return self.splits.values()

    def items(self) -> ItemsView[str, MedNFDataset]:
        """``(split name, dataset)`` pairs."""
        return self.splits.items()

    def to_hf(self, **kwargs: Any) -> Any:
        """Every split as a ``datasets.DatasetDict`` (``"val"`` named ``"validation"``)."""
        return _datasets().DatasetDict({hf_split(name): ds.to_hf(**kwargs) for name, ds in self.splits.items()})


def _datasets() -> Any:
    """The Hugging Face ``datasets`` module (a one-line error naming the install command without it)."""
    return optional_import("datasets", "to_hf()")


def check_fits(nbytes: int, what: str, fix: str) -> None:
    """ConfigError if a result of ``nbytes`` exceeds the memory this machine has available now (``what`` names
    it, ``fix`` says what to ask for instead)."""
    import os

    try:
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return  # not knowable here (non-POSIX): let the allocation decide
    if nbytes > available:
        raise ConfigError(f"{what} needs {nbytes / 2**30:.1f} GiB for the result, this machine has "
                          f"{available / 2**30:.1f} GiB available; {fix}")
