"""Downloads against a real HTTP server on 127.0.0.1 (tests/loopback.py): one verified transfer, the URL
policy, malformed records, damaged archives and bombs, and downloads that respect builds and each other
(real locks held by real subprocesses, one SIGKILLed mid-transfer)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
import zipfile
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from loopback import Loopback
from official_fixture import make_model, write_release

from mednf.cli import main
from mednf.errors import DownloadError, FormatError, MednfError, SourceError
from mednf.format.reader import verify_dataset
from mednf.io import http
from mednf.io.archives import _write_member, safe_extract, safe_extract_zip
from mednf.io.http import check_url, fetch_verified
from mednf.io.lock import lock_path
from mednf.remote.install import install
from mednf.remote.official_import import import_official
from mednf.remote.zenodo import download_zenodo
from mednf.sources.medmnist import download as medmnist_download
from mednf.sources.phantoms import phantom_source
from mednf.sources.spec import load_builder
from mednf.tasks.export import export_zenodo

RECORD = "4242"
FILE = f"/api/records/{RECORD}/files/PhantomNF.tar/content"
API = f"/api/records/{RECORD}"


# ------------------------------------------------------------------------------------------ fixtures


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    """A complete, real PhantomNF dataset (imported from a tiny official-layout release: seconds)."""
    root = tmp_path_factory.mktemp("release")
    phantoms = phantom_source(load_builder("phantomnf"))
    splits = {s: (torch.randn(4, 12, generator=torch.Generator().manual_seed(i)) * 0.3,
                  torch.from_numpy(phantoms[s].labels[:4])) for i, s in enumerate(("train", "val", "test"))}
    write_release(root / "release", make_model(latent_dim=12), splits)
    return import_official(root / "release", "phantomnf", root / "PhantomNF", progress=False)


@pytest.fixture(scope="module")
def export(dataset, tmp_path_factory) -> bytes:
    return export_zenodo(dataset, tmp_path_factory.mktemp("export")).read_bytes()


@pytest.fixture
def zenodo(tmp_path, monkeypatch):
    """A loopback Zenodo; ``publish`` serves an export (mednf layout), ``publish_official`` an official-layout
    record; ``home`` is $MEDNF_HOME (inside tmp_path)."""
    with Loopback() as server:
        registry = tmp_path / "registry.toml"

        def record(files: dict[str, bytes]) -> bytes:
            return json.dumps({"id": RECORD, "files": [
                {"key": key, "size": len(body), "checksum": "md5:" + hashlib.md5(body).hexdigest(),
                 "links": {"self": f"{server.url}/api/records/{RECORD}/files/{key}/content"}}
                for key, body in files.items()]}).encode()

        def publish(body: bytes, *, size: int | str | None = None) -> None:
            server.files[API] = record({"PhantomNF.tar": body})
            server.files[FILE] = body
            registry.write_text(f'[PhantomNF]\nzenodo_record = "{RECORD}"\nfiles = {{ "PhantomNF.tar" = {{ sha256 = '
                                f'"{hashlib.sha256(body).hexdigest()}", size = {json.dumps(size or len(body))} }} }}\n')

        def publish_official(files: dict[str, bytes]) -> None:
            server.files[API] = record(files)
            for key, body in files.items():
                server.files[f"/api/records/{RECORD}/files/{key}/content"] = body
            registry.write_text(f'[PhantomNF]\nzenodo_record = "{RECORD}"\nlayout = "official"\n')

        server.home = tmp_path / "home"
        monkeypatch.setenv("MEDNF_HOME", str(server.home))
        monkeypatch.setenv("MEDNF_REGISTRY", str(registry))
        monkeypatch.setenv("MEDNF_ZENODO_URL", server.url)
        monkeypatch.delenv("MEDNF_OFFLINE", raising=False)
        server.publish, server.publish_official = publish, publish_official
        yield server


def assert_clean(home: Path) -> None:
    """Nothing in the cache but empty folders and lock files."""
    files = [str(p.relative_to(home)) for p in home.rglob("*") if not p.is_dir() and not p.name.endswith(".lock")]
    assert files == [], files


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and message, message
    return message


# ------------------------------------------------------------------------------ one verified transfer


def test_fetch_verified_without_a_size_trusts_content_length_and_a_hard_cap(tmp_path, monkeypatch):
    body = os.urandom(5000)
    with Loopback() as server:
        server.files["/f"] = body
        fetch_verified(f"{server.url}/f", tmp_path / "a", size=None, md5=hashlib.md5(body).hexdigest(),
                       progress=False)
        assert (tmp_path / "a").read_bytes() == body
        server.faults["/f"] = "no-length"  # the body ends when the connection closes
        fetch_verified(f"{server.url}/f", tmp_path / "b", size=None, progress=False)
        assert (tmp_path / "b").read_bytes() == body
        server.faults["/f"] = "truncate"  # Content-Length 5000, half of it sent
        with pytest.raises(DownloadError, match=r"truncated \(size 2500 bytes, expected 5000\)"):
            fetch_verified(f"{server.url}/f", tmp_path / "c", size=None, progress=False)
        server.faults.clear()
        with pytest.raises(DownloadError, match="announces 5000 bytes for c, expected 4000; nothing was transferred"):
            fetch_verified(f"{server.url}/f", tmp_path / "c", size=4000, progress=False)
        monkeypatch.setattr(http, "MAX_UNSIZED_BYTES", 1000)
        with pytest.raises(DownloadError, match="announces 5000 bytes for c, more than the 1000 bytes mednf accepts"):
            fetch_verified(f"{server.url}/f", tmp_path / "c", size=None, progress=False)
        server.faults["/f"] = "no-length"
        with pytest.raises(DownloadError, match="more than the 1000 bytes mednf accepts without a known size") as err:
            fetch_verified(f"{server.url}/f", tmp_path / "c", size=None, progress=False)
        one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]  # no .part, no c


def test_medmnist_download_is_fetch_verified_with_its_source_error(tmp_path):
    body = os.urandom(3000)
    with Loopback() as server:
        server.files["/breastmnist_64.npz"] = body
        server.faults["/breastmnist_64.npz"] = "no-length"
        medmnist_download(f"{server.url}/breastmnist_64.npz", tmp_path / "breastmnist_64.npz",
                          hashlib.md5(body).hexdigest(), progress=False)
        assert (tmp_path / "breastmnist_64.npz").read_bytes() == body
    with pytest.raises(SourceError) as err:  # the URL policy applies to MEDNF_MEDMNIST_URL too
        medmnist_download("file:///etc/passwd", tmp_path / "x.npz", "0" * 32, progress=False)
    message = one_line(err)
    assert "'file:///etc/passwd' is refused: mednf fetches only https://" in message
    assert str(tmp_path / "x.npz") in message and "MEDMNIST_ROOT" in message and not (tmp_path / "x.npz").exists()


# ------------------------------------------------------------------------------------------ URL policy


@pytest.mark.parametrize("url, allowed", [("https://zenodo.org/api/records/1", {"zenodo.org"}),
                                          ("https://ZENODO.org:443/x", {"zenodo.org"}),
                                          ("http://127.0.0.1:8123/x", {"127.0.0.1:8123"}),
                                          ("http://localhost/x", None), ("http://[::1]:9/x", None)])
def test_allowed_urls(url, allowed):
    assert check_url(url, allowed_hosts=allowed) == url


@pytest.mark.parametrize("url, allowed, message", [
    ("file:///etc/passwd", None, "only https://"), ("ftp://zenodo.org/x", None, "only https://"),
    ("http://zenodo.org/x", None, "only https://"), ("data:text/plain,hi", None, "only https://"),
    ("zenodo.org/x", None, "only https://"), ("https://evil.example/x", {"zenodo.org"}, "host evil.example is not"),
    ("http://127.0.0.1:9/x", {"127.0.0.1:8123"}, "host 127.0.0.1:9 is not")])
def test_refused_urls_are_one_line(url, allowed, message):
    with pytest.raises(DownloadError, match=message) as err:
        check_url(url, allowed_hosts=allowed)
    assert repr(url) in one_line(err)


@pytest.mark.parametrize("link", ["file:///etc/passwd", "ftp://127.0.0.1:1/PhantomNF.tar",
                                  "https://evil.example/PhantomNF.tar", "http://10.0.0.1/PhantomNF.tar"])
def test_record_links_outside_the_policy_are_refused_and_nothing_is_fetched(zenodo, export, link):
    zenodo.publish(export)
    document = json.loads(zenodo.files[API])
    document["files"][0]["links"]["self"] = link
    zenodo.files[API] = json.dumps(document).encode()
    with pytest.raises(DownloadError, match="Zenodo record 4242's link for PhantomNF.tar .* is refused") as err:
        download_zenodo("PhantomNF", progress=False)
    assert link in one_line(err)
    assert zenodo.requests == [API] and not (zenodo.home / "PhantomNF").exists()
    assert_clean(zenodo.home)


def test_a_redirect_to_another_scheme_is_refused(zenodo, export):
    zenodo.publish(export)
    zenodo.redirects[FILE] = "ftp://127.0.0.1:1/PhantomNF.tar"
    with pytest.raises(DownloadError, match="the redirect of .* to 'ftp://127.0.0.1:1/PhantomNF.tar' is refused"):
        download_zenodo("PhantomNF", progress=False)
    assert_clean(zenodo.home)


# ------------------------------------------------------------------------------------ record JSON shape


ENTRY = {"key": "PhantomNF.tar", "size": 10, "checksum": "md5:" + "0" * 32}


@pytest.mark.parametrize("document, message", [
    ([ENTRY], "the record is list"), ({"files": "PhantomNF.tar"}, "files is str 'PhantomNF.tar', expected a list"),
    ({"files": ["PhantomNF.tar"]}, r"files\[0\] is str"), ({"files": {"entries": 3}}, "files.entries is int 3"),
    ({"files": [{"key": 5}]}, r"the key of files\[0\] is int 5"),
    ({"files": [ENTRY | {"size": "10"}]}, "the size of PhantomNF.tar is str '10', expected a whole number"),
    ({"files": [ENTRY | {"size": True}]}, "the size of PhantomNF.tar is bool True"),
    ({"files": [ENTRY | {"checksum": 5}]}, "the checksum of PhantomNF.tar is int 5"),
    ({"files": [ENTRY | {"links": "https://zenodo.org/x"}]}, "the links of PhantomNF.tar is str"),
    (b"<!DOCTYPE html><html><body>Log in</body></html>", "did not send JSON \\(it starts with '<!DOCTYPE html>"),
    (b"\xff\xfe\x00\x81 binary", "did not send JSON")])
def test_malformed_records_are_one_line_at_the_command_line(zenodo, export, document, message):
    zenodo.publish(export)
    zenodo.files[API] = document if isinstance(document, bytes) else json.dumps(document).encode()
    result = CliRunner().invoke(main, ["download", "phantomnf"])
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert result.output.startswith("error: ") and result.output.count("\n") == 1, result.output
    assert re.search(message, result.output), result.output
    assert zenodo.requests == [API]
    assert_clean(zenodo.home)


def test_registry_pins_are_checked(zenodo, export):
    zenodo.publish(export, size="71680")
    with pytest.raises(DownloadError, match=r"files.PhantomNF.tar.size is '71680', expected a whole number") as err:
        download_zenodo("PhantomNF", progress=False)
    assert "registry entry [PhantomNF]" in one_line(err) and zenodo.requests == [API]


# ------------------------------------------------------------------------------------------- archives


class Zeros(io.RawIOBase):
    def __init__(self, n: int) -> None:
        self.left = n

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = min(len(buffer), self.left)
        buffer[:n] = bytes(n)
        self.left -= n
        return n


BOMB = 200 << 20  # 200 MiB of zeros: ~200 KB zipped


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, bytes]:
    zipped = io.BytesIO()
    with zipfile.ZipFile(zipped, "w", zipfile.ZIP_DEFLATED) as zf, zf.open("PhantomNF/model.pt", "w") as out:
        for _ in range(BOMB >> 20):
            out.write(bytes(1 << 20))
    tarred = io.BytesIO()
    with tarfile.open(fileobj=tarred, mode="w:gz", compresslevel=1) as tar:
        info = tarfile.TarInfo("PhantomNF/model.pt")
        info.size = BOMB
        tar.addfile(info, io.BufferedReader(Zeros(BOMB)))
    return {"PhantomNF.zip": zipped.getvalue(), "PhantomNF.tar.gz": tarred.getvalue()}


@pytest.mark.parametrize("name", ["PhantomNF.zip", "PhantomNF.tar.gz"])
def test_decompression_bomb_is_refused_before_anything_is_written(zenodo, bombs, tmp_path, name):
    body = bombs[name]
    assert len(body) < 1 << 20
    (tmp_path / name).write_bytes(body)
    into = tmp_path / "into"
    with pytest.raises(DownloadError, match="a decompression bomb or a damaged archive, refusing it before writing"):
        if name.endswith(".zip"):
            safe_extract_zip(tmp_path / name, into)
        else:
            safe_extract(tmp_path / name, into, allow_torch_files=True)
    assert list(into.rglob("*")) == []
    zenodo.publish_official({name: body})
    with pytest.raises(DownloadError, match="declares 200.0 MiB of content") as err:
        download_zenodo("PhantomNF", progress=False)
    one_line(err)
    assert sum(p.stat().st_size for p in zenodo.home.rglob("*") if p.is_file()) < 1 << 20
    assert_clean(zenodo.home)


def test_a_member_is_never_written_past_its_declared_size(tmp_path):
    with pytest.raises(DownloadError, match="'m' unpacks to more than the 10 bytes it declares"):
        _write_member(io.BytesIO(b"x" * 100), tmp_path / "m", 10, tmp_path / "a.zip", "m")
    with pytest.raises(DownloadError, match="a.zip is truncated: 'm' holds 5 of the 10 bytes"):
        _write_member(io.BytesIO(b"x" * 5), tmp_path / "m", 10, tmp_path / "a.zip", "m")
    assert list(tmp_path.iterdir()) == []


def _tar(entries: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for name, data in entries.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _damaged_gzip(data: bytes) -> bytes:
    """A gzip of a tar holding ``data`` with 64 bytes in the middle zeroed: random ``data`` is stored as is (only
    the CRC at the end notices), text is deflated (the decoder fails)."""
    body = bytearray(gzip.compress(_tar({"PhantomNF/model.pt": data}), mtime=0))
    body[len(body) // 2: len(body) // 2 + 64] = bytes(64)
    return bytes(body)


@pytest.mark.parametrize("name, body", [
    ("PhantomNF.tar", b"this is not a tar archive at all " * 64),
    ("PhantomNF.tar", _tar({"PhantomNF/model.pt": os.urandom(8000), "PhantomNF/b.pt": b"x"})[:4000]),  # truncated
    ("PhantomNF.tar.gz", b""), ("PhantomNF.tar.gz", gzip.compress(b"")),
    ("PhantomNF.tar.gz", b"\x1f\x8b\x08\x00" + os.urandom(500)),
    ("PhantomNF.tar.gz", _damaged_gzip(random.Random(0).randbytes(20000))),
    ("PhantomNF.tar.gz", _damaged_gzip(b"".join(b"line %d of a text file\n" % i for i in range(4000)))),
    ("PhantomNF.zip", b"PK\x03\x04" + os.urandom(300))], ids=["garbage", "truncated", "empty-file", "empty-gzip",
                                                              "bad-gzip-header", "bad-gzip-crc",
                                                              "bad-deflate-stream", "garbage-zip"])
def test_damaged_archives_are_one_line_and_leave_nothing(zenodo, name, body):
    zenodo.publish_official({name: body})
    with pytest.raises(DownloadError, match=f"{name} is not a readable (tar archive|zip)") as err:
        download_zenodo("PhantomNF", progress=False)
    one_line(err)
    assert not (zenodo.home / "PhantomNF").exists()
    assert_clean(zenodo.home)


# ----------------------------------------------------------------- downloads, builds and each other


HOLD_BUILD_LOCK = """import sys
from pathlib import Path
from mednf.io.lock import dataset_lock
target = Path(sys.argv[1])
with dataset_lock(target, "build"):
    (target / ".partial").mkdir(parents=True)
    (target / ".partial" / "meta-last.safetensors").write_bytes(b"checkpoint")
    print("locked", flush=True)
    sys.stdin.read()
"""


def test_a_download_is_refused_at_once_while_a_build_holds_the_lock(zenodo, export):
    zenodo.publish(export)
    target = zenodo.home / "PhantomNF"
    build = subprocess.Popen([sys.executable, "-c", HOLD_BUILD_LOCK, str(target)], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert build.stdout.readline() == "locked\n"
        started = time.monotonic()
        with pytest.raises(DownloadError, match=f"is being built by pid {build.pid}; wait for the build or download "
                                                "PhantomNF \\(Zenodo record 4242\\) into another --root") as err:
            download_zenodo("PhantomNF", progress=False)
        one_line(err)
        assert time.monotonic() - started < 5 and zenodo.requests == []
    finally:
        build.communicate("", timeout=30)
    assert (target / ".partial" / "meta-last.safetensors").read_bytes() == b"checkpoint"
    with pytest.raises(DownloadError, match="holds an unfinished `mednf build`"):  # the build's state stays
        download_zenodo("PhantomNF", progress=False)
    assert (target / ".partial" / "meta-last.safetensors").read_bytes() == b"checkpoint" and zenodo.requests == []


def test_two_concurrent_downloads_transfer_once_and_share_the_result(zenodo, export, capfd):
    zenodo.publish(export)
    zenodo.pauses[FILE] = 1.0  # the first transfer is still running when the second download starts
    results: dict[str, object] = {}

    def run(label: str) -> None:
        try:
            results[label] = download_zenodo("PhantomNF", progress=False)
        except MednfError as err:  # reported by the asserts below
            results[label] = err

    first = threading.Thread(target=run, args=("first",))
    first.start()
    zenodo.wait_for(FILE)
    second = threading.Thread(target=run, args=("second",))
    second.start()
    first.join(60)
    second.join(60)
    target = zenodo.home / "PhantomNF"
    assert results == {"first": target, "second": target}
    assert zenodo.requests.count(FILE) == 1 and zenodo.requests.count(API) == 1  # the second reused the first
    assert "waiting for the download of PhantomNF" in capfd.readouterr().err
    verify_dataset(target, checksums=True, use_cache=False)
    assert sorted(p.name for p in zenodo.home.iterdir()
                  if p.name.startswith(".") and p.name != ".verified") == [".PhantomNF.lock", ".downloads"]
    assert list((zenodo.home / ".downloads").iterdir()) == []


KILLED_DOWNLOAD = """from mednf.remote.zenodo import download_zenodo
download_zenodo("PhantomNF", progress=False)
"""


def test_a_download_killed_mid_transfer_never_blocks_the_next(zenodo, export):
    zenodo.publish(export)
    zenodo.pauses[FILE] = 10.0
    proc = subprocess.Popen([sys.executable, "-c", KILLED_DOWNLOAD])
    scratch, fetched = zenodo.home / f".PhantomNF.download-{proc.pid}", zenodo.home / f".downloads/PhantomNF-{proc.pid}"
    deadline = time.monotonic() + 60
    # mid-transfer: the server has the request and half the archive is written (the .part file exists before
    # the request is sent, so it alone does not say the transfer began)
    while not (FILE in zenodo.requests and list(fetched.glob(".PhantomNF.tar.*.part"))):
        assert proc.poll() is None and time.monotonic() < deadline, "the download did not start"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert lock_path(zenodo.home / "PhantomNF").read_text() == f"download {proc.pid}\n"  # a stale lock file
    zenodo.pauses.clear()
    started = time.monotonic()
    assert download_zenodo("PhantomNF", progress=False) == zenodo.home / "PhantomNF"
    assert time.monotonic() - started < 10
    assert not scratch.exists() and not fetched.exists() and zenodo.requests.count(FILE) == 2
    assert sorted(p.name for p in zenodo.home.iterdir()
                  if p.name.startswith(".") and p.name != ".verified") == [".PhantomNF.lock", ".downloads"]
    assert list((zenodo.home / ".downloads").iterdir()) == []


def test_install_reuses_a_complete_copy_and_keeps_foreign_files(dataset, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    target = home / "PhantomNF"

    def produce(tmp: Path) -> None:
        shutil.copytree(dataset, tmp)

    assert install(target, produce, what="PhantomNF") == target
    assert install(target, lambda tmp: pytest.fail("a complete copy is downloaded again"), what="x") == target
    other = home / "OtherNF"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(DownloadError, match=r"holds files that are not a mednf dataset \(notes.txt\)"):
        install(other, produce, what="OtherNF")
    assert (other / "notes.txt").read_text() == "mine"

    def damaged(tmp: Path) -> None:
        produce(tmp)
        (tmp / "model.safetensors").write_bytes(b"x" * (tmp / "model.safetensors").stat().st_size)

    with pytest.raises(FormatError, match="sha256"):
        install(home / "ThirdNF", damaged, what="ThirdNF")
    assert not (home / "ThirdNF").exists() and not list(home.glob(".ThirdNF.download-*"))


def test_a_failed_build_leaves_nothing_that_blocks_a_download_or_load(zenodo, export):
    """A build that fails before it starts leaves no folder (its log was printed; the lock file stays beside
    the folder): the name can still be downloaded and loaded (the issue: both refused with "holds an unfinished
    build")."""
    import mednf

    zenodo.publish(export)
    target = zenodo.home / "PhantomNF"
    failed = CliRunner().invoke(main, ["build", "phantomnf", "--out", str(target), "--source-npz", "x.npz",
                                       "--quiet"])
    assert failed.exit_code == 2 and not target.exists()  # a failed start leaves no folder holding only build.log
    ds = mednf.load("PhantomNF", "train")  # not complete locally, registered: downloaded over the failed build
    assert ds.root == target and len(ds) == 4 and not (target / "build.log").exists()
    assert CliRunner().invoke(main, ["download", "PhantomNF"]).output.startswith("PhantomNF is already in")


def test_download_all_fetches_every_registered_dataset_and_names_the_ones_that_failed(zenodo, export):
    zenodo.publish(export)
    registry = Path(os.environ["MEDNF_REGISTRY"])
    registry.write_text(registry.read_text() + '\n[OtherNF]\nzenodo_record = "999"\n')  # a record the server lacks
    result = CliRunner().invoke(main, ["download", "--all", "--json"])
    assert result.exit_code == 1, result.output
    done = json.loads(result.stdout)
    assert [d["name"] for d in done] == ["PhantomNF", "OtherNF"]
    assert done[0]["downloaded"] is True and "error" in done[1]
    assert "1 of 2 downloads failed (OtherNF" in result.stderr
    assert (zenodo.home / "PhantomNF" / "mednf.json").is_file()
    again = CliRunner().invoke(main, ["download", "PhantomNF", "--json"])
    assert again.exit_code == 0 and json.loads(again.stdout)["downloaded"] is False
    both = CliRunner().invoke(main, ["download", "PhantomNF", "--all"])
    assert both.exit_code == 2 and "expected one of them" in both.output
