"""The data layer never returns wrong data in silence: every damaged, swapped, foreign or replaced file is a
one-line error naming the file, verification is remembered only while the files are unchanged, and the
writer's bytes are deterministic (same build → same sha256 for every file)."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY

import mednf
from mednf.build.pipeline import BuildOptions, build
from mednf.errors import FormatError
from mednf.format import reader
from mednf.format.manifest import Manifest


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


def test_two_same_size_chunks_swapped_between_splits_are_refused(copy):
    pairs = [(a, b) for a, b in itertools.combinations(chunk_files(copy), 2)
             if a.stat().st_size == b.stat().st_size and a.relative_to(copy).parts[1] != b.relative_to(copy).parts[1]
             and a.read_bytes() != b.read_bytes()]
    assert pairs, "the fixture has no two equal-size chunks of different splits to swap"
    a, b = pairs[0]
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
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
    one_line_error(lambda: mednf.load(copy, "train").latents, "NaN", "rows [3]")


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
        call = lambda: mednf.load(copy, "train", verify=False).latents
    elif damage == "zarr_dtype":
        meta = copy / "latents.zarr" / "train" / "zarr.json"
        meta.write_text(meta.read_text().replace('"float32"', '"float64"'))
        call = lambda: mednf.load(copy, "train", verify=False).latents
    else:
        model = copy / "model.safetensors"
        model.write_bytes(bytes(model.stat().st_size))
        call = lambda: mednf.load(copy, "train", verify=False).decode([0])
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
    stale = [out / ".index.parquet.999999.tmp", out / ".mednf.json.4.tmp"]
    for path in stale:
        path.write_bytes(b"left by a killed run")
    build("phantomnf", BuildOptions(out=out, **TINY))
    assert not any(p.exists() for p in stale)
    ours, reference = Manifest.read(out), Manifest.read(phantom_dir)
    assert ours.files == reference.files  # same sha256 and size for every content file
    assert [p.name for p in out.rglob(".*") if p.is_file()] == []
