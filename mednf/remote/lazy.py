"""A published MedNF dataset read by URL without downloading it whole: :func:`open_remote` → :class:`RemoteFiles`.

``mednf.load("https://host/path/DermaNF", split="train")`` (also ``s3://``, ``gs://``, … with s3fs, gcsfs
installed) goes through here. What is fetched when (every file whole, each checked against the manifest's
size and sha256 as it arrives, see :mod:`mednf.remote.fetch`):

- :func:`open_remote`: ``mednf.json`` (the root of trust, as served), then ``index.parquet`` (labels,
  source indices, PSNR; rows ``0..N-1`` per split checked). ``len(ds)`` and labels need nothing more.
- the first latent read of a split: ``latents.zarr/<split>/zarr.json`` (shape, chunk grid, codecs).
- ``ds[i]``, ``ds[a:b]``, ``ds.latents[idx]``, ``ds.decode(idx)``, a DataLoader batch: the chunk files holding
  those rows, concurrently, decoded by zarr (:mod:`mednf.remote.zarr_store`). Decoded chunks ``[R, P]`` stay
  in an LRU shared by the splits of one load (``cache_bytes``, default 256 MiB), so a second read of the same
  rows transfers nothing. ``np.asarray(ds.latents)``, ``ds.to_hf()`` and :meth:`RemoteFiles.latents` read
  every chunk of the split.
- ``ds.theta()`` / decoding: ``model.safetensors``, once.

Wrong bytes are a one-line FormatError naming the file's URL: no row of an unverified chunk is returned.
``verify=False`` of ``mednf.load`` does not apply here: hashing a file costs far less than transferring it.
DataLoader workers (fork or spawn) open their own connections and keep their own chunk cache.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

from mednf.errors import FormatError, MednfError
from mednf.format.layout import INDEX, LATENTS, MANIFEST, MODEL
from mednf.format.manifest import Manifest
from mednf.format.reader import check_finite, check_index_rows, check_theta, split_index
from mednf.format.tensors import tensors_from_bytes
from mednf.remote.fetch import RemoteFolder, remote_manifest
from mednf.remote.zarr_store import VerifiedStore

DEFAULT_CACHE_BYTES = 256 << 20
_FIX = "tell the publisher of the copy, or use another copy"


def open_remote(url: str, *, cache_bytes: int = DEFAULT_CACHE_BYTES) -> RemoteFiles:
    """The dataset folder at ``url``: manifest and index fetched and checked, latents left for later."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    folder = RemoteFolder(url)
    manifest = remote_manifest(folder)
    if INDEX not in manifest.files:
        raise FormatError(f"{folder.file_url(MANIFEST)} lists no {INDEX}; {_FIX}")
    data = folder.fetch(INDEX, manifest.files[INDEX])
    try:
        table = pq.read_table(pa.BufferReader(data))
    except (OSError, pa.ArrowException) as err:
        raise FormatError(f"{folder.file_url(INDEX)} is not a readable index ({err}); {_FIX}") from None
    check_index_rows(table, manifest, folder.url)
    return RemoteFiles(folder, manifest, table, cache_bytes=cache_bytes)


class ChunkCache:
    """Decoded chunks ``[R, P]`` (read-only arrays) by key, least recently used dropped beyond ``max_bytes``."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __reduce__(self) -> tuple[Any, ...]:  # a pickled copy (spawned DataLoader worker) starts empty
        return ChunkCache, (self.max_bytes,)

    def _guard(self) -> threading.Lock:
        if self._pid != os.getpid():  # a forked worker: the parent's lock may have been held by another thread
            self._lock, self._pid = threading.Lock(), os.getpid()
        return self._lock

    def get(self, key: Any) -> np.ndarray | None:
        """The chunk cached under ``key`` (now the most recently used), or None."""
        with self._guard():
            value = self._items.get(key)
            if value is not None:
                self._items.move_to_end(key)
            return value

    def put(self, key: Any, value: np.ndarray) -> None:
        """Cache ``value`` under ``key``, dropping the least recently used chunks beyond ``max_bytes``."""
        with self._guard():
            if key in self._items:
                return
            self._items[key] = value
            self._bytes += value.nbytes
            while self._bytes > self.max_bytes and len(self._items) > 1:
                _, dropped = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes


class LazyLatents:
    """The latent matrix ``[N, P]`` float32 of one remote split, read by chunk on demand.

    Indexes like a read-only numpy array in the first axis (int, slice, int or bool arrays; further axes
    apply to the rows read); ``np.asarray`` reads all of it. Results are new arrays, except that an int
    index returns a read-only view of a cached chunk.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, files: RemoteFiles, split: str) -> None:
        self.files = files
        self.split = split
        self.shape = (files.manifest.splits[split].count, files.manifest.latent.dim)
        self._array: Any = None
        self._rows_per_chunk = 0

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"LazyLatents({self.files.root}/{LATENTS}/{self.split}, shape={self.shape}, float32)"

    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self.rows(np.arange(self.shape[0]))
        return data if dtype is None else data.astype(dtype, copy=False)

    def __getitem__(self, key: Any) -> np.ndarray:
        first, rest = (key[0], key[1:]) if isinstance(key, tuple) and key else (key, ())
        if first is Ellipsis:
            return np.asarray(self)[key]
        n = self.shape[0]
        if isinstance(first, (int, np.integer)):
            i = int(first)
            if not -n <= i < n:
                raise IndexError(f"index {i} is out of bounds for axis 0 with size {n}")
            row = self._row(i % n)
            return row[rest] if rest else row
        if isinstance(first, slice):
            pos = np.arange(n)[first]
        else:
            arr = np.asarray(first)
            if arr.dtype == bool:
                if arr.shape != (n,):
                    raise IndexError(f"boolean index of shape {arr.shape} does not match axis 0 with size {n}")
                pos = np.flatnonzero(arr)
            else:
                if arr.size and not np.issubdtype(arr.dtype, np.integer):
                    raise IndexError(f"only integers, slices and integer or boolean arrays are valid indices "
                                     f"(got an array of {arr.dtype})")
                pos = arr.astype(np.int64)
                if pos.size and (pos.min() < -n or pos.max() >= n):
                    raise IndexError(f"index out of bounds for axis 0 with size {n}")
                pos = pos % n
        out = self.rows(pos.reshape(-1)).reshape(*pos.shape, self.shape[1])
        return out[(slice(None),) * pos.ndim + rest] if rest else out

    # ------------------------------------------------------------------ chunks
    def _open(self) -> Any:
        """The zarr array over the verified store (fetches ``zarr.json``), shape and dtype checked."""
        if self._array is None:
            import zarr

            prefix = f"{LATENTS}/{self.split}"
            where = self.files.folder.file_url(prefix)
            if f"{prefix}/zarr.json" not in self.files.manifest.files:
                raise FormatError(f"{self.files.folder.file_url(MANIFEST)} lists no {prefix}/zarr.json; {_FIX}")
            store = VerifiedStore(self.files.folder, prefix, self.files.manifest.files)
            try:
                array = zarr.open_array(store=store, mode="r", zarr_format=3)
            except MednfError:
                raise
            except Exception as err:  # noqa: BLE001 (zarr raises many types for malformed metadata)
                raise FormatError(f"{where}/zarr.json is not a readable Zarr array ({type(err).__name__}: "
                                  f"{str(err).splitlines()[0][:120] if str(err) else ''}); {_FIX}") from None
            if array.shape != self.shape or array.dtype != np.float32 or array.ndim != 2:
                raise FormatError(f"{where} holds {array.dtype} {array.shape}, the manifest says float32 "
                                  f"{self.shape}; {_FIX}")
            self._rows_per_chunk = int((array.shards or array.chunks)[0])  # rows of one stored file
            self._array = array
        return self._array

    def _row(self, i: int) -> np.ndarray:
        """Row ``i`` ``[P]`` (a read-only view of its cached chunk)."""
        self._open()
        k = i // self._rows_per_chunk
        chunk = self.files.cache.get((self.split, k))
        if chunk is None:
            chunk = self._fetch([k])[k]
        return chunk[i - k * self._rows_per_chunk]

    def rows(self, pos: np.ndarray) -> np.ndarray:
        """Rows ``pos`` (``[n]`` in ``0..N-1``) as a new array ``[n, P]``: cached chunks, the others fetched."""
        self._open()
        pos = np.asarray(pos, dtype=np.int64)
        out = np.empty((len(pos), self.shape[1]), np.float32)
        if not len(pos):
            return out
        R = self._rows_per_chunk
        chunk_of = pos // R
        needed = np.unique(chunk_of)
        chunks = {int(k): self.files.cache.get((self.split, int(k))) for k in needed}
        missing = [k for k, chunk in chunks.items() if chunk is None]
        if missing:
            chunks.update(self._fetch(missing))
        order = np.argsort(chunk_of, kind="stable")
        bounds = np.searchsorted(chunk_of[order], np.append(needed, needed[-1] + 1))
        for k, start, stop in zip(needed.tolist(), bounds[:-1], bounds[1:]):
            at = order[start:stop]
            out[at] = chunks[k][pos[at] - k * R]
        return out

    def _fetch(self, keys: list[int]) -> dict[int, np.ndarray]:
        """Chunks ``keys`` read through zarr (its files fetched concurrently and verified), cached."""
        array, R, n = self._open(), self._rows_per_chunk, self.shape[0]
        spans = [(k * R, min((k + 1) * R, n)) for k in keys]
        try:
            if len(keys) == 1:
                block = array[spans[0][0]:spans[0][1]]
            else:
                rows = np.concatenate([np.arange(a, b) for a, b in spans])
                block = array.get_orthogonal_selection((rows, slice(None)))
        except MednfError:
            raise
        except Exception as err:  # noqa: BLE001 (a verified file that zarr cannot decode: a publisher's fault)
            raise FormatError(f"{self._chunk_url(keys[0])} (or another chunk of that read) cannot be decoded "
                              f"({type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}); "
                              f"{_FIX}") from None
        block = np.asarray(block, dtype=np.float32)
        fetched, offset = {}, 0
        for k, (a, b) in zip(keys, spans):
            chunk = np.ascontiguousarray(block[offset:offset + b - a])
            offset += b - a
            check_finite(chunk, f"{self._chunk_url(k)} (rows {a}..{b - 1})")
            chunk.setflags(write=False)  # shared by every reader of the cache
            self.files.cache.put((self.split, k), chunk)
            fetched[k] = chunk
        return fetched

    def _chunk_url(self, k: int) -> str:
        """The URL of the file holding chunk row ``k`` (its first column block)."""
        try:
            key = self._array.metadata.encode_chunk_key((k, 0))
        except Exception:  # noqa: BLE001 (only for naming it in a message)
            key = f"<chunk {k}>"
        return self.files.folder.file_url(f"{LATENTS}/{self.split}/{key}")


class RemoteFiles:
    """An open remote dataset, with the interface of :class:`mednf.format.reader.DatasetFiles` that
    :class:`~mednf.dataset.MedNFDataset` uses (``root`` is the URL)."""

    def __init__(self, folder: RemoteFolder, manifest: Manifest, index_table: Any, *,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> None:
        self.folder = folder
        self.root = folder.url
        self.manifest = manifest
        self.cache = ChunkCache(cache_bytes)
        self._index = index_table
        self._views: dict[str, LazyLatents] = {}

    def __getstate__(self) -> dict[str, Any]:  # spawned DataLoader workers open the arrays themselves
        return {**self.__dict__, "_views": {}}

    def check_unchanged(self, files: list[str] | None = None) -> None:
        """Nothing to do: every remote file is checked by its sha256 each time it is fetched."""

    def latent_rows(self, split: str) -> LazyLatents:
        """The split's rows, read by chunk on demand (see :class:`LazyLatents`)."""
        split = self.manifest.check_split(split)
        if split not in self._views:
            self._views[split] = LazyLatents(self, split)
        return self._views[split]

    def latents(self, split: str) -> np.ndarray:
        """The whole latent matrix ``[N, P]`` float32 of ``split`` (every chunk fetched), read-only."""
        data = np.asarray(self.latent_rows(split))
        data.setflags(write=False)
        return data

    def theta(self) -> dict[str, Any]:
        """θ (CPU tensors) from ``model.safetensors``, fetched and verified."""
        if MODEL not in self.manifest.files:
            raise FormatError(f"{self.folder.file_url(MANIFEST)} lists no {MODEL}; {_FIX}")
        data = self.folder.fetch(MODEL, self.manifest.files[MODEL])
        tensors, meta = tensors_from_bytes(data, self.folder.file_url(MODEL))
        check_theta(tensors, meta, self.manifest, self.folder.file_url(MODEL))
        return tensors

    def index(self, split: str) -> Any:
        """The split's rows of ``index.parquet`` (pyarrow Table) sorted by ``row``."""
        return split_index(self._index, self.manifest, split, self.folder.file_url(INDEX))
