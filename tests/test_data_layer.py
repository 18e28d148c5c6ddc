"""The data layer never returns wrong data in silence: every damaged, swapped, foreign or replaced file is a
one-line error naming the file, verification is remembered only while the files are unchanged, and the
writer's bytes are deterministic (same build → same sha256 for every file but the timings of
training.csv)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

import mednf
from mednf.building.curves import read_training
from mednf.building.pipeline import BuildOptions, build
from mednf.errors import FormatError
from mednf.format import reader
from mednf.format.manifest import Manifest
from mednf.io.files import OWNER_MARK, write_owner_mark


@pytest.fixture
def copy(phantom_dir, tmp_path) -> Path:
    """A private copy of the session's PhantomNF build (tests here damage it)."""
    out = tmp_path / "PhantomNF"
    shutil.copytree(phantom_dir, out)
    return out


def one_line_error(call, *fragments: str) -> str:
    with pytest.raises(FormatError) as err:
        call()
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


def chunk_files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "latents.zarr").rglob("*") if p.is_file() and "/c/" in p.as_posix())


def test_a_flipped_byte_in_a_latent_chunk_is_refused(copy):
    chunk = chunk_files(copy)[0]
    data = bytearray(chunk.read_bytes())
    data[len(data) // 2] ^= 0x01
    chunk.write_bytes(bytes(data))
    rel = chunk.relative_to(copy).as_posix()
    one_line_error(lambda: mednf.load(copy, "train"), rel, "sha256", "download it again")


def _same_size(data: bytes, size: int) -> bytes:
    """``data`` cut or zero-padded to ``size`` bytes."""
    return data[:size].ljust(size, b"\0")


def test_two_same_size_chunks_swapped_between_splits_are_refused(copy):
    """Another split's chunk in place of this one, at this one's size (compressed chunks rarely share a
    size, so each is cut or padded to the other's): sizes alone cannot see it, the digests do."""
    pairs = [(a, b) for a, b in itertools.combinations(chunk_files(copy), 2)
             if a.relative_to(copy).parts[1] != b.relative_to(copy).parts[1]]
    assert pairs, "the fixture has no chunks of two different splits"
    a, b = pairs[0]
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(_same_size(data_b, len(data_a)))
    b.write_bytes(_same_size(data_a, len(data_b)))
    assert a.read_bytes() != data_a and b.read_bytes() != data_b
    reader.check_structure(copy, Manifest.read(copy))  # sizes alone cannot see it
    one_line_error(lambda: mednf.load(copy, "test"), "sha256")


def test_theta_of_another_build_is_refused(copy, tmp_path):
    other = tmp_path / "Other"
    build("phantomnf", BuildOptions(out=other, **{**TINY, "overrides": {"meta": {"steps": 4}}}))
    assert (other / "model.safetensors").stat().st_size == (copy / "model.safetensors").stat().st_size
    shutil.copyfile(other / "model.safetensors", copy / "model.safetensors")
    one_line_error(lambda: mednf.load(copy, "train"), "model.safetensors", "sha256")


def test_verification_is_remembered_until_a_file_changes(copy, monkeypatch):
    hashed: list[Path] = []
    real = reader.sha256_file
    monkeypatch.setattr(reader, "sha256_file", lambda p: hashed.append(p) or real(p))  # a spy: counts real hashes
    mednf.load(copy, "train")
    assert len(hashed) == len(Manifest.read(copy).files)  # every file hashed once
    hashed.clear()
    mednf.load(copy, "val")
    assert hashed == []  # unchanged files: remembered
    chunk = chunk_files(copy)[-1]
    data = bytearray(chunk.read_bytes())
    data[-1] ^= 0xFF
    chunk.write_bytes(bytes(data))  # same size, new mtime: verified again, and refused
    one_line_error(lambda: mednf.load(copy, "val"), "sha256")
    ds = mednf.load(copy, "train", verify=False)  # the user's explicit choice: no hashing
    assert len(ds) == 20


def test_a_handle_opened_before_restart_errors_instead_of_returning_nan(tmp_path):
    out = tmp_path / "PhantomNF"
    build("phantomnf", BuildOptions(out=out, **TINY))
    ds = mednf.load(out, "train")  # index read; latents not yet
    build("phantomnf", BuildOptions(out=out, restart=True, **{**TINY, "overrides": {"meta": {"steps": 4}}}))
    one_line_error(lambda: ds.latents, "changed on disk since it was opened", "load the dataset again")
    fresh = mednf.load(out, "train")
    assert np.isfinite(fresh.latents).all()


def test_a_dataset_deleted_under_an_open_handle_is_an_error(copy):
    ds = mednf.load(copy, "test")
    shutil.rmtree(copy)
    one_line_error(lambda: ds.decode([0]), "changed on disk")


def test_nan_rows_are_an_error_even_without_verification(copy):
    import zarr

    array = zarr.open_array(str(copy / "latents.zarr" / "train"), mode="r+")
    block = array[0:8]
    block[3] = np.nan
    array[0:8] = block
    manifest = json.loads((copy / "mednf.json").read_text())
    for rel, entry in manifest["files"].items():  # a manifest that agrees with the damaged files
        path = copy / rel
        entry["size"] = path.stat().st_size
        entry["sha256"] = reader.sha256_file(path)
    (copy / "mednf.json").write_text(json.dumps(manifest))
    one_line_error(lambda: mednf.load(copy, "train")[3], "NaN", "rows [3]")  # at the first row read


@pytest.mark.parametrize("damage, fragment", [
    ("chunk_header", "latents.zarr/train cannot be read"),
    ("zarr_dtype", "latents.zarr/train"),
    ("garbage_theta", "model.safetensors is not a readable safetensors file"),
])
def test_damaged_files_without_verification_name_the_file(copy, damage, fragment):
    if damage == "chunk_header":
        chunk = copy / "latents.zarr" / "train" / "c" / "0" / "0"
        data = bytearray(chunk.read_bytes())
        data[:16] = bytes(16)
        chunk.write_bytes(bytes(data))

        def call():
            return mednf.load(copy, "train", verify=False)[0]
    elif damage == "zarr_dtype":
        meta = copy / "latents.zarr" / "train" / "zarr.json"
        meta.write_text(meta.read_text().replace('"float32"', '"float64"'))

        def call():
            return mednf.load(copy, "train", verify=False).latents
    else:
        model = copy / "model.safetensors"
        model.write_bytes(bytes(model.stat().st_size))

        def call():
            return mednf.load(copy, "train", verify=False).decode([0])
    one_line_error(call, fragment)


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m.pop("files"), "field 'files' is missing"),
    (lambda m: m.update(splits="train"), "field 'splits'"),
    (lambda m: m["latent"].update(dim="32"), "field 'dim'"),
])
def test_malformed_manifest_is_one_line(copy, edit, fragment):
    manifest = json.loads((copy / "mednf.json").read_text())
    edit(manifest)
    (copy / "mednf.json").write_text(json.dumps(manifest))
    one_line_error(lambda: mednf.load(copy, "train", verify=False), "mednf.json", fragment)
    (copy / "mednf.json").write_text("[1, 2]")
    one_line_error(lambda: mednf.load(copy, "train", verify=False), "holds a JSON list")


def test_identical_builds_have_identical_bytes_and_temporaries_are_cleaned(tmp_path, phantom_dir):
    out = tmp_path / "PhantomNF"
    out.mkdir()
    write_owner_mark(out, "build", "PhantomNF")  # a build folder whose run was killed (its first act is the mark)
    stale = [out / ".index.parquet.999999.tmp", out / ".mednf.json.4.tmp"]
    for path in stale:
        path.write_bytes(b"left by a killed run")
    build("phantomnf", BuildOptions(out=out, **TINY))
    assert not any(p.exists() for p in stale)
    ours, reference = Manifest.read(out), Manifest.read(phantom_dir)
    # same sha256 and size for every content file but the training log, whose seconds are wall time
    timed = {"training.csv"}
    assert {k: v for k, v in ours.files.items() if k not in timed} == \
        {k: v for k, v in reference.files.items() if k not in timed}
    untimed = [[{k: v for k, v in row.items() if k != "seconds"} for row in read_training(root / "training.csv")]
               for root in (out, phantom_dir)]
    assert untimed[0] == untimed[1] and len(untimed[0]) > 20
    assert [p.name for p in out.rglob(".*") if p.is_file()] == [OWNER_MARK]


def test_an_in_place_edit_that_restores_the_mtime_is_still_seen(copy):
    import os

    mednf.load(copy, "train")  # verified and remembered
    model = copy / "model.safetensors"
    before = model.stat()
    data = bytearray(model.read_bytes())
    data[-4:] = bytes(4)
    model.write_bytes(bytes(data))
    os.utime(model, ns=(before.st_atime_ns, before.st_mtime_ns))  # size and mtime as they were
    one_line_error(lambda: mednf.load(copy, "train"), "model.safetensors", "sha256")


def test_latents_are_read_only(copy):
    ds = mednf.load(copy, "train")
    with pytest.raises(ValueError, match="read-only"):
        ds.latents *= 0
    assert np.abs(ds.latents).sum() > 0 and ds[0]["latent"].abs().sum() > 0


def test_zarr_temporary_chunks_are_not_content_and_are_removed(tmp_path):
    out = tmp_path / "PhantomNF"
    build("phantomnf", BuildOptions(out=out, **TINY))
    junk = out / "latents.zarr" / "train" / "c" / "0" / ("0." + "ab" * 16 + ".partial")  # a write killed by zarr
    junk.write_bytes(b"half a chunk")
    assert len(mednf.load(out, "train")) == 20  # not a file of the dataset: no "damaged"
    build("phantomnf", BuildOptions(out=out, restart=True, **TINY))
    assert not junk.exists()


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m.pop("labels"), "field 'labels' is missing"),
    (lambda m: m.update(engine={}), "differs from the engine's latent_dim"),  # defaults: P 2048
    (lambda m: m.update(builder={}), "builder or engine section does not parse"),
    (lambda m: m["labels"].update(names=[]), "is not a label schema"),
    (lambda m: m["latent"].update(dim=31), "differs from the engine's latent_dim"),
])
def test_inconsistent_manifest_sections_are_one_line(copy, edit, fragment):
    manifest = json.loads((copy / "mednf.json").read_text())
    edit(manifest)
    (copy / "mednf.json").write_text(json.dumps(manifest))
    one_line_error(lambda: mednf.load(copy, "train", verify=False), fragment)


def test_labels_outside_the_names_are_refused(copy):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(copy / "index.parquet")
    table = table.set_column(table.schema.get_field_index("label"), "label", pa.array(np.full(len(table), 7)))
    pq.write_table(table, copy / "index.parquet")
    manifest = json.loads((copy / "mednf.json").read_text())
    entry = manifest["files"]["index.parquet"]
    entry["size"], entry["sha256"] = (copy / "index.parquet").stat().st_size, reader.sha256_file(copy / "index.parquet")
    (copy / "mednf.json").write_text(json.dumps(manifest))
    one_line_error(lambda: mednf.load(copy, "train"), "labels span 7..7", "4 classes")


def test_a_bare_name_that_is_an_export_folder_here_is_found_in_the_cache(phantom_dir, tmp_path, monkeypatch):
    from mednf.tasks.export import export_hf

    home = tmp_path / "home"
    shutil.copytree(phantom_dir, home / "PhantomNF")
    monkeypatch.setenv("MEDNF_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    export_hf(home / "PhantomNF", tmp_path / "PhantomNF")  # ./PhantomNF: an HF export, not a dataset
    assert mednf.load("PhantomNF", "train").root == home / "PhantomNF"


def test_exports_are_deterministic_and_never_written_into_the_dataset(copy, tmp_path):
    import os

    from mednf.errors import ConfigError
    from mednf.tasks.export import export_hf, export_zenodo

    first = export_zenodo(copy, tmp_path / "a").read_bytes()
    for path in copy.rglob("*"):
        os.utime(path, ns=(1, 10**18))  # other times: the archive must not change
    assert export_zenodo(copy, tmp_path / "b").read_bytes() == first
    for export in (export_zenodo, export_hf):
        with pytest.raises(ConfigError, match="is inside the dataset"):
            export(copy, copy / "pub")
    assert len(mednf.load(copy, "train")) == 20


def test_every_spelling_of_a_folder_shares_one_lock(tmp_path, monkeypatch):
    from mednf.errors import LockedError
    from mednf.io.lock import dataset_lock

    real = tmp_path / "real" / "P"
    real.mkdir(parents=True)
    (tmp_path / "alias").symlink_to(tmp_path / "real")
    monkeypatch.chdir(tmp_path)
    with dataset_lock(real, "build"):
        for spelling in (tmp_path / "alias" / "P", Path("real/P"), Path("alias/../real/P")):
            with pytest.raises(LockedError), dataset_lock(spelling, "download"):
                pass


def test_a_download_never_deletes_the_users_files_beside_a_manifest(copy, tmp_path):
    from mednf.errors import DownloadError
    from mednf.remote.install import install

    target = tmp_path / "home" / "PhantomNF"
    shutil.copytree(copy, target)
    (target / "model.safetensors").write_bytes(b"damaged")  # an incomplete copy: will be replaced ...
    (target / "NOTES.txt").write_text("mine")  # ... but not with the user's own files in it
    with pytest.raises(DownloadError, match="NOTES.txt"):
        install(target, lambda tmp: shutil.copytree(copy, tmp), what="PhantomNF")
    assert (target / "NOTES.txt").read_text() == "mine"
    (target / "NOTES.txt").unlink()
    install(target, lambda tmp: shutil.copytree(copy, tmp), what="PhantomNF")
    assert len(mednf.load(target, "train")) == 20
