"""The verifying reader: what it returns is what was written, or the user gets a one-line FormatError.

- :func:`open_dataset` parses the manifest, checks the structure (every listed file present with its
  size, nothing unlisted, index rows exactly ``0..N-1`` per split) and, unless ``verify=False``, the
  **sha256 of every file** against the manifest. A verification is remembered in
  ``$MEDNF_HOME/.verified/`` by file identity (path, size, mtime_ns, ctime_ns, inode and device of every
  file and of the manifest): an unchanged dataset is not hashed again, anything changed is (bit rot that
  changes no metadata is only found by a full check: ``open_dataset(root, use_cache=False)``).
- :class:`DatasetFiles` (what it returns) keeps the identity of the files it verified. Every read
  (:meth:`~DatasetFiles.latents`, :meth:`~DatasetFiles.theta`, :meth:`~DatasetFiles.index`) first checks
  that the files are still those: a dataset rebuilt (``--restart``), replaced by a download or deleted
  under an open handle is an error at the next read, never rows of another build. Latents holding NaN
  (rows never written) are an error too, and any decoding failure of a damaged file names the file.
- Latents (:meth:`~DatasetFiles.latent_rows`, see :mod:`mednf.format.lazy`): on first use a split is unpacked
  chunk by chunk into an uncompressed file in ``$MEDNF_HOME/.unpacked/`` (never into the dataset's folder),
  each chunk's files checked unchanged before and after it is read and its rows checked finite, and is then
  a read-only memory map of that file. With ``MEDNF_UNPACK=0``, or no room for the file, it is read by Zarr
  chunk on demand instead (a :class:`~mednf.format.lazy.LazyLatents`, same checks), decoded chunks kept in a
  bounded cache (``cache_bytes``, default 256 MiB) shared by the splits of one handle.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np

from mednf.engine.config import param_shapes
from mednf.errors import FormatError
from mednf.format.layout import INDEX, LATENTS, MANIFEST, MODEL, content_files, mednf_home
from mednf.format.lazy import DEFAULT_CACHE_BYTES, READ_AHEAD, ChunkCache, LazyLatents, open_unpacked, unpack_key
from mednf.format.manifest import Manifest
from mednf.format.tensors import load_tensors
from mednf.io.files import atomic_write_bytes, sha256_file

Identity = tuple[int, int, int, int, int]  # size, mtime_ns, ctime_ns, inode, device
_FIX = "rebuild it or download it again"
EXECUTION_FIELDS = ("precision",)  # field settings of how θ was computed, not of the function it defines
# field settings added after datasets were written, with the value every earlier θ had (absent = that value)
LATER_FIELDS = {"learned_inner_lr": False, "learned_init": False}


def _identity(path: Path) -> Identity:
    # ctime cannot be set back by a user (utime sets mtime only), so an edit that restores the mtime is seen
    st = path.stat()
    return st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev


def check_structure(root: Path, manifest: Manifest) -> None:
    """Files listed = files present, sizes equal, index rows ``0..N-1`` per split (cheap: no hashing)."""
    listed = manifest.files
    present = {p.relative_to(root).as_posix() for p in content_files(root)}
    missing, extra = sorted(set(listed) - present), sorted(present - set(listed))
    if extra and not missing:  # something was put into the folder: the dataset itself may be whole
        raise FormatError(f"{root} holds files its manifest does not list: {', '.join(extra[:5])}; move or delete "
                          "them (a dataset folder holds only its own files), then load it again")
    if missing or extra:
        parts = ([f"files missing: {', '.join(missing[:5])}"] if missing else []) + (
            [f"files not in the manifest: {', '.join(extra[:5])}"] if extra else [])
        raise FormatError(f"{root}: {'; '.join(parts)}; the dataset is damaged, {_FIX}")
    for rel, entry in listed.items():
        size = (root / rel).stat().st_size
        if size != entry.size:
            raise FormatError(f"{root / rel} has {size} bytes, the manifest says {entry.size}; {_FIX}")
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        index = pq.read_table(root / INDEX, columns=["split", "row"])
    except (OSError, pa.ArrowException) as err:
        raise FormatError(f"{root / INDEX} is not a readable index ({err}); {_FIX}") from None
    check_index_rows(index, manifest, root)


def check_index_rows(index: Any, manifest: Manifest, where: str | Path) -> None:
    """The index (pyarrow Table with ``split`` and ``row``) holds rows exactly ``0..N-1`` per split and as many
    rows as the manifest counts; ``where`` names the dataset in the error."""
    import pyarrow.compute as pc

    splits = index["split"].cast("string")
    for split, stats in manifest.splits.items():
        rows = np.sort(index.filter(pc.equal(splits, split))["row"].to_numpy())
        if not np.array_equal(rows, np.arange(stats.count)):
            raise FormatError(f"{where}: index rows of split {split!r} are not exactly 0..{stats.count - 1}; {_FIX}")
    if len(index) != manifest.total:
        raise FormatError(f"{where}: {INDEX} has {len(index)} rows, the manifest counts {manifest.total}; {_FIX}")


def check_checksums(root: Path, manifest: Manifest) -> None:
    """sha256 of every listed file against the manifest."""
    for rel, entry in manifest.files.items():
        digest = sha256_file(root / rel)
        if digest != entry.sha256:
            raise FormatError(f"{root / rel} has sha256 {digest[:16]}…, the manifest says {entry.sha256[:16]}… "
                              f"(the file was changed or damaged); {_FIX}")


# ---------------------------------------------------------------------- verification cache


def _cache_file(root: Path) -> Path:
    key = hashlib.sha256(str(root.resolve()).encode()).hexdigest()[:24]
    return mednf_home() / ".verified" / f"{key}.json"


def _snapshot(root: Path, manifest: Manifest) -> dict[str, Identity]:
    return {rel: _identity(root / rel) for rel in [MANIFEST, *manifest.files]}


def _remembered(root: Path, snapshot: dict[str, Identity]) -> bool:
    try:
        record = json.loads(_cache_file(root).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return (isinstance(record, dict) and record.get("root") == str(root.resolve())
            and {k: tuple(v) for k, v in record.get("files", {}).items()} == snapshot)


def _remember(root: Path, snapshot: dict[str, Identity]) -> None:
    path = _cache_file(root)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(path, json.dumps({"root": str(root.resolve()), "files": snapshot}).encode())
    except OSError:
        pass  # a read-only cache only costs a re-hash next time


def mark_verified(root: Path) -> None:
    """Remember ``root`` as verified without hashing it again: only for files whose sha256 was just checked
    under another path and that were then moved here by a rename (which keeps inode, size and mtime)."""
    root = Path(root)
    _remember(root, _snapshot(root, Manifest.read(root)))


def verify_dataset(root: str | Path, *, checksums: bool = True, use_cache: bool = True) -> Manifest:
    """The manifest of ``root`` after checking structure and (``checksums``) every file's sha256."""
    return open_dataset(root, verify=checksums, use_cache=use_cache).manifest


def open_dataset(root: str | Path, *, verify: bool = True, use_cache: bool = True,
                 cache_bytes: int = DEFAULT_CACHE_BYTES) -> DatasetFiles:
    """A verified handle on dataset directory ``root`` (see the module docstring); ``cache_bytes`` bounds the
    decoded latent chunks it keeps in memory when a split is read by chunk."""
    root = Path(root)
    before = _identity(root / MANIFEST) if (root / MANIFEST).is_file() else None
    manifest = Manifest.read(root)
    check_structure(root, manifest)
    snapshot = _snapshot(root, manifest)
    if snapshot[MANIFEST] != before:
        raise FormatError(f"{root} changed while it was being opened; load it again")
    verified = use_cache and _remembered(root, snapshot)
    if verify and not verified:
        check_checksums(root, manifest)
        if _snapshot(root, manifest) != snapshot:
            raise FormatError(f"{root} changed while it was being verified; load it again")
        if use_cache:
            _remember(root, snapshot)
        verified = True
    return DatasetFiles(root, manifest, snapshot, cache_bytes=cache_bytes, verified=verified)


class DatasetFiles:
    """An open dataset: the manifest and reads that check the files are still the verified ones.

    It is the :class:`~mednf.format.lazy.LatentSource` of its splits' :class:`~mednf.format.lazy.LazyLatents`
    (one per split, sharing :attr:`cache`), which are unpacked and memory-mapped on first use where they can be.
    ``verified``: every file's sha256 was checked against the manifest (now or remembered), so the unpacked copy
    of a split may be shared with every verified copy of the same files. Pickled (a spawned ``DataLoader``
    worker), it carries the manifest and the file identities only: the copy maps or opens the arrays itself and
    starts with an empty cache.
    """

    repair = _FIX
    read_ahead = READ_AHEAD  # a local chunk costs little: read the next ones with it when reads go in order

    def __init__(self, root: Path, manifest: Manifest, snapshot: dict[str, Identity], *,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, verified: bool = False) -> None:
        self.root = root
        self.manifest = manifest
        self.verified = verified
        self._snapshot = snapshot
        self.cache = ChunkCache(cache_bytes)
        self._views: dict[str, np.ndarray | LazyLatents] = {}

    def __getstate__(self) -> dict[str, Any]:  # a spawned DataLoader worker makes its own views
        return {**self.__dict__, "_views": {}}

    def check_unchanged(self, files: list[str] | None = None) -> None:
        """FormatError if the manifest or ``files`` (default all) are no longer those that were opened."""
        for rel in [MANIFEST, *(files if files is not None else self.manifest.files)]:
            try:
                same = _identity(self.root / rel) == self._snapshot.get(rel)
            except OSError:
                same = rel not in self._snapshot  # a file the manifest does not list must stay absent
            if not same:
                raise FormatError(f"{self.root} changed on disk since it was opened ({rel} was rebuilt, replaced or "
                                  "deleted); load the dataset again")

    def _split_files(self, split: str) -> list[str]:
        prefix = f"{LATENTS}/{split}/"
        return [rel for rel in self.manifest.files if rel.startswith(prefix) or rel == f"{LATENTS}/zarr.json"]

    def latent_array(self, split: str) -> Any:
        """The split's Zarr array (read-only), files unchanged, shape ``[N, P]`` and dtype float32 checked."""
        import zarr

        self.check_unchanged(self._split_files(split))
        expected = (self.manifest.splits[split].count, self.manifest.latent.dim)
        path = self.root / LATENTS / split
        try:
            array = zarr.open_array(str(path), mode="r", zarr_format=3)
        except Exception as err:  # noqa: BLE001 (zarr raises many types for damaged metadata)
            raise FormatError(f"{path} cannot be read ({type(err).__name__}: {str(err).splitlines()[0][:120]}); "
                              f"{_FIX}") from None
        if array.shape != expected or array.dtype != np.float32 or array.ndim != 2:
            raise FormatError(f"{path} holds {array.dtype} {array.shape}, the manifest says float32 {expected}; {_FIX}")
        return array

    def latent_file(self, split: str, key: str) -> str:
        """The path of file ``key`` (e.g. ``c/0/0``) of the split's array; ``""``: the array's folder."""
        return str(self.root / LATENTS / split / key) if key else str(self.root / LATENTS / split)

    def check_latent_files(self, split: str, keys: list[str]) -> None:
        """FormatError unless the manifest, the array's metadata and its files ``keys`` are those opened."""
        self.check_unchanged([f"{LATENTS}/zarr.json", f"{LATENTS}/{split}/zarr.json",
                              *(f"{LATENTS}/{split}/{key}" for key in keys)])

    def latent_rows(self, split: str) -> np.ndarray | LazyLatents:
        """What :class:`~mednf.dataset.MedNFDataset` indexes rows in: the split's matrix ``[N, P]`` float32, a
        read-only memory map of its unpacked file (unpacked now on first use), or where it is not unpacked
        (:func:`~mednf.format.lazy.open_unpacked`) read by chunk on demand
        (:class:`~mednf.format.lazy.LazyLatents`). Opened now, so a folder changed since the dataset was opened,
        an array of the wrong shape or (unpacking) a damaged chunk is an error here."""
        split = self.manifest.check_split(split)
        if split not in self._views:
            view = LazyLatents(self, split)
            view._open()
            identities = None if self.verified else {rel: self._snapshot[rel] for rel in self._split_files(split)}
            mapped = open_unpacked(view, unpack_key(self.manifest, split, identities))
            self._views[split] = view if mapped is None else mapped
        return self._views[split]

    def latents(self, split: str) -> np.ndarray:
        """The split's whole latent matrix ``[N, P]`` float32, read-only: the memory map itself for an unpacked
        split, else a new array read chunk by chunk (files unchanged, shape, dtype, no NaN checked)."""
        data = np.asarray(self.latent_rows(split))
        data.setflags(write=False)
        return data

    def theta(self) -> dict[str, Any]:
        """θ (CPU tensors) from ``model.safetensors``, files unchanged."""
        self.check_unchanged([MODEL])
        tensors, meta = load_tensors(self.root / MODEL)
        self.check_unchanged([MODEL])
        check_theta(tensors, meta, self.manifest, self.root / MODEL)
        return tensors

    def index(self, split: str) -> Any:
        """The split's rows of ``index.parquet`` (pyarrow Table) sorted by ``row``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.check_unchanged([INDEX])
        try:
            table = pq.read_table(self.root / INDEX)
        except (OSError, pa.ArrowException) as err:
            raise FormatError(f"{self.root / INDEX} cannot be read ({err}); {_FIX}") from None
        self.check_unchanged([INDEX])
        return split_index(table, self.manifest, split, self.root / INDEX)


# ---------------------------------------------------------------------- checks shared with the remote reader


def check_theta(tensors: dict[str, Any], meta: dict[str, Any], manifest: Manifest, where: str | Path) -> None:
    """FormatError unless ``tensors`` hold exactly the network the manifest describes (names and shapes), every
    value is finite, and the field settings θ was written with (``meta["field"]``, recorded beside it) are the
    manifest's: a changed ω or shift mode in ``mednf.json`` would decode other images in silence."""
    field = manifest.engine_config.field
    expected = param_shapes(field)
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if shapes != expected:
        wrong = sorted(set(shapes) ^ set(expected)) or [k for k in expected if shapes[k] != expected[k]]
        raise FormatError(f"{where} does not hold the network the manifest describes (differs at {wrong[:3]}); "
                          f"{_FIX}")
    bad = [name for name, value in tensors.items() if not bool(value.isfinite().all())]
    if bad:
        raise FormatError(f"{where} holds NaN/inf weights (in {bad[:3]}); {_FIX}")
    recorded = _recorded_field(meta.get("field"), where)
    described = dataclasses.asdict(field)
    differ = [k for k in described if k not in EXECUTION_FIELDS
              and recorded.get(k, LATER_FIELDS.get(k, _MISSING)) != described[k]]
    if differ:
        key = differ[0]
        was = repr(recorded[key]) if key in recorded else "nothing"
        raise FormatError(f"{where} was written with field.{key} = {was}, the manifest says "
                          f"{described[key]!r}: the manifest was changed after the build; {_FIX}")


_MISSING = object()


def _recorded_field(value: Any, where: str | Path) -> dict[str, Any]:
    """The field settings recorded beside θ: a JSON object, or (files of the first format version) that object as
    a JSON string. θ without them cannot be tied to its manifest, so it is refused."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except (json.JSONDecodeError, RecursionError, ValueError):
            value = None
    if not isinstance(value, dict):
        raise FormatError(f"{where} records no field settings beside θ, so it cannot be checked against the "
                          f"manifest; {_FIX}")
    return value


def split_index(table: Any, manifest: Manifest, split: str, where: str | Path) -> Any:
    """The rows of ``split`` in index ``table`` (pyarrow), sorted by ``row``, after checking the label column."""
    import pyarrow.compute as pc

    column = "labels" if manifest.multi_label else "label"
    if column not in table.column_names:
        raise FormatError(f"{where} has no {column!r} column, which a {manifest.labels.task} dataset needs; {_FIX}")
    return table.filter(pc.equal(table["split"].cast("string"), split)).sort_by("row")

