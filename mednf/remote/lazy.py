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
The array-like and its cache are those of a local split read by chunk (:mod:`mednf.format.lazy`; a local split
is unpacked and memory-mapped instead, a URL's never is); what is remote is :class:`RemoteFiles`, the source they
read chunks from.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mednf.errors import FormatError, MednfError
from mednf.format.layout import INDEX, LATENTS, MANIFEST, MODEL
from mednf.format.lazy import DEFAULT_CACHE_BYTES, ChunkCache, LazyLatents
from mednf.format.manifest import Manifest
from mednf.format.reader import check_index_rows, check_theta, split_index
from mednf.format.tensors import tensors_from_bytes
from mednf.remote.fetch import RemoteFolder, remote_manifest
from mednf.remote.zarr_store import VerifiedStore

__all__ = ["DEFAULT_CACHE_BYTES", "ChunkCache", "LazyLatents", "RemoteFiles", "open_remote"]
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


class RemoteFiles:
    """An open remote dataset, with the interface of :class:`mednf.format.reader.DatasetFiles` that
    :class:`~mednf.dataset.MedNFDataset` uses (``root`` is the URL), and the
    :class:`~mednf.format.lazy.LatentSource` of its splits' :class:`~mednf.format.lazy.LazyLatents`."""

    repair = _FIX
    read_ahead = 0  # every chunk is a transfer: fetch only those asked for

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

    def latent_array(self, split: str) -> Any:
        """The split's Zarr array over the verified store (fetches ``zarr.json``), shape and dtype checked."""
        import zarr

        prefix = f"{LATENTS}/{split}"
        where = self.folder.file_url(prefix)
        if f"{prefix}/zarr.json" not in self.manifest.files:
            raise FormatError(f"{self.folder.file_url(MANIFEST)} lists no {prefix}/zarr.json; {_FIX}")
        store = VerifiedStore(self.folder, prefix, self.manifest.files)
        try:
            array = zarr.open_array(store=store, mode="r", zarr_format=3)
        except MednfError:
            raise
        except Exception as err:  # noqa: BLE001 (zarr raises many types for malformed metadata)
            raise FormatError(f"{where}/zarr.json is not a readable Zarr array ({type(err).__name__}: "
                              f"{str(err).splitlines()[0][:120] if str(err) else ''}); {_FIX}") from None
        expected = (self.manifest.splits[split].count, self.manifest.latent.dim)
        if array.shape != expected or array.dtype != np.float32 or array.ndim != 2:
            raise FormatError(f"{where} holds {array.dtype} {array.shape}, the manifest says float32 {expected}; "
                              f"{_FIX}")
        return array

    def latent_file(self, split: str, key: str) -> str:
        """The URL of file ``key`` (e.g. ``c/0/0``) of the split's array; ``""``: the array's folder."""
        return self.folder.file_url(f"{LATENTS}/{split}/{key}" if key else f"{LATENTS}/{split}")

    def check_latent_files(self, split: str, keys: list[str]) -> None:
        """Nothing to do: every remote file is checked against its sha256 as it arrives."""

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
