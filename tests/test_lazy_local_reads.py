"""Local latents: a split is unpacked once into ``$MEDNF_HOME/.unpacked`` and memory-mapped (reused, re-made
when the dataset or the file changed, never written into the dataset's folder), or read by Zarr chunk on
demand (``MEDNF_UNPACK=0``, no room): the same values as a whole-array read either way, a chunk cache that
never holds more than its byte limit, every chunk checked as it is read (NaN rows, replaced files), and
DataLoader workers that give the same batches."""

from __future__ import annotations

import collections
import copy
import dataclasses
import hashlib
import json
import multiprocessing
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

import mednf
from mednf.errors import FormatError
from mednf.format import lazy, reader
from mednf.format.lazy import ChunkCache, LazyLatents, UnpackWarning, unpack_key
from mednf.format.manifest import Manifest
from mednf.format.writer import DatasetWriter, SplitIndex

P, ROWS, N = 12, 16, 100  # latent size, rows per chunk, rows of the split (7 chunks, the last one short)


def write_dataset(root: Path, phantom_dir: Path, latents: np.ndarray) -> Path:
    """A dataset of one ``train`` split holding ``latents`` ``[N, P]`` (no θ: nothing here decodes), written by
    mednf's writer with the PhantomNF manifest's settings but P, chunk rows and counts."""
    n, p = latents.shape
    base = Manifest.read(phantom_dir)
    engine = copy.deepcopy(base.engine)
    engine["field"]["latent_dim"] = p
    manifest = base.replace(engine=engine, latent=dataclasses.replace(base.latent, dim=p, chunk_rows=ROWS),
                            splits={}, files={})
    writer = DatasetWriter(root, latent_dim=p, chunk_rows=ROWS)
    writer.prepare()
    writer.create_latents({"train": n})
    for start in range(0, n, ROWS):
        writer.write_latents("train", start, latents[start:start + ROWS])
    index = {"train": SplitIndex(source_index=np.arange(n), labels=(np.arange(n) % 4)[:, None],
                                 psnr=np.full(n, 30.0), ssim=np.full(n, 0.9))}
    writer.finish(manifest, index, "synthetic rows for tests")
    return root


@pytest.fixture(autouse=True)
def own_home(tmp_path, monkeypatch) -> Path:
    """A cache of this test's own: unpacked files of earlier tests (same synthetic rows) are not reused."""
    home = tmp_path / "home"
    monkeypatch.setenv("MEDNF_HOME", str(home))
    monkeypatch.setenv("MEDNF_UNPACK", "1")
    return home


@pytest.fixture
def rows_dir(tmp_path, phantom_dir) -> tuple[Path, np.ndarray]:
    latents = np.random.default_rng(0).standard_normal((N, P)).astype(np.float32)
    return write_dataset(tmp_path / "RowsNF", phantom_dir, latents), latents


@pytest.mark.parametrize("unpack", ["1", "0"])
def test_values_equal_a_whole_array_read(phantom_dir, monkeypatch, unpack):
    monkeypatch.setenv("MEDNF_UNPACK", unpack)
    ds = mednf.load(phantom_dir, split="train")
    reference = zarr.open_array(str(phantom_dir / "latents.zarr" / "train"), mode="r")[:]  # [N, P]
    lazy = ds.latents
    assert isinstance(lazy.base if unpack == "1" else lazy, np.memmap if unpack == "1" else LazyLatents)
    assert lazy.shape == reference.shape and len(lazy) == len(reference)
    for key in (slice(None), slice(3, 17), slice(None, None, 3), slice(-5, None), slice(18, 2, -4), slice(7, 7)):
        np.testing.assert_array_equal(lazy[key], reference[key])
    for key in ([5, 1, 5, 19], np.array([[0, 19], [8, 9]]), [-1, -20, 0], np.arange(20) % 3 == 0, []):
        np.testing.assert_array_equal(lazy[key], reference[key])
    for i in (0, 7, 8, 19, -1, -20):
        np.testing.assert_array_equal(lazy[i], reference[i])
        np.testing.assert_array_equal(ds[i]["latent"].numpy(), reference[i])
    np.testing.assert_array_equal(lazy[2:9, 4:6], reference[2:9, 4:6])
    np.testing.assert_array_equal(lazy[..., 1], reference[..., 1])
    np.testing.assert_array_equal(np.asarray(lazy), reference)
    np.testing.assert_array_equal(ds[[3, -2]]["latent"].numpy(), reference[[3, -2]])
    with pytest.raises(IndexError):
        lazy[20]
    with pytest.raises(IndexError):
        lazy[[0, -21]]
    with pytest.raises(ValueError, match="read-only"):
        lazy[0] = 1
    assert not lazy[0].flags.writeable


def test_the_cache_never_holds_more_than_its_limit(rows_dir, monkeypatch):
    monkeypatch.setenv("MEDNF_UNPACK", "0")  # read by chunk
    root, latents = rows_dir
    chunk = ROWS * P * 4
    ds = mednf.load(root, split="train", cache_bytes=2 * chunk)  # room for two chunks of seven
    cache = ds.files.cache
    assert isinstance(cache, ChunkCache) and cache.max_bytes == 2 * chunk
    rng = np.random.default_rng(1)
    for _ in range(60):
        i = int(rng.integers(N))
        np.testing.assert_array_equal(ds[i]["latent"].numpy(), latents[i])
        assert cache.nbytes <= cache.max_bytes and len(cache) <= 2
    batch = rng.permutation(N)[:40]  # rows of every chunk in one gather
    np.testing.assert_array_equal(ds.latents[batch], latents[batch])
    assert cache.nbytes <= cache.max_bytes
    np.testing.assert_array_equal(np.asarray(ds.latents), latents)  # materialised in groups that fit the cache
    assert cache.nbytes <= cache.max_bytes


def test_a_nan_in_one_chunk_is_refused_when_that_chunk_is_read(rows_dir, own_home, monkeypatch):
    root, latents = rows_dir
    array = zarr.open_array(str(root / "latents.zarr" / "train"), mode="r+")
    block = array[2 * ROWS:3 * ROWS]
    block[5] = np.nan
    array[2 * ROWS:3 * ROWS] = block
    manifest = json.loads((root / "mednf.json").read_text())
    for rel, entry in manifest["files"].items():  # a manifest that agrees with the damaged files
        entry["size"] = (root / rel).stat().st_size
        entry["sha256"] = reader.sha256_file(root / rel)
    (root / "mednf.json").write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match=rf"c/2/0.*NaN.*rows \[{2 * ROWS + 5}\]"):
        mednf.load(root, split="train")[0]  # unpacked on first use: every chunk checked
    assert not [f for f in (own_home / ".unpacked").rglob("*") if f.suffix in (".npy", ".tmp")]  # nothing kept
    monkeypatch.setenv("MEDNF_UNPACK", "0")
    ds = mednf.load(root, split="train", cache_bytes=2 * ROWS * P * 4)  # by chunk
    np.testing.assert_array_equal(ds[0]["latent"].numpy(), latents[0])  # other chunks read fine
    np.testing.assert_array_equal(ds.latents[3 * ROWS:], latents[3 * ROWS:])
    for call in (lambda: ds[2 * ROWS], lambda: ds[[0, 2 * ROWS + 1]], lambda: np.asarray(ds.latents)):
        with pytest.raises(FormatError) as err:
            call()
        message = str(err.value)
        assert "\n" not in message and "NaN" in message and f"rows [{2 * ROWS + 5}]" in message, message
        assert "c/2/0" in message, message
    assert ("train", 2) not in ds.files.cache._items  # nothing of the bad chunk was kept


def test_a_replaced_chunk_file_is_detected(rows_dir, monkeypatch):
    monkeypatch.setenv("MEDNF_UNPACK", "0")  # read by chunk
    root, _ = rows_dir
    ds = mednf.load(root, split="train", cache_bytes=2 * ROWS * P * 4)  # read by chunk
    ds[0]  # opened and chunk 0 read
    chunk = root / "latents.zarr" / "train" / "c" / "3" / "0"
    data = chunk.read_bytes()
    chunk.unlink()
    chunk.write_bytes(data)  # the same bytes in a new file: another inode, another identity
    with pytest.raises(FormatError, match="changed on disk since it was opened .*c/3/0"):
        ds[3 * ROWS]
    ds[1]  # a cached chunk is still served: it was checked when it was read


def test_a_chunk_file_replaced_before_the_unpack_is_detected(rows_dir, own_home):
    root, _ = rows_dir
    ds = mednf.load(root, split="train")
    chunk = root / "latents.zarr" / "train" / "c" / "3" / "0"
    data = chunk.read_bytes()
    chunk.unlink()
    chunk.write_bytes(data)
    with pytest.raises(FormatError, match="changed on disk since it was opened"):
        ds[0]
    assert not list((own_home / ".unpacked").rglob("*.npy"))


def test_a_replaced_file_is_detected_before_a_read_of_a_new_handle_too(rows_dir):
    root, _ = rows_dir
    ds = mednf.load(root, split="train")  # verified; nothing of the latents read yet
    meta = root / "latents.zarr" / "train" / "zarr.json"
    text = meta.read_text()
    os.replace(meta, meta.with_suffix(".old"))
    meta.write_text(text)
    with pytest.raises(FormatError, match="changed on disk since it was opened"):
        ds.latents


def test_verification_is_remembered_by_identity(rows_dir, monkeypatch):
    root, latents = rows_dir
    mednf.load(root, split="train")  # hashed and remembered
    hashed: list[Path] = []
    original = reader.sha256_file
    monkeypatch.setattr(reader, "sha256_file", lambda p: hashed.append(p) or original(p))
    np.testing.assert_array_equal(mednf.load(root, split="train")[4]["latent"].numpy(), latents[4])
    assert hashed == []  # unchanged: not hashed again
    chunk = root / "latents.zarr" / "train" / "c" / "1" / "0"
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="sha256"):
        mednf.load(root, split="train")


@pytest.mark.parametrize("context, unpack", [("fork", "1"), ("spawn", "1"), ("fork", "0")])
def test_dataloader_workers_give_the_same_batches(rows_dir, monkeypatch, context, unpack):
    monkeypatch.setenv("MEDNF_UNPACK", unpack)
    root, latents = rows_dir
    ds = mednf.load(root, split="train", cache_bytes=3 * ROWS * P * 4)
    ds[0]  # the parent has opened the array and cached a chunk
    plain = list(ds.dataloader(24, shuffle=True, generator=torch.Generator().manual_seed(3)))
    workers = list(ds.dataloader(24, shuffle=True, generator=torch.Generator().manual_seed(3), num_workers=2,
                                 multiprocessing_context=context))
    assert len(plain) == len(workers) == 5
    for a, b in zip(plain, workers):
        assert torch.equal(a["latent"], b["latent"]) and a["index"].tolist() == b["index"].tolist()
        np.testing.assert_array_equal(b["latent"].numpy(), latents[b["index"].numpy()])
    per_sample = torch.cat([b["latent"] for b in torch.utils.data.DataLoader(ds, batch_size=10, num_workers=2,
                                                                             multiprocessing_context=context)])
    np.testing.assert_array_equal(per_sample.numpy(), latents)


def test_pickled_handles_carry_no_rows(rows_dir):
    import pickle

    root, latents = rows_dir
    ds = mednf.load(root, split="train")
    np.asarray(ds.latents)  # every chunk cached in this process
    blob = pickle.dumps(ds)
    assert not any(latents[k].tobytes() in blob for k in range(0, N, ROWS))  # the manifest and index, no rows
    clone = pickle.loads(blob)
    assert clone.files.cache.nbytes == 0
    np.testing.assert_array_equal(clone.latents[[7, 99]], latents[[7, 99]])


def test_to_hf_materialises_the_split(rows_dir):
    pytest.importorskip("datasets")
    root, latents = rows_dir
    hf = mednf.load(root, split="train").to_hf()
    np.testing.assert_array_equal(np.asarray(hf["latent"], dtype=np.float32), latents)


def test_cache_bytes_is_checked():
    with pytest.raises(mednf.errors.ConfigError, match="cache_bytes"):
        mednf.load("anything", cache_bytes=0)


# ---------------------------------------------------------------------- unpacked splits


def count_unpacks(monkeypatch) -> list[Path]:
    """Paths unpacked from now on (lazy._unpack wrapped)."""
    made: list[Path] = []
    original = lazy._unpack
    monkeypatch.setattr(lazy, "_unpack", lambda latents, path: made.append(path) or original(latents, path))
    return made


def listing(root: Path) -> dict[str, tuple[int, int, int, str]]:
    """Every entry under ``root``: mode, size, mtime_ns and sha256 of files."""
    out = {}
    for path in sorted(root.rglob("*")):
        st = path.lstat()
        digest = hashlib.sha256(path.read_bytes()).hexdigest() if stat.S_ISREG(st.st_mode) else ""
        out[path.relative_to(root).as_posix()] = (st.st_mode, st.st_size, st.st_mtime_ns, digest)
    return out


def test_a_split_is_unpacked_once_and_reused(rows_dir, own_home, monkeypatch):
    root, latents = rows_dir
    made = count_unpacks(monkeypatch)
    ds = mednf.load(root, split="train")
    assert made == []  # nothing before the first row access
    np.testing.assert_array_equal(ds[5]["latent"].numpy(), latents[5])
    mapped = ds.latents
    path = Path(mapped.base.filename)
    assert isinstance(mapped.base, np.memmap) and not mapped.flags.writeable and made == [path]
    key = unpack_key(Manifest.read(root), "train")
    assert path == own_home / ".unpacked" / key / "train.npy" and path.stat().st_size == latents.nbytes + 128
    record = json.loads(path.with_suffix(".json").read_text())
    assert record["size"] == path.stat().st_size and record["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    mtime = path.stat().st_mtime_ns
    np.testing.assert_array_equal(np.load(path), latents)
    assert np.shares_memory(np.asarray(mapped), mapped)  # no copy: the map itself
    with pytest.raises(ValueError, match="read-only"):
        mapped[0] = 1
    again = mednf.load(root, split="train")
    order = np.random.default_rng(2).permutation(N)
    np.testing.assert_array_equal(again.latents[order], latents[order])
    assert type(again.latents) is np.ndarray and type(mapped) is np.ndarray  # plain arrays over the maps
    assert Path(again.latents.base.filename) == path and path.stat().st_mtime_ns == mtime and made == [path]


def test_a_changed_dataset_gets_a_new_unpacked_file(rows_dir, tmp_path, phantom_dir):
    root, latents = rows_dir
    first = mednf.load(root, split="train").latents
    changed = latents.copy()
    changed[3 * ROWS + 1] += 1  # one chunk differs
    other = write_dataset(tmp_path / "OtherNF", phantom_dir, changed)
    second = mednf.load(other, split="train").latents
    assert Path(second.base.filename).parent != Path(first.base.filename).parent
    np.testing.assert_array_equal(second, changed)
    np.testing.assert_array_equal(first, latents)


def test_unverified_files_get_their_own_unpacked_file(rows_dir):
    root, latents = rows_dir
    unverified = Path(mednf.load(root, split="train", verify=False).latents.base.filename)
    verified = Path(mednf.load(root, split="train").latents.base.filename)  # hashed now, and remembered
    assert unverified.parent != verified.parent
    assert Path(mednf.load(root, split="train", verify=False).latents.base.filename) == verified


@pytest.mark.parametrize("how", ["replaced", "edited in place"])
def test_a_changed_unpacked_file_is_unpacked_again(rows_dir, monkeypatch, how):
    root, latents = rows_dir
    path = Path(mednf.load(root, split="train").latents.base.filename)
    record = json.loads(path.with_suffix(".json").read_text())
    data = bytearray(path.read_bytes())
    data[128 + 7 * P * 4:128 + 8 * P * 4] = bytes(P * 4)  # row 7 → zeros
    if how == "replaced":
        tmp = path.with_name("other")
        tmp.write_bytes(bytes(data))
        os.replace(tmp, path)
    else:
        with open(path, "r+b") as fh:
            fh.write(bytes(data))
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a write within the same clock tick
    made = count_unpacks(monkeypatch)
    ds = mednf.load(root, split="train")
    np.testing.assert_array_equal(ds[7]["latent"].numpy(), latents[7])
    np.testing.assert_array_equal(ds.latents, latents)
    assert made == [path] and hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]


def test_a_copied_unpacked_file_is_hashed_not_unpacked_again(rows_dir, monkeypatch):
    root, latents = rows_dir
    path = Path(mednf.load(root, split="train").latents.base.filename)
    tmp = path.with_name("copy")
    tmp.write_bytes(path.read_bytes())
    os.replace(tmp, path)  # the same bytes, another identity (a backup restored)
    made = count_unpacks(monkeypatch)
    np.testing.assert_array_equal(mednf.load(root, split="train").latents, latents)
    record = json.loads(path.with_suffix(".json").read_text())
    assert made == [] and record["identity"][3] == path.stat().st_ino  # the record follows the checked file


def test_no_room_reads_by_chunk_with_one_warning(rows_dir, own_home, monkeypatch):
    root, latents = rows_dir
    usage = collections.namedtuple("usage", "total used free")
    monkeypatch.setattr(lazy, "disk_space", lambda folder: usage(100 << 30, (100 << 30) - 4096, 4096))
    monkeypatch.setattr(lazy, "_WARNED", set())
    with pytest.warns(UnpackWarning) as caught:
        for _ in range(2):
            ds = mednf.load(root, split="train")
            np.testing.assert_array_equal(ds[[9, 3]]["latent"].numpy(), latents[[9, 3]])
            assert isinstance(ds.latents, LazyLatents)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "\n" not in message and "MEDNF_UNPACK=0" in message and "GiB free" in message and "GiB unpacked" in message
    assert not list((own_home / ".unpacked").rglob("*.npy"))


def test_unpack_off_reads_by_chunk(rows_dir, own_home, monkeypatch):
    monkeypatch.setenv("MEDNF_UNPACK", "0")
    root, latents = rows_dir
    ds = mednf.load(root, split="train")
    assert isinstance(ds.latents, LazyLatents)
    np.testing.assert_array_equal(ds.latents[::-1], latents[::-1])
    assert not (own_home / ".unpacked").exists()


def test_a_killed_unpack_leaves_a_temporary_that_is_ignored_then_removed(rows_dir, own_home):
    root, latents = rows_dir
    folder = own_home / ".unpacked" / unpack_key(Manifest.read(root), "train")
    folder.mkdir(parents=True)
    stale = folder / ".train.npy.999999999.tmp"
    stale.write_bytes(b"half of a file")
    np.testing.assert_array_equal(mednf.load(root, split="train").latents, latents)
    assert not stale.exists() and sorted(f.name for f in folder.iterdir()) == [".train.lock", "train.json",
                                                                              "train.npy"]


def _sum_of_rows(root: str) -> float:
    return float(np.asarray(mednf.load(root, split="train").latents, dtype=np.float64).sum())


def test_processes_unpacking_at_once_both_read_a_whole_file(rows_dir, own_home):
    root, latents = rows_dir
    with multiprocessing.get_context("fork").Pool(2) as pool:
        sums = pool.map(_sum_of_rows, [str(root)] * 2)
    assert sums == [float(latents.astype(np.float64).sum())] * 2
    (path,) = (own_home / ".unpacked").rglob("*.npy")
    np.testing.assert_array_equal(np.load(path), latents)
    assert not list((own_home / ".unpacked").rglob("*.tmp"))


def test_the_dataset_folder_is_never_written(rows_dir):
    root, latents = rows_dir
    before = listing(root)
    modes = {p: p.stat().st_mode for p in [root, *root.rglob("*")]}
    try:
        for p in modes:
            p.chmod(modes[p] & ~0o222)  # read-only (for a user who is not root)
        ds = mednf.load(root, split="train")
        np.testing.assert_array_equal(ds[3]["latent"].numpy(), latents[3])
        batches = list(ds.dataloader(32, shuffle=True, generator=torch.Generator().manual_seed(0), num_workers=2))
        assert sorted(i for b in batches for i in b["index"].tolist()) == list(range(N))
        mednf.load(root, split="train", verify=False).latents[:]
    finally:
        for p, mode in modes.items():
            p.chmod(mode)
    assert listing(root) == before


@pytest.mark.parametrize("where", ["key", "cache"])
def test_a_link_planted_in_the_unpacked_cache_is_never_written_through(rows_dir, own_home, tmp_path, monkeypatch,
                                                                       where):
    """A link at ``.unpacked/<key>`` (or at ``.unpacked``) pointing at a user's folder: the split is read by chunk
    with one warning, and nothing in that folder changes (its ``train.npy`` and hidden ``.tmp`` files included)."""
    root, latents = rows_dir
    user = tmp_path / "user"
    user.mkdir()
    for name, data in {"train.npy": b"precious", ".train.notes.tmp": b"a", ".train.123.tmp": b"b"}.items():
        (user / name).write_bytes(data)
    key = unpack_key(Manifest.read(root), "train")
    if where == "key":
        (own_home / ".unpacked").mkdir(parents=True)
        (own_home / ".unpacked" / key).symlink_to(user)
    else:
        own_home.mkdir(parents=True)
        (own_home / ".unpacked").symlink_to(user)
    monkeypatch.setattr(lazy, "_WARNED", set())
    with pytest.warns(UnpackWarning, match="symbolic link"):
        ds = mednf.load(root, split="train")
        np.testing.assert_array_equal(np.asarray(ds.latents), latents)
    assert isinstance(ds.latents, LazyLatents)
    assert {p.name: p.read_bytes() for p in user.iterdir()} == {
        "train.npy": b"precious", ".train.notes.tmp": b"a", ".train.123.tmp": b"b"}
