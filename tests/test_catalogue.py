"""The catalogue tells the truth: ``mednf list`` says what is built (where, test PSNR), downloadable or
buildable only; ``mednf download`` of a built name downloads nothing; the export's upload hint is the
``hf`` command; offline messages name the file to fetch and what to do with it; decode/eval find the
MedMNIST file a build read without being told where it is."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from loopback import Loopback

from mednf.cli import main
from mednf.errors import DownloadError, SourceError
from mednf.format.manifest import Manifest
from mednf.remote.zenodo import download_zenodo
from mednf.sources.kinds import images_unavailable, recorded_source
from mednf.sources.medmnist import locate_medmnist
from mednf.sources.read import load_source, source_images
from mednf.sources.spec import load_builder


@pytest.fixture
def home(tmp_path, monkeypatch, phantom_dir) -> Path:
    """A cache ($MEDNF_HOME) holding the session's PhantomNF."""
    home = tmp_path / "home"
    home.mkdir()
    shutil.copytree(phantom_dir, home / "PhantomNF")
    monkeypatch.setenv("MEDNF_HOME", str(home))
    monkeypatch.delenv("MEDNF_REGISTRY", raising=False)
    return home


def _status(output: str, name: str) -> str:
    """The `→ …` line under ``name``'s row."""
    lines = output.splitlines()
    row = next(i for i, line in enumerate(lines) if line.startswith(f"{name} "))
    return lines[row + 1].strip()


def test_list_says_built_downloadable_or_buildable(home):
    (home / "BreastNF" / ".partial").mkdir(parents=True)  # an interrupted build
    psnr = Manifest.read(home / "PhantomNF").splits["test"].psnr_mean
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0, result.output
    assert _status(result.output, "PhantomNF") == f"→ built in {home / 'PhantomNF'} (test {psnr:.2f} dB)"
    assert _status(result.output, "DermaNF") == "→ downloadable (Zenodo, the paper's release): `mednf download DermaNF`"
    assert _status(result.output, "AdrenalNF3D") == "→ buildable only: `mednf build adrenalnf3d`"
    assert _status(result.output, "BreastNF").startswith(f"→ unfinished build in {home / 'BreastNF'}")
    other = CliRunner().invoke(main, ["list", "--root", str(home / "elsewhere")])
    assert _status(other.output, "PhantomNF") == "→ buildable only: `mednf build phantomnf`"


def test_download_of_a_built_name_downloads_nothing(home, tmp_path, monkeypatch):
    with Loopback() as server:  # registered, served by a mirror that would answer if asked
        (tmp_path / "registry.toml").write_text('[PhantomNF]\nzenodo_record = "7"\n'
                                                'files = { "PhantomNF.tar" = { sha256 = "' + "0" * 64
                                                + '", size = 1 } }\n')
        monkeypatch.setenv("MEDNF_REGISTRY", str(tmp_path / "registry.toml"))
        monkeypatch.setenv("MEDNF_ZENODO_URL", server.url)
        listed = CliRunner().invoke(main, ["list"]).output
        assert _status(listed, "PhantomNF").startswith("→ built in")  # built wins over downloadable
        result = CliRunner().invoke(main, ["download", "phantomnf"])
        assert result.exit_code == 0, result.output
        assert result.output.startswith(f"PhantomNF is already in {home / 'PhantomNF'}, complete and verified")
        assert "nothing downloaded" in result.output and server.requests == []
    monkeypatch.delenv("MEDNF_REGISTRY")
    result = CliRunner().invoke(main, ["download", "PhantomNF"])  # not registered, but built: still fine
    assert result.exit_code == 0 and "nothing downloaded" in result.output
    result = CliRunner().invoke(main, ["download", "BreastNF"])
    assert result.exit_code == 1 and "no published copy of 'BreastNF' is registered" in result.output


def test_export_hint_is_the_hf_upload_command(phantom_dir, tmp_path):
    out = tmp_path / "hub" / "PhantomNF"
    result = CliRunner().invoke(main, ["export", str(phantom_dir), "--format", "hf", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert f"`hf upload <org>/PhantomNF {out} --repo-type dataset`" in result.output
    assert "huggingface-cli" not in result.output


def test_offline_messages_name_the_file_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDNF_OFFLINE", "1")
    monkeypatch.delenv("MEDNF_ZENODO_URL", raising=False)
    sha = "ab" * 32
    (tmp_path / "registry.toml").write_text(
        f'[SomeNF]\nzenodo_record = "123"\nfiles = {{ "SomeNF.tar" = {{ sha256 = "{sha}", size = 10 }} }}\n'
        '[OfficialNF]\nzenodo_record = "14898708"\nlayout = "official"\n'
        '[HubNF]\nhf_repo = "org/HubNF"\n')
    monkeypatch.setenv("MEDNF_REGISTRY", str(tmp_path / "registry.toml"))
    cache = tmp_path / "cache"
    with pytest.raises(DownloadError) as err:
        download_zenodo("SomeNF", root=cache)
    assert str(err.value) == (
        f"SomeNF is not in the cache and MEDNF_OFFLINE is set; download https://zenodo.org/records/123/files/"
        f"SomeNF.tar?download=1 (sha256 {sha}) and unpack it into {cache} (`tar -xf SomeNF.tar -C {cache}`), or "
        "unset MEDNF_OFFLINE")
    result = CliRunner().invoke(main, ["download", "OfficialNF", "--root", str(cache)])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert ("download the zip/tar archive(s) named like OfficialNF from https://zenodo.org/records/14898708, unpack "
            f"it and run `mednf import-official <unpacked folder> --name OfficialNF --out {cache / 'OfficialNF'}`"
            in result.output)
    result = CliRunner().invoke(main, ["download", "HubNF", "--source", "hf", "--root", str(cache)])
    assert result.exit_code == 1 and "run `mednf download HubNF --source hf --root DIR` and copy DIR/HubNF to" in (
        result.output)
    assert not cache.exists() or not any(cache.glob("*NF"))  # nothing left behind

    spec = load_builder("breastnf")
    with pytest.raises(SourceError) as err:
        locate_medmnist(spec, tmp_path / "medmnist", progress=False)
    target = tmp_path / "medmnist" / "breastmnist_64.npz"
    assert str(err.value).startswith("breastmnist_64.npz is missing and MEDNF_OFFLINE is set; download "
                                     "https://zenodo.org/records/10519652/files/breastmnist_64.npz")
    assert f"and put it at {target}" in str(err.value) and not target.exists()


def _small_breast_npz(path: Path) -> Path:
    """A MedMNIST-layout npz for BreastNF at 64² (not the official file)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 6), ("val", 2), ("test", 3)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 64, 64), dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1))
    np.savez(path, **arrays)
    return path


def test_images_are_found_where_the_build_read_them(phantom_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDMNIST_ROOT", str(tmp_path / "empty"))  # nothing at the default place
    (tmp_path / "data").mkdir()
    npz = _small_breast_npz(tmp_path / "data" / "mine.npz")
    spec = load_builder("breastnf")
    data = load_source(spec, source_npz=npz, progress=False, warn=lambda message: None)
    record = recorded_source(spec, data)
    assert record == {**data.description, "path": str(npz)}  # what the build's manifest is to hold
    assert "path" not in data.description  # a resumed build compares the description: a moved file is the same
    # a real manifest whose source is that record (as the build will write it)
    manifest = Manifest.read(phantom_dir).replace(name="BreastNF", builder=spec.to_dict(), source=record)
    images = source_images(manifest, "test", np.arange(3))
    np.testing.assert_array_equal(images, data.splits["test"].images.astype(np.float32) / 255)
    assert source_images(manifest, "val", np.arange(2), tmp_path / "wrong") is not None  # a wrong root: still found
    unrecorded = manifest.replace(source={k: v for k, v in record.items() if k != "path"})
    assert source_images(unrecorded, "test", np.arange(3)) is None
    npz.rename(tmp_path / "moved.npz")
    assert source_images(manifest, "test", np.arange(3)) is None
    reason = images_unavailable(manifest)
    assert f"(as is {npz}, where the build read it)" in reason and "--medmnist-root" in reason
    json.dumps(record)  # JSON-ready, as the manifest is
