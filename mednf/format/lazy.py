"""Latent rows read by Zarr chunk on demand: one array-like for a local folder and for a URL.

:class:`LazyLatents` is the latent matrix ``[N, P]`` float32 of one split. Indexing it reads only the
stored chunks (``chunk_rows`` rows each) that hold the rows asked for, through a :class:`LatentSource`:
:class:`mednf.format.reader.DatasetFiles` for a folder on disk, :class:`mednf.remote.lazy.RemoteFiles`
for a URL. Decoded chunks ``[R, P]`` stay in a :class:`ChunkCache` (least recently used dropped beyond
``max_bytes``, default 256 MiB) shared by the splits of one open dataset, so the memory a process holds
does not grow with the split; ``np.asarray(latents)`` materialises the whole matrix (a new array). A local
split within half the cache is read in one go on first use and kept as one array (counted in the cache):
random rows and shuffled batches are then plain numpy gathers. A larger one is read by chunk, the next
``read_ahead`` chunks with a chunk when reads go in order; a URL reads only the chunks asked for.

Every chunk is checked as it is read, whatever the source: its files are asked to be the ones opened
(:meth:`LatentSource.check_latent_files`: a folder compares file identities before and after the read,
a URL has checked every file's sha256 on arrival) and its rows must be finite (rows never written are
NaN). A chunk that fails is a one-line :class:`~mednf.errors.FormatError` naming its file; it is never
cached, and no row of it is returned.

Processes: a pickled cache (spawned ``DataLoader`` worker) starts empty; a forked worker keeps what the
parent had cached (copy on write) and reopens the Zarr array itself; nothing else is shared.
"""

from __future__ import annotations

import math
import os
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mednf.errors import FormatError, MednfError
from mednf.format.manifest import Manifest

DEFAULT_CACHE_BYTES = 256 << 20
READ_AHEAD = 8  # chunks read in one go once reads go in order (zarr's cost per call is paid once for them)
_GENERATION = [0]  # bumped in a forked child: cheaper to compare than os.getpid() on every row


def _process() -> int:
    return _GENERATION[0]


os.register_at_fork(after_in_child=lambda: _GENERATION.__setitem__(0, _GENERATION[0] + 1))
_READ_ONLY = "assignment destination is read-only: the latents of a dataset are never changed in place"


def check_finite(data: np.ndarray, where: str | Path, fix: str = "rebuild it or download it again",
                 first_row: int = 0) -> None:
    """FormatError if latent rows ``[n, P]`` hold NaN/inf (rows never written, or damaged); ``first_row``: the
    split's row number of ``data[0]``, so the message names rows of the split."""
    bad = ~np.isfinite(data).all(axis=1)
    if bad.any():
        rows = (np.flatnonzero(bad)[:3] + first_row).tolist()
        raise FormatError(f"{where} has {int(bad.sum())} rows of NaN/inf (rows {rows}…: never written or damaged); "
                          f"{fix}")


class ChunkCache:
    """Decoded chunks ``[R, P]`` (read-only arrays) by key, least recently used dropped beyond ``max_bytes``
    (one chunk is always kept, however large). :attr:`nbytes` is what it holds now."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[Any, np.ndarray] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._pid = os.getpid()

    def __reduce__(self) -> tuple[Any, ...]:  # a pickled copy (spawned DataLoader worker) starts empty
        return ChunkCache, (self.max_bytes,)

    def __len__(self) -> int:
        return len(self._items)

    @property
    def nbytes(self) -> int:
        """Bytes of the chunks held now."""
        return self._bytes

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

    def clear(self) -> None:
        """Drop every chunk."""
        with self._guard():
            self._items.clear()
            self._bytes = 0


class LatentSource(Protocol):
    """Where :class:`LazyLatents` reads from: an open dataset folder or URL."""

    manifest: Manifest
    cache: ChunkCache
    repair: str  # the end of an error message: what the user can do about damaged files
    read_ahead: int  # chunks read in one go once reads go in order; 0: read only the chunks asked for

    def latent_array(self, split: str) -> Any:
        """The split's Zarr array (read-only), its shape ``[N, P]`` and dtype float32 checked."""

    def latent_file(self, split: str, key: str) -> str:
        """The path or URL of file ``key`` (e.g. ``c/0/0``, a chunk) of the split's array, for messages."""

    def check_latent_files(self, split: str, keys: list[str]) -> None:
        """FormatError unless files ``keys`` of the split's array (and its metadata) are those opened."""


class LazyLatents:
    """The latent matrix ``[N, P]`` float32 of one split, read by chunk on demand (see the module docstring).

    Indexes like a read-only numpy array in the first axis (int, negative int, slice, int or bool arrays;
    further axes apply to the rows read); ``np.asarray`` reads all of it. Results are new arrays, except
    that an int index returns a read-only view of a cached chunk. ``copy()``, ``astype()`` and
    ``tobytes()`` materialise the matrix like ``np.asarray``.
    """

    ndim = 2
    dtype = np.dtype(np.float32)

    def __init__(self, files: LatentSource, split: str) -> None:
        self.files = files
        self.split = split
        self.shape = (files.manifest.splits[split].count, files.manifest.latent.dim)
        self._array: Any = None
        self._pid = _process()
        # (k, chunk) of the last single-row read (-1: the whole split): kept even if the cache drops it
        self._last: tuple[int, np.ndarray] | None = None
        self._whole = False  # a local split within half the cache is read in one go, kept as one array
        self._rows_per_chunk = 0  # rows of one stored file
        self._column_files = 1  # stored files per chunk row (1 unless P is split across files)

    def __getstate__(self) -> dict[str, Any]:  # a spawned worker opens the array itself
        return {**self.__dict__, "_array": None, "_last": None}

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def size(self) -> int:
        """``N * P``."""
        return self.shape[0] * self.shape[1]

    @property
    def nbytes(self) -> int:
        """Bytes of the whole matrix once materialised (``np.asarray``)."""
        return self.size * 4

    def __repr__(self) -> str:
        return f"LazyLatents({self.files.latent_file(self.split, '')}, shape={self.shape}, float32)"

    # ------------------------------------------------------------------ numpy interface
    def __array__(self, dtype: Any = None, copy: bool | None = None) -> np.ndarray:
        data = self.rows(np.arange(self.shape[0]))
        return data if dtype is None else data.astype(dtype, copy=False)

    def copy(self) -> np.ndarray:
        """The whole matrix ``[N, P]`` as a new array."""
        return np.asarray(self)

    def astype(self, dtype: Any) -> np.ndarray:
        """The whole matrix ``[N, P]`` as a new array of ``dtype``."""
        return np.asarray(self, dtype=dtype)

    def tobytes(self) -> bytes:
        """The whole matrix's bytes (C order)."""
        return np.asarray(self).tobytes()

    def __setitem__(self, key: Any, value: Any) -> None:
        raise ValueError(_READ_ONLY)

    def _read_only(self, other: Any) -> LazyLatents:
        raise ValueError(_READ_ONLY)

    __iadd__ = __isub__ = __imul__ = __itruediv__ = __ifloordiv__ = __ipow__ = _read_only

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
            pos = np.arange(*first.indices(n))
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
        """The Zarr array (opened once per process), shape and dtype checked by the source."""
        if self._array is None or self._pid != _process():  # a forked worker opens its own
            self._last = None
            array = self.files.latent_array(self.split)
            grid = array.shards or array.chunks  # rows × columns of one stored file
            self._rows_per_chunk = int(grid[0])
            self._column_files = math.ceil(self.shape[1] / int(grid[1])) if self.shape[1] else 1
            self._array, self._pid = array, _process()
            self._whole = bool(self.files.read_ahead) and self.nbytes <= self.files.cache.max_bytes // 2
        return self._array

    def _row(self, i: int) -> np.ndarray:
        """Row ``i`` ``[P]`` (a read-only view of its cached chunk)."""
        if self._array is None or self._pid != _process():
            self._open()
        last = self._last
        if self._whole:
            if last is None:
                last = self._last = (-1, self._all())
            return last[1][i]
        k = i // self._rows_per_chunk
        if last is not None and last[0] == k:  # the chunk of the previous read (sequential access)
            return last[1][i - k * self._rows_per_chunk]
        chunk = self.files.cache.get((self.split, k))
        if chunk is None:
            chunk = self._fetch([k])[k]
        self._last = (k, chunk)
        return chunk[i - k * self._rows_per_chunk]

    def rows(self, pos: np.ndarray) -> np.ndarray:
        """Rows ``pos`` (``[n]`` in ``0..N-1``) as a new array ``[n, P]``: cached chunks, the others read in
        groups that fit the cache (a whole-split read holds the result, the cache and one group at most)."""
        self._open()
        pos = np.asarray(pos, dtype=np.int64)
        if not len(pos):
            return np.empty((0, self.shape[1]), np.float32)
        if self._whole:
            return self._all().take(pos, axis=0)
        out = np.empty((len(pos), self.shape[1]), np.float32)
        R = self._rows_per_chunk
        chunk_of = pos // R
        if chunk_of[0] == chunk_of[-1] and (chunk_of == chunk_of[0]).all():  # one chunk (a sequential batch)
            k = int(chunk_of[0])
            chunk = self.files.cache.get((self.split, k))
            if chunk is None:
                chunk = self._fetch([k])[k]
            return chunk.take(pos - k * R, axis=0)
        needed = np.unique(chunk_of)
        order = np.argsort(chunk_of, kind="stable")
        bounds = np.searchsorted(chunk_of[order], np.append(needed, needed[-1] + 1))
        spans = {k: (start, stop) for k, start, stop in zip(needed.tolist(), bounds[:-1], bounds[1:])}

        def scatter(k: int, chunk: np.ndarray) -> None:
            start, stop = spans[k]
            at = order[start:stop]
            out[at] = chunk[pos[at] - k * R]

        missing = []
        for k in spans:
            chunk = self.files.cache.get((self.split, k))
            if chunk is None:
                missing.append(k)
            else:
                scatter(k, chunk)
        group = max(1, self.files.cache.max_bytes // max(1, R * self.shape[1] * 4))
        for g in range(0, len(missing), group):
            for k, chunk in self._fetch(missing[g:g + group]).items():
                scatter(k, chunk)
        return out

    def _all(self) -> np.ndarray:
        """The whole split ``[N, P]`` as one cached read-only array (only for a split within half the cache)."""
        data = self.files.cache.get((self.split, None))
        if data is None:
            data = self._fetch(list(range(-(-self.shape[0] // self._rows_per_chunk))), whole=True)[-1]
        return data

    def _keys(self, k: int) -> list[str]:
        """The names of the stored files of chunk row ``k`` (e.g. ``c/3/0``)."""
        encode = self._array.metadata.encode_chunk_key
        return [encode((k, j)) for j in range(self._column_files)]

    def _fetch(self, keys: list[int], whole: bool = False) -> dict[int, np.ndarray]:
        """Chunk rows ``keys`` read through zarr, checked (files, finite rows), cached (``whole``: all chunks,
        cached as one array, returned under key -1)."""
        array, R, n = self._open(), self._rows_per_chunk, self.shape[0]
        asked, chunks, room = keys, -(-n // R), max(1, self.files.cache.max_bytes // max(1, R * self.shape[1] * 4))
        lo, hi, ahead = min(keys), max(keys), self.files.read_ahead
        if ahead and len(keys) == 1 and lo + 1 < chunks and room > 2 and self._last is not None \
                and self._last[0] == lo - 1:  # the previous single-row read was in the chunk before
            hi = min(chunks - 1, lo + min(ahead, room // 2) - 1)  # sequential reads: the next chunks too
        if ahead and (hi > max(keys) or 1 < len(keys) and hi - lo + 1 <= 2 * len(keys)):  # few gaps: one read
            keys = list(range(lo, hi + 1))
        spans = [(k * R, min((k + 1) * R, n)) for k in keys]
        names = [name for k in keys for name in self._keys(k)]
        self.files.check_latent_files(self.split, names)
        try:
            if keys == list(range(keys[0], keys[0] + len(keys))):  # consecutive chunks: one slice read
                block = array[spans[0][0]:spans[-1][1]]
            else:
                rows = np.concatenate([np.arange(a, b) for a, b in spans])
                block = array.get_orthogonal_selection((rows, slice(None)))
        except MednfError:
            raise
        except Exception as err:  # noqa: BLE001 (zarr/numcodecs raise many types for a chunk they cannot decode)
            reason = f"{type(err).__name__}: {str(err).splitlines()[0][:120] if str(err) else ''}"
            raise FormatError(f"{self.files.latent_file(self.split, '')} cannot be read (chunk {names[0]} or another "
                              f"of that read: {reason}); {self.files.repair}") from None
        self.files.check_latent_files(self.split, names)  # not replaced while it was being read
        block = np.asarray(block, dtype=np.float32)
        if whole:
            for k, (a, b) in zip(keys, spans):
                check_finite(block[a:b], f"{self.files.latent_file(self.split, self._keys(k)[0])} (rows {a}..{b - 1})",
                             self.files.repair, first_row=a)
            block.setflags(write=False)
            self.files.cache.put((self.split, None), block)
            return {-1: block}
        fetched, offset = {}, 0
        for k, (a, b) in zip(keys, spans):
            chunk = np.ascontiguousarray(block[offset:offset + b - a])
            offset += b - a
            check_finite(chunk, f"{self.files.latent_file(self.split, self._keys(k)[0])} (rows {a}..{b - 1})",
                         self.files.repair, first_row=a)
            chunk.setflags(write=False)  # shared by every reader of the cache
            self.files.cache.put((self.split, k), chunk)
            fetched[k] = chunk
        return {k: fetched[k] for k in asked}

