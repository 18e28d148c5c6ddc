"""Latent rows of a split: a local split unpacked once and memory-mapped, or read by Zarr chunk on demand.

**Local splits: unpacked once, then memory-mapped.** The first row access of a local split decompresses its
latents chunk by chunk (one chunk in memory at a time, each checked as below) into one uncompressed ``.npy``
file in mednf's cache, ``$MEDNF_HOME/.unpacked/<key>/<split>.npy`` (:func:`open_unpacked`), and rows are then
served from a memory map of it: a read-only ``np.ndarray`` whose ``base`` is the ``np.memmap`` (``.filename``;
a plain array indexes a row ~9x faster than ``np.memmap``, whose indexing runs Python code). Sequential,
random and shuffled reads run at memory speed, and the pages are shared through the OS page cache by
``DataLoader`` workers and other processes (they are not anonymous memory of a process). ``<key>`` is
derived from the sha256 the manifest records for the split's chunk files and Zarr metadata, so a changed
dataset gets a new file and never reads a stale one; a dataset whose files were not verified
(``verify=False`` and not remembered as verified) gets a key that also holds those files' identities.
Nothing is ever written into the dataset's folder (it may be read-only).

- The file is written under a temporary name beside it (``.<split>.npy.<pid>.tmp``, never through a link),
  fsynced and renamed whole; ``<split>.json`` beside it records its size, the sha256 of its bytes (computed
  while writing) and its identity (size, mtime_ns, ctime_ns, inode). Opening it compares that identity
  (a ``stat``): a file changed since it was written is hashed again and unpacked again unless its sha256 is
  the recorded one, so a changed file never gives wrong rows silently.
- Processes unpacking the same split wait for each other (``flock`` on ``.<split>.lock`` in the key's
  folder; without it, unique temporary names and the atomic rename still leave a whole file); the second
  reuses the first's file. A killed unpack leaves only its temporary file, ignored and removed by the next
  unpack of that key.
- Free space: when the file would leave less than :data:`UNPACK_MARGIN` (1 GiB, or 5 % of a smaller disk)
  free on the cache's disk, or the cache cannot be written, the split is read by chunk instead, with one
  :class:`UnpackWarning` per process naming the size and the free space. ``MEDNF_UNPACK=0`` turns
  unpacking off: local splits are then read by chunk like a URL.

**Read by chunk** (URLs, and local splits not unpacked): :class:`LazyLatents` is the latent matrix ``[N, P]``
float32 of one split. Indexing it reads only the stored chunks (``chunk_rows`` rows each) that hold the rows
asked for, through a :class:`LatentSource`: :class:`mednf.format.reader.DatasetFiles` for a folder on disk,
:class:`mednf.remote.lazy.RemoteFiles` for a URL. Decoded chunks ``[R, P]`` stay in a :class:`ChunkCache`
(least recently used dropped beyond ``max_bytes``, default 256 MiB) shared by the splits of one open dataset,
so the memory a process holds does not grow with the split; ``np.asarray(latents)`` materialises the whole
matrix (a new array). A local split reads the next ``read_ahead`` chunks with a chunk when reads go in order;
a URL reads only the chunks asked for. Random rows of a split larger than the cache decode a chunk for most
rows: that is what unpacking avoids.

Every chunk is checked as it is read, whatever the source and whether it is cached or unpacked: its files
are asked to be the ones opened (:meth:`LatentSource.check_latent_files`: a folder compares file identities
before and after the read, a URL has checked every file's sha256 on arrival) and its rows must be finite
(rows never written are NaN). A chunk that fails is a one-line :class:`~mednf.errors.FormatError` naming its
file; it is never cached or unpacked, and no row of it is returned.

Processes: a pickled cache (spawned ``DataLoader`` worker) starts empty; a forked worker keeps what the
parent had cached (copy on write) and reopens the Zarr array itself; a memory map is shared (fork) or
mapped again from the unpacked file (spawn, identity checked).
"""

from __future__ import annotations

import fcntl
import hashlib
import io
import json
import math
import os
import shutil
import stat
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from mednf.errors import FormatError, MednfError
from mednf.format.layout import LATENTS, mednf_home
from mednf.format.manifest import Manifest
from mednf.io.files import atomic_write_bytes, create_new, is_temporary, temporary_name

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
        # (k, chunk) of the last single-row read: kept even if the cache drops it
        self._last: tuple[int, np.ndarray] | None = None
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
        return self._array

    @property
    def chunk_count(self) -> int:
        """Chunk rows of the split: ``ceil(N / R)`` (the array is opened)."""
        self._open()
        return -(-self.shape[0] // self._rows_per_chunk)

    def _row(self, i: int) -> np.ndarray:
        """Row ``i`` ``[P]`` (a read-only view of its cached chunk)."""
        if self._array is None or self._pid != _process():
            self._open()
        last = self._last
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

    def _keys(self, k: int) -> list[str]:
        """The names of the stored files of chunk row ``k`` (e.g. ``c/3/0``)."""
        encode = self._array.metadata.encode_chunk_key
        return [encode((k, j)) for j in range(self._column_files)]

    def _fetch(self, keys: list[int]) -> dict[int, np.ndarray]:
        """Chunk rows ``keys`` read (:meth:`read_chunks`) and cached; the next chunks too when reads go in order
        (``read_ahead``), and the chunks between when few are skipped (one zarr read)."""
        self._open()
        R, n = self._rows_per_chunk, self.shape[0]
        asked, chunks, room = keys, -(-n // R), max(1, self.files.cache.max_bytes // max(1, R * self.shape[1] * 4))
        lo, hi, ahead = min(keys), max(keys), self.files.read_ahead
        if ahead and len(keys) == 1 and lo + 1 < chunks and room > 2 and self._last is not None \
                and self._last[0] == lo - 1:  # the previous single-row read was in the chunk before
            hi = min(chunks - 1, lo + min(ahead, room // 2) - 1)  # sequential reads: the next chunks too
        if ahead and (hi > max(keys) or 1 < len(keys) and hi - lo + 1 <= 2 * len(keys)):  # few gaps: one read
            keys = list(range(lo, hi + 1))
        fetched = self.read_chunks(keys)
        for k, chunk in fetched.items():
            self.files.cache.put((self.split, k), chunk)
        return {k: fetched[k] for k in asked}

    def read_chunks(self, keys: list[int]) -> dict[int, np.ndarray]:
        """Chunk rows ``keys`` (sorted) as read-only arrays ``[R, P]`` (the last one may be shorter), read through
        zarr in one call and checked (files unchanged before and after, finite rows); nothing is cached."""
        array, R, n = self._open(), self._rows_per_chunk, self.shape[0]
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
        fetched, offset = {}, 0
        for k, (a, b) in zip(keys, spans):
            chunk = np.ascontiguousarray(block[offset:offset + b - a])  # no copy for a read of one chunk
            offset += b - a
            check_finite(chunk, f"{self.files.latent_file(self.split, self._keys(k)[0])} (rows {a}..{b - 1})",
                         self.files.repair, first_row=a)
            chunk.setflags(write=False)  # shared by every reader of the cache
            fetched[k] = chunk
        return fetched


# ---------------------------------------------------------------------- unpacked local splits

UNPACKED = ".unpacked"  # the cache folder of unpacked splits, in $MEDNF_HOME
UNPACK_ENV = "MEDNF_UNPACK"
UNPACK_MARGIN = 1 << 30  # free bytes an unpack leaves on the cache's disk (at most 5 % of the disk)
_FORMAT = 1  # of the unpacked file and its record: part of the key
_WARNED: set[str] = set()  # kinds of UnpackWarning already given in this process
_LOCKS: dict[Path, threading.Lock] = {}  # one per unpacked file: threads of a process unpack it once
_LOCKS_GUARD = threading.Lock()


def _reset_locks() -> None:  # a forked child: a lock held by another thread of the parent would never be freed
    global _LOCKS_GUARD
    _LOCKS.clear()
    _LOCKS_GUARD = threading.Lock()


os.register_at_fork(after_in_child=_reset_locks)


class UnpackWarning(UserWarning):
    """A local split is read by chunk because it could not be unpacked (no room, cache not writable)."""


def unpack_enabled() -> bool:
    """False when ``MEDNF_UNPACK=0``: local splits are read by chunk."""
    return os.environ.get(UNPACK_ENV, "1").strip() != "0"


def unpack_key(manifest: Manifest, split: str, identities: dict[str, Any] | None = None) -> str:
    """The cache key of ``split``'s unpacked file: a digest of the sha256 the manifest records for the split's
    chunk files and Zarr metadata (and of ``identities`` of those files when they were not verified)."""
    prefix = f"{LATENTS}/{split}/"
    files = {rel: entry.sha256 for rel, entry in manifest.files.items()
             if rel.startswith(prefix) or rel == f"{LATENTS}/zarr.json"}
    text = json.dumps({"format": _FORMAT, "split": split, "files": files, "unverified": identities}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def disk_space(folder: Path) -> Any:
    """``shutil.disk_usage(folder)``: total, used and free bytes of ``folder``'s disk."""
    return shutil.disk_usage(folder)


def open_unpacked(latents: LazyLatents, key: str) -> np.ndarray | None:
    """The split of ``latents`` (a local source) memory-mapped read-only ``[N, P]`` from its unpacked file
    ``$MEDNF_HOME/.unpacked/<key>/<split>.npy``, unpacked now if there is none (or a changed one); None when
    unpacking is off (``MEDNF_UNPACK=0``) or cannot be done here (no room, cache not writable: one
    :class:`UnpackWarning`), then the split is read by chunk. A damaged chunk is a FormatError (module docstring).
    """
    if not unpack_enabled() or not latents.size:
        return None
    path = mednf_home() / UNPACKED / key / f"{latents.split}.npy"
    with _thread_lock(path):
        mapped = _map(path, latents.shape)
        if mapped is not None:
            return mapped
        try:
            if not _own_folders(path.parent):
                _warn("link", f"{path.parent} or a folder above it in {mednf_home()} is a symbolic link or not a "
                              f"folder: mednf writes its unpacked latents only into real folders of its own, so the "
                              f"{latents.split} latents are read by chunk instead (remove it; {UNPACK_ENV}=0 reads "
                              "by chunk without trying)")
                return None
            with _process_lock(path):
                mapped = _map(path, latents.shape)  # unpacked by another process while this one waited
                if mapped is None:
                    if not _room(path, latents):
                        return None
                    _unpack(latents, path)
                    mapped = _map(path, latents.shape)
        except OSError as err:
            _warn("error", f"the {latents.split} latents of {latents.files.latent_file(latents.split, '')} cannot be "
                           f"unpacked into {path.parent} ({type(err).__name__}: {err.strerror or err}); they are read "
                           f"by chunk instead (slower for shuffled reads; {UNPACK_ENV}=0 reads by chunk without "
                           "trying)")
            return None
    if mapped is None:
        raise FormatError(f"{path} was changed while it was being unpacked; load the dataset again")
    return mapped


def _own_folders(folder: Path) -> bool:
    """Create ``folder`` (``$MEDNF_HOME/.unpacked/<key>``) and the folders above it inside ``$MEDNF_HOME`` that are
    missing; False if any of them is a symbolic link or not a folder (never followed, never written through)."""
    home = mednf_home()
    home.mkdir(parents=True, exist_ok=True)
    for part in (folder.parent, folder):  # .unpacked, then <key>
        try:
            os.mkdir(part)
        except FileExistsError:
            pass
        if part.is_symlink() or not part.is_dir():
            return False
    return True


def _warn(kind: str, message: str) -> None:
    if kind not in _WARNED:
        _WARNED.add(kind)
        warnings.warn(message, UnpackWarning, stacklevel=4)


def _room(path: Path, latents: LazyLatents) -> bool:
    """Whether the unpacked file fits the cache's disk with :data:`UNPACK_MARGIN` to spare (else one warning)."""
    usage = disk_space(path.parent)
    need = latents.nbytes + 128  # the rows and the .npy header
    margin = min(UNPACK_MARGIN, usage.total // 20)
    if need + margin <= usage.free:
        return True
    _warn("space", f"the {latents.split} latents of {latents.files.latent_file(latents.split, '')} need "
                   f"{need / 2**30:.2f} GiB unpacked, {path.parent.parent} has {usage.free / 2**30:.2f} GiB free (and "
                   f"keeps {margin / 2**30:.2f} GiB free): they are read by chunk instead (slower for shuffled reads; "
                   f"free space or set MEDNF_HOME elsewhere; {UNPACK_ENV}=0 reads by chunk without this warning)")
    return False


@contextmanager
def _thread_lock(path: Path) -> Iterator[None]:
    """One thread of this process at a time unpacks or maps ``path``."""
    with _LOCKS_GUARD:
        lock = _LOCKS.setdefault(path, threading.Lock())
    with lock:
        yield


@contextmanager
def _process_lock(path: Path) -> Iterator[None]:
    """``flock`` on ``.<split>.lock`` beside ``path`` for the block (released by the OS if the process dies); where
    the file system has no locks, the block runs unlocked (unique temporary names keep it correct)."""
    fd = os.open(path.with_name(f".{path.stem}.lock"), os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            locked = True
        except OSError:
            locked = False
        if locked:  # mednf's temporary files of this split now belong to processes that died before renaming them
            for stale in path.parent.glob(f".{path.stem}.*.tmp"):  # the .npy and its .json record
                if is_temporary(stale):
                    stale.unlink(missing_ok=True)
        yield
    finally:
        os.close(fd)


def _identity(st: os.stat_result) -> list[int]:
    return [st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino]


def _unpack(latents: LazyLatents, path: Path) -> None:
    """Write the split ``[N, P]`` as an uncompressed ``.npy`` at ``path`` (chunk by chunk, each checked; temporary
    name, fsync, rename), then its record ``<split>.json`` (size, sha256 of the bytes, identity)."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": latents.shape})
    digest = hashlib.sha256(header.getvalue())
    tmp = temporary_name(path)
    tmp.unlink(missing_ok=True)  # left by a killed process that had this pid (unlink never follows a link)
    try:
        with os.fdopen(create_new(tmp), "wb") as fh:
            fh.write(header.getvalue())
            for k in range(latents.chunk_count):
                data = latents.read_chunks([k])[k].data.cast("B")  # [R, P] C order, checked
                digest.update(data)
                fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    st = os.lstat(path)  # after the rename, which may change ctime
    record = {"format": _FORMAT, "split": latents.split, "shape": list(latents.shape), "size": st.st_size,
              "sha256": digest.hexdigest(), "identity": _identity(st)}
    atomic_write_bytes(path.with_suffix(".json"), json.dumps(record).encode())


def _map(path: Path, shape: tuple[int, int]) -> np.ndarray | None:
    """``path`` memory-mapped read-only ``shape`` float32 (a plain array over the ``np.memmap``, its ``base``) if
    it is the file its record describes (same identity, or else the same sha256 of its bytes, then the record is
    updated); None if absent, a link, or another file."""
    try:
        record = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        fh = open(path, "rb", opener=lambda name, flags: os.open(name, flags | os.O_NOFOLLOW))
    except (OSError, ValueError):
        return None
    with fh:  # its name becomes the map's ``filename``
        st = os.fstat(fh.fileno())
        if not isinstance(record, dict) or not stat.S_ISREG(st.st_mode) or st.st_size != record.get("size"):
            return None
        if _identity(st) != record.get("identity"):  # changed, copied or restored since it was written: hash it
            digest = hashlib.sha256()
            while block := fh.read(1 << 22):
                digest.update(block)
            if digest.hexdigest() != record.get("sha256"):
                return None  # another file than the one written: unpacked again
            record["identity"] = _identity(st)
            try:
                atomic_write_bytes(path.with_suffix(".json"), json.dumps(record).encode())
            except OSError:
                pass  # a read-only cache: hashed again next time
            fh.seek(0)
        try:
            version = np.lib.format.read_magic(fh)
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            stored, fortran, dtype = read_header(fh)
        except ValueError:
            return None
        if tuple(stored) != tuple(shape) or fortran or dtype != np.dtype("<f4"):
            return None
        return np.memmap(fh, dtype=np.float32, mode="r", offset=fh.tell(), shape=shape).view(np.ndarray)
