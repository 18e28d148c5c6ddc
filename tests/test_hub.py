"""Zenodo export and download against a real HTTP server on 127.0.0.1 that speaks the records API."""

from __future__ import annotations

import hashlib
import io
import json
import tarfile

import numpy as np
import pytest
from click.testing import CliRunner
from loopback import Loopback

import mednf
from mednf.cli import main
from mednf.errors import DownloadError, FormatError
from mednf.tasks.export import export_zenodo

RECORD = "4242"


@pytest.fixture(scope="module")
def archive(phantom_dir, tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("export")
    path = export_zenodo(phantom_dir, out)
    assert (out / "SHA256SUMS").read_text().split()[0] == hashlib.sha256(path.read_bytes()).hexdigest()
    return path.read_bytes()


@pytest.fixture
def zenodo(tmp_path, monkeypatch):
    """A loopback Zenodo: ``publish(body)`` serves a record with one archive and registers it."""
    with Loopback() as server:
        def publish(body: bytes, *, registry_sha: str | None = None, key: str = "PhantomNF.tar") -> None:
            url = f"{server.url}/records/{RECORD}/files/{key}/content"
            server.files[f"/api/records/{RECORD}"] = json.dumps({"id": RECORD, "files": [
                {"key": key, "size": len(body), "checksum": "md5:" + hashlib.md5(body).hexdigest(),
                 "links": {"self": url}}]}).encode()
            server.files[f"/records/{RECORD}/files/{key}/content"] = body
            sha = registry_sha or hashlib.sha256(body).hexdigest()
            (tmp_path / "registry.toml").write_text(
                f'[PhantomNF]\nzenodo_record = "{RECORD}"\n'
                f'files = {{ "PhantomNF.tar" = {{ sha256 = "{sha}", size = {len(body)} }} }}\n')

        monkeypatch.setenv("MEDNF_REGISTRY", str(tmp_path / "registry.toml"))
        monkeypatch.setenv("MEDNF_ZENODO_URL", server.url)
        monkeypatch.delenv("MEDNF_OFFLINE", raising=False)
        server.publish = publish
        server.cache = tmp_path / "cache"
        yield server


def leftovers(cache) -> list[str]:
    return sorted(str(p.relative_to(cache)) for p in cache.rglob("*")) if cache.exists() else []


def test_download_then_cache_then_offline(zenodo, archive, phantom_dir, monkeypatch):
    zenodo.publish(archive)
    ds = mednf.load("phantomnf", split="test", root=zenodo.cache)
    assert ds.root == zenodo.cache / "PhantomNF"
    np.testing.assert_array_equal(ds.latents, mednf.load(phantom_dir, split="test").latents)
    requests = list(zenodo.requests)
    assert requests == [f"/api/records/{RECORD}", f"/records/{RECORD}/files/PhantomNF.tar/content"]
    mednf.load("PhantomNF", split="val", root=zenodo.cache)  # verified local copy: no network
    monkeypatch.setenv("MEDNF_OFFLINE", "1")
    mednf.load("PhantomNF", split="train", root=zenodo.cache)
    assert zenodo.requests == requests
    assert [p for p in leftovers(zenodo.cache)
            if p.startswith(".") and not p.startswith(".verified")] == [".PhantomNF.lock", ".downloads"]  # no temp


@pytest.mark.parametrize("fault, message", [("truncate", "size|failed after"), ("garbage", "sha256"),
                                            ("error", "failed after 0")])
def test_bad_transfer_is_detected_and_leaves_nothing_then_retry_works(zenodo, archive, fault, message):
    zenodo.publish(archive)
    zenodo.faults[f"/records/{RECORD}/files/PhantomNF.tar/content"] = fault
    with pytest.raises(DownloadError, match=message) as err:
        mednf.load("PhantomNF", root=zenodo.cache)
    assert "PhantomNF.tar" in str(err.value) and zenodo.url in str(err.value)
    assert not (zenodo.cache / "PhantomNF").exists()
    assert not [p for p in leftovers(zenodo.cache) if p.endswith((".part", ".tar"))]
    zenodo.faults.clear()
    assert len(mednf.load("PhantomNF", split="test", root=zenodo.cache)) == 20  # the next call retries


def test_offline_without_a_copy_names_what_to_download(zenodo, archive, monkeypatch):
    zenodo.publish(archive)
    monkeypatch.setenv("MEDNF_OFFLINE", "1")
    with pytest.raises(DownloadError) as err:
        mednf.load("PhantomNF", root=zenodo.cache)
    # the file a person can fetch by hand (on the mirror in use) and where to unpack it
    assert f"download {zenodo.url}/records/{RECORD}/files/PhantomNF.tar?download=1 (sha256 " in str(err.value)
    assert f"`tar -xf PhantomNF.tar -C {zenodo.cache}`" in str(err.value)
    assert zenodo.requests == []


def test_record_without_the_registered_file(zenodo, archive):
    zenodo.publish(archive, key="Other.tar")
    with pytest.raises(DownloadError, match="has no file 'PhantomNF.tar' \\(it has: Other.tar\\)"):
        mednf.load("PhantomNF", root=zenodo.cache)


def _tar(entries: dict[str, bytes], symlink: str | None = None) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        if symlink:
            link = tarfile.TarInfo(symlink)
            link.type = tarfile.SYMTYPE
            link.linkname = "/etc/passwd"
            tar.addfile(link)
    return buffer.getvalue()


@pytest.mark.parametrize("entries, symlink", [({"PhantomNF/../../evil.txt": b"x"}, None),
                                              ({"/tmp/evil.txt": b"x"}, None),
                                              ({"PhantomNF/mednf.json": b"{}"}, "PhantomNF/model.safetensors"),
                                              ({"PhantomNF/model.pt": b"\x80\x04cos\nsystem\n."}, None)])
def test_unsafe_archive_is_refused_before_writing(zenodo, tmp_path, entries, symlink):
    zenodo.publish(_tar(entries, symlink))  # registry sha256 matches: only the unpacking can catch it
    with pytest.raises(DownloadError, match="unsafe entry|pickle-based file"):
        mednf.load("PhantomNF", root=zenodo.cache)
    assert not (tmp_path / "evil.txt").exists() and not (zenodo.cache / "PhantomNF").exists()


def test_archive_whose_content_does_not_match_its_manifest(zenodo, archive, phantom_dir):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=io.BytesIO(archive)) as src, tarfile.open(fileobj=buffer, mode="w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            if member.name.endswith("model.safetensors"):
                data = data[:-4] + b"\0\0\0\0"  # same size, other bytes
            dst.addfile(member, io.BytesIO(data))
    zenodo.publish(buffer.getvalue())
    with pytest.raises(FormatError, match="sha256"):
        mednf.load("PhantomNF", root=zenodo.cache)
    assert not (zenodo.cache / "PhantomNF").exists()


def test_cli_export_and_download(zenodo, phantom_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(phantom_dir), "--format", "zenodo", "--out", str(tmp_path / "pub")])
    assert result.exit_code == 0, result.output
    entry = (tmp_path / "pub" / "registry-entry.toml").read_text()
    body = (tmp_path / "pub" / "PhantomNF.tar").read_bytes()
    assert hashlib.sha256(body).hexdigest() in entry
    zenodo.publish(body)
    result = runner.invoke(main, ["download", "phantomnf", "--root", str(zenodo.cache)])
    assert result.exit_code == 0 and "downloaded and verified" in result.output, result.output
    result = runner.invoke(main, ["download", "phantomnf", "--root", str(zenodo.cache)])
    assert "already in" in result.output
    result = runner.invoke(main, ["download", "chestnf", "--root", str(zenodo.cache)])
    assert result.exit_code == 1 and "no published copy of 'chestnf'" in result.output


def test_download_never_replaces_an_unfinished_build(zenodo, archive):
    zenodo.publish(archive)
    (zenodo.cache / "PhantomNF" / ".partial").mkdir(parents=True)
    with pytest.raises(DownloadError, match="holds an unfinished `mednf build`"):
        mednf.load("PhantomNF", root=zenodo.cache)
    assert (zenodo.cache / "PhantomNF" / ".partial").is_dir() and zenodo.requests == []
