"""Verified downloads against flaky servers on 127.0.0.1 (real sockets, no mocks): connections dropped or reset
mid-body, stalls, 503/429 with and without Retry-After, servers with and without Range support, and servers
that answer a resume wrongly. A download must end byte-identical and verified, or in one line naming the URL,
what happened and the setting to change, with nothing left behind.

The servers are bounded (a fixed number of requests per test, sockets with timeouts, threads joined at the
end) and the retry waits are set tiny through the module's constants, so the file runs in seconds.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from loopback import RawSocketServer
from official_fixture import make_model, write_release

from mednf.errors import ConfigError, DownloadError, SourceError
from mednf.io import http
from mednf.io.http import fetch_verified
from mednf.remote.official_import import import_official
from mednf.remote.zenodo import download_zenodo
from mednf.sources.medmnist import download as medmnist_download
from mednf.sources.phantoms import phantom_source
from mednf.sources.spec import load_builder
from mednf.tasks.export import export_zenodo

BODY = os.urandom(200_000)
SHA = hashlib.sha256(BODY).hexdigest()
_RANGE = re.compile(r"bytes=(\d+)-$")


class Request:
    """One request on an accepted connection: ``path``, ``headers`` (lower-case names), and ways to answer it."""

    def __init__(self, sock: socket.socket, stopped: threading.Event) -> None:
        self.sock, self.stopped = sock, stopped
        sock.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            block = sock.recv(4096)
            if not block:
                break
            data += block
        lines = data.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
        words = lines[0].split()
        self.path = words[1] if len(words) > 1 else ""
        self.headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}

    @property
    def range(self) -> str | None:
        return self.headers.get("range")

    def send(self, data: bytes) -> bool:
        try:
            self.sock.sendall(data)
            return True
        except OSError:
            return False

    def head(self, status: str, headers: dict[str, str]) -> bool:
        lines = [f"HTTP/1.1 {status}", "Connection: close", *(f"{k}: {v}" for k, v in headers.items())]
        return self.send(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))

    def status(self, status: str, headers: dict[str, str] | None = None) -> None:
        self.head(status, {"Content-Length": "0", **(headers or {})})

    def serve(self, body: bytes, *, ranges: bool = True, cut: int | None = None, reset: bool = False,
              etag: str | None = None, replace: bytes | None = None, start: int | None = None) -> None:
        """Answer with ``body``: from the requested start (206) when ``ranges`` and a ``Range: bytes=N-`` came,
        else whole (200). ``cut``: send only that many body bytes, then close (``reset``: with a TCP reset).
        ``replace``: bytes to send instead of the right ones (same length). ``start``: a forged Content-Range
        start."""
        match = _RANGE.fullmatch(self.range or "")
        first = int(match.group(1)) if ranges and match else 0
        headers = {"ETag": etag} if etag else {}
        payload = (replace or body)[first:]
        if ranges and match:
            shown_start = first if start is None else start
            headers["Content-Range"] = f"bytes {shown_start}-{len(body) - 1}/{len(body)}"
        headers["Content-Length"] = str(len(payload))
        self.head("206 Partial Content" if ranges and match else "200 OK", headers)
        self.send(payload[:cut])
        if cut is not None and reset:
            self.stopped.wait(0.2)  # let the client read what came, then reset the connection
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


Handler = Callable[[Request, int], None]


class Flaky(RawSocketServer):
    """A server on 127.0.0.1 calling ``handler(request, n)`` for the n-th request (from 0), one thread per
    connection, each connection closed after its answer; ``requests`` lists ``(path, Range header)``."""

    def __init__(self, handler: Handler) -> None:
        super().__init__()
        self.handler = handler
        self.requests: list[tuple[str, str | None]] = []
        self.if_range: list[str | None] = []
        self.lock = threading.Lock()

    def handle(self, sock: socket.socket) -> None:
        """Read the request, record it, and let the handler answer it."""
        try:
            request = Request(sock, self.stopped)
        except OSError:
            return
        with self.lock:
            n = len(self.requests)
            self.requests.append((request.path, request.range))
            self.if_range.append(request.headers.get("if-range"))
        self.handler(request, n)

    def starts(self) -> list[int | None]:
        """The N of each request's ``Range: bytes=N-`` (None: no Range)."""
        return [int(m.group(1)) if (m := _RANGE.fullmatch(r or "")) else None for _, r in self.requests]


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch):
    """The module's defaults (3 retries) with tiny waits; no time or retry setting from the environment."""
    for name in ("MEDNF_HTTP_TIMEOUT", "MEDNF_HTTP_DEADLINE", "MEDNF_HTTP_RETRIES", "MEDNF_OFFLINE", "HTTPS_PROXY",
                 "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(http, "RETRIES", 3)
    monkeypatch.setattr(http, "RETRY_DELAY_S", 0.01)


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message and len(message) < 600, message
    return message


def fetch(server: Flaky, folder: Path, **kwargs) -> Path:
    target = folder / "f.bin"
    fetch_verified(f"{server.url}/f.bin", target, progress=False, **{"size": len(BODY), "sha256": SHA, **kwargs})
    return target


def left(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# ------------------------------------------------------------------------------------------ resume


def test_a_dropped_transfer_resumes_where_it_stopped(tmp_path):
    """A clean close after 60 kB, then a TCP reset after 60 kB more: each retry asks for the rest only."""
    def handler(request: Request, n: int) -> None:
        if n == 0:
            request.serve(BODY, cut=60_000)
        elif n == 1:
            request.serve(BODY, cut=60_000, reset=True)
        else:
            request.serve(BODY)

    with Flaky(handler) as server:
        target = fetch(server, tmp_path)
    assert target.read_bytes() == BODY and left(tmp_path) == ["f.bin"]
    starts = server.starts()
    assert starts[0] is None and len(starts) == 3
    assert 0 < starts[1] <= 60_000 and starts[1] < starts[2] <= 120_000, starts


def test_a_stalled_transfer_resumes_after_the_stall_timeout(tmp_path, monkeypatch):
    def handler(request: Request, n: int) -> None:
        if n == 0:
            request.head("200 OK", {"Content-Length": str(len(BODY))})
            request.send(BODY[:50_000])
            request.stopped.wait(5)  # silent, connection open
        else:
            request.serve(BODY)

    monkeypatch.setenv("MEDNF_HTTP_TIMEOUT", "0.3")
    with Flaky(handler) as server:
        start = time.monotonic()
        target = fetch(server, tmp_path, sha256=None, md5=hashlib.md5(BODY).hexdigest())
        assert time.monotonic() - start < 3
    assert target.read_bytes() == BODY and server.starts() == [None, 50_000]


def test_a_server_without_range_support_is_read_again_from_the_start(tmp_path):
    def handler(request: Request, n: int) -> None:
        request.serve(BODY, ranges=False, cut=70_000 if n < 2 else None)

    with Flaky(handler) as server:
        target = fetch(server, tmp_path, size=None)  # the size from Content-Length, the sha256 checks it all
    assert target.read_bytes() == BODY and left(tmp_path) == ["f.bin"]
    assert server.starts() == [None, 70_000, 70_000]  # asked to resume, answered 200: stored from byte 0 again


def test_a_resume_with_a_wrong_content_range_starts_again(tmp_path):
    def handler(request: Request, n: int) -> None:
        if n == 0:
            request.serve(BODY, cut=80_000)
        elif n == 1:
            request.serve(BODY, start=1000)  # 206 whose Content-Range does not start where asked
        else:
            request.serve(BODY)

    with Flaky(handler) as server:
        target = fetch(server, tmp_path)
    assert target.read_bytes() == BODY
    assert server.starts() == [None, 80_000, None]  # the wrong range at once followed by a whole request


def test_wrong_bytes_on_resume_fail_the_digest_and_leave_nothing(tmp_path):
    forged = BODY[:100_000] + bytes(100_000)

    def handler(request: Request, n: int) -> None:
        if n == 0:
            request.serve(BODY, cut=100_000)
        else:
            request.serve(BODY, replace=forged)

    with Flaky(handler) as server:
        with pytest.raises(DownloadError, match=f"f.bin from .* has sha256 {hashlib.sha256(forged).hexdigest()}, "
                                                f"expected {SHA}; it was discarded") as err:
            fetch(server, tmp_path)
        one_line(err)
    assert server.starts() == [None, 100_000]  # a complete body of the wrong digest is never retried
    assert left(tmp_path) == []  # no target, no .part


@pytest.mark.parametrize("etag", [None, '"v1"'])
def test_without_a_digest_only_a_strong_etag_allows_a_resume(tmp_path, etag):
    """Without a digest a spliced file could not be told apart: the resume needs If-Range with the ETag."""
    def handler(request: Request, n: int) -> None:
        request.serve(BODY, etag=etag, cut=90_000 if n == 0 else None)

    with Flaky(handler) as server:
        target = fetch(server, tmp_path, sha256=None)
    assert target.read_bytes() == BODY
    assert server.starts() == [None, 90_000 if etag else None]
    assert server.if_range == [None, etag]


def test_a_file_changed_between_attempts_is_read_again_whole(tmp_path):
    """If-Range with the old ETag: a server whose file changed answers 206 with the new ETag; never spliced."""
    def handler(request: Request, n: int) -> None:
        request.serve(BODY, etag='"v1"' if n == 0 else '"v2"', cut=90_000 if n == 0 else None)

    with Flaky(handler) as server:
        target = fetch(server, tmp_path, sha256=None)
    assert target.read_bytes() == BODY and server.starts() == [None, 90_000, None]


# ------------------------------------------------------------------------------------------ status codes


def test_503_and_429_are_retried_and_retry_after_is_honoured_up_to_a_cap(tmp_path, monkeypatch):
    monkeypatch.setattr(http, "MAX_RETRY_AFTER_S", 0.3)

    def handler(request: Request, n: int) -> None:
        if n == 0:
            request.status("503 Service Unavailable", {"Retry-After": "3600"})
        elif n == 1:
            request.status("429 Too Many Requests")
        else:
            request.serve(BODY)

    with Flaky(handler) as server:
        start = time.monotonic()
        target = fetch(server, tmp_path)
        elapsed = time.monotonic() - start
    assert target.read_bytes() == BODY and len(server.requests) == 3
    assert 0.3 <= elapsed < 3  # the hour asked for was cut to MAX_RETRY_AFTER_S


def test_503_forever_ends_in_one_line_after_the_retries(tmp_path, monkeypatch):
    def handler(request: Request, n: int) -> None:
        request.status("503 Service Unavailable")

    with Flaky(handler) as server:
        start = time.monotonic()
        with pytest.raises(DownloadError) as err:
            fetch(server, tmp_path)
        assert time.monotonic() - start < 3 and len(server.requests) == 4  # 1 + RETRIES
        message = one_line(err)
        assert re.fullmatch(re.escape(f"download of {server.url}/f.bin failed after 0 of 200000 bytes (HTTP 503 "
                                      "Service Unavailable, 4 times in ") + r"\d+ s\); nothing was kept, the server "
                            r"failed: try again later, or raise MEDNF_HTTP_RETRIES \(retries of a download, now 3\)",
                            message), message
        assert left(tmp_path) == []
        for value, requests in (("1", 2), ("0", 1)):
            monkeypatch.setenv("MEDNF_HTTP_RETRIES", value)
            server.requests.clear()
            with pytest.raises(DownloadError, match="HTTP 503"):
                fetch(server, tmp_path)
            assert len(server.requests) == requests
        monkeypatch.setenv("MEDNF_HTTP_RETRIES", "lots")
        with pytest.raises(ConfigError, match="MEDNF_HTTP_RETRIES is 'lots', expected a whole number") as err:
            fetch(server, tmp_path)
        one_line(err)
    assert left(tmp_path) == []


def test_the_deadline_bounds_the_retries_and_their_waits(tmp_path, monkeypatch):
    monkeypatch.setattr(http, "RETRIES", 50)
    monkeypatch.setattr(http, "RETRY_DELAY_S", 0.2)
    monkeypatch.setenv("MEDNF_HTTP_DEADLINE", "0.7")

    def handler(request: Request, n: int) -> None:
        request.status("503 Service Unavailable")

    with Flaky(handler) as server:
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"not finished after 0.7 s.*raise MEDNF_HTTP_DEADLINE") as err:
            fetch(server, tmp_path)
        assert time.monotonic() - start < 2 and len(server.requests) <= 4
        one_line(err)


@pytest.mark.parametrize("status", ["404 Not Found", "403 Forbidden", "400 Bad Request"])
def test_a_client_error_is_not_retried(tmp_path, status):
    with Flaky(lambda request, n: request.status(status)) as server:
        with pytest.raises(DownloadError, match=f"failed after 0 of 200000 bytes \\(HTTP {status}\\); nothing "
                                                "was kept") as err:
            fetch(server, tmp_path)
        assert "MEDNF_HTTP_RETRIES" not in one_line(err)
        assert len(server.requests) == 1
    assert left(tmp_path) == []


def test_a_refused_first_connection_is_not_retried(tmp_path):
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port = probe.getsockname()[1]  # closed when the block ends: nothing listens there
    with pytest.raises(DownloadError, match=r"\(connection refused\); nothing was kept, no server listens") as err:
        fetch_verified(f"http://127.0.0.1:{port}/f", tmp_path / "f", size=10, progress=False)
    assert "times" not in one_line(err) and left(tmp_path) == []


def test_a_body_cut_short_every_time_is_one_line(tmp_path):
    with Flaky(lambda request, n: request.serve(BODY, ranges=False, cut=5000)) as server:
        with pytest.raises(DownloadError, match=r"f.bin from .* has been truncated \(size 5000 bytes, expected "
                                                r"200000\), 4 times in \d+ s; nothing was kept, the server closes the "
                                                r"connection early: try again later, or raise MEDNF_HTTP_RETRIES "
                                                r"\(retries of a download, now 3\)") as err:
            fetch(server, tmp_path)
        one_line(err)
        assert len(server.requests) == 4
    assert left(tmp_path) == []


# ------------------------------------------------------------------------------------------ real callers


def test_a_medmnist_download_survives_a_dropped_connection(tmp_path):
    def handler(request: Request, n: int) -> None:
        request.serve(BODY, cut=120_000 if n == 0 else None)

    with Flaky(handler) as server:
        medmnist_download(f"{server.url}/breastmnist_64.npz", tmp_path / "breastmnist_64.npz",
                          hashlib.md5(BODY).hexdigest(), progress=False)
        assert server.starts() == [None, 120_000]  # size from Content-Length, checked by the official md5
    assert (tmp_path / "breastmnist_64.npz").read_bytes() == BODY
    with Flaky(lambda request, n: request.status("500 Internal Server Error")) as server:
        with pytest.raises(SourceError, match="HTTP 500 Internal Server Error, 4 times") as err:
            medmnist_download(f"{server.url}/x.npz", tmp_path / "x.npz", "0" * 32, progress=False)
        one_line(err)


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> bytes:
    """A real PhantomNF export archive (imported from a tiny official-layout release: seconds)."""
    root = tmp_path_factory.mktemp("release")
    phantoms = phantom_source(load_builder("phantomnf"))
    splits = {s: (torch.randn(4, 12, generator=torch.Generator().manual_seed(i)) * 0.3,
                  torch.from_numpy(phantoms[s].labels[:4])) for i, s in enumerate(("train", "val", "test"))}
    write_release(root / "release", make_model(latent_dim=12), splits)
    dataset = import_official(root / "release", "phantomnf", root / "PhantomNF", progress=False)
    return export_zenodo(dataset, tmp_path_factory.mktemp("export")).read_bytes()


def test_a_zenodo_download_resumes_after_drops(tmp_path, monkeypatch, export):
    api, file = "/api/records/4242", "/api/records/4242/files/PhantomNF.tar/content"
    record: dict = {}

    def handler(request: Request, n: int) -> None:
        if request.path == api:
            request.serve(json.dumps(record).encode(), ranges=False)
        elif request.path == file:
            drops = sum(1 for path, _ in server.requests if path == file)
            request.serve(export, cut=len(export) // 3 if drops <= 2 else None, reset=drops == 2)
        else:
            request.status("404 Not Found")

    registry = tmp_path / "registry.toml"
    registry.write_text(f'[PhantomNF]\nzenodo_record = "4242"\nfiles = {{ "PhantomNF.tar" = {{ sha256 = '
                        f'"{hashlib.sha256(export).hexdigest()}", size = {len(export)} }} }}\n')
    monkeypatch.setenv("MEDNF_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDNF_REGISTRY", str(registry))
    with Flaky(handler) as server:
        monkeypatch.setenv("MEDNF_ZENODO_URL", server.url)
        record.update({"id": "4242", "files": [{"key": "PhantomNF.tar", "size": len(export),
                                                "checksum": "md5:" + hashlib.md5(export).hexdigest(),
                                                "links": {"self": f"{server.url}{file}"}}]})
        installed = download_zenodo("PhantomNF", progress=False)
        starts = [start for (path, _), start in zip(server.requests, server.starts(), strict=True) if path == file]
    assert (Path(installed) / "mednf.json").is_file()
    assert starts[0] is None and len(starts) == 3 and all(s is not None and s > 0 for s in starts[1:]), starts
