"""More hostile servers on 127.0.0.1 (real sockets, no mocks), for reads that once escaped the one rule of
``mednf.io.http``: ``hf://`` dataset URLs and ``export --push`` (a dripping Hub), URL templates and mirrors that
are not URLs (stray braces, spaces), and a manifest cut short by the server. Each case ends in one line within
seconds, and where nothing should be sent, the server sees no request.
"""

from __future__ import annotations

import http.client
import time
from pathlib import Path

import numpy as np
import pytest
from test_hostile_network import Client, Handler, Hostile, cli, ok, one_line, redirect

import mednf
from mednf.errors import ConfigError, DownloadError, PublishError
from mednf.io import http as mhttp
from mednf.io.http import fetch_verified, get_json, read_bytes
from mednf.remote.fetch import hf_resolve_url
from mednf.tasks.export import export_hf
from mednf.tasks.push import push_hf

HUB = "/datasets/my-lab/PhantomNF/resolve"


class Dripping(Hostile):
    """A server that answers every request, whatever its path or method, with a chunked body of one byte
    every ``every`` seconds (at most ``count`` bytes, while the client listens)."""

    def __init__(self, every: float = 0.5, count: int = 200) -> None:
        super().__init__({})
        self.every, self.count = every, count

    def handle(self, sock) -> None:  # type: ignore[no-untyped-def]
        try:
            client = Client(sock, self)
        except OSError:
            return
        self.requests.append(client.path)
        client.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(self.count):
            if not client.send(b"1\r\n \r\n") or self.stopped.wait(self.every):
                return


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch):
    for name in ("MEDNF_HTTP_TIMEOUT", "MEDNF_HTTP_DEADLINE", "MEDNF_OFFLINE", "HTTPS_PROXY", "https_proxy",
                 "MEDNF_HF_ENDPOINT", "HF_ENDPOINT", "MEDNF_MEDMNIST_URL", "MEDNF_ZENODO_URL"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------------ hf:// and --push


def test_hf_urls_are_read_through_the_one_rule(phantom_dir, monkeypatch):
    """hf://datasets/ORG/NAME[@REV] is read from the Hub's resolve URLs: the endpoint's policy, the deadline
    (a drip stops), and a 401 that says private repositories are not read this way."""
    files = {f"{HUB}/v1/{p.relative_to(phantom_dir).as_posix()}": ok(p.read_bytes())
             for p in phantom_dir.rglob("*") if p.is_file()}

    def drip(client: Client) -> None:
        client.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(200):
            if not client.send(b"1\r\n{\r\n") or client.server.stopped.wait(0.5):
                return

    routes: dict[str, Handler] = {**files, f"{HUB}/main/mednf.json": drip,
                                  f"{HUB}/private/mednf.json": lambda c: c.answer("401 Unauthorized")}
    with Hostile(routes) as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        assert hf_resolve_url("hf://datasets/my-lab/PhantomNF@v1/") == f"{srv.url}{HUB}/v1"
        remote, local = mednf.load("hf://datasets/my-lab/PhantomNF@v1", split="test"), \
            mednf.load(phantom_dir, split="test")
        np.testing.assert_array_equal(remote.latents, local.latents)

        start = time.monotonic()
        out = cli("info", "hf://datasets/my-lab/PhantomNF",
                  env={"MEDNF_HTTP_TIMEOUT": "5", "MEDNF_HTTP_DEADLINE": "1"})
        assert "not finished after 1 s" in out and "MEDNF_HTTP_DEADLINE" in out
        assert time.monotonic() - start < 10

        out = cli("info", "hf://datasets/my-lab/PhantomNF@private")
        assert "HTTP 401" in out and "private repositories are not read through hf://" in out
    monkeypatch.setenv("HF_ENDPOINT", "http://example.org")
    with pytest.raises(ConfigError, match=r"'http://example.org' \(HF_ENDPOINT\) is refused") as err:
        mednf.load("hf://datasets/my-lab/PhantomNF")
    one_line(err)
    assert "(HF_ENDPOINT) is refused" in cli("info", "hf://datasets/my-lab/PhantomNF", status=2)
    assert "expected hf://datasets/ORG/NAME" in cli("info", "hf://my-lab/PhantomNF", status=2)


def test_push_to_a_dripping_hub_ends_at_the_deadline(phantom_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_test_token")
    with Dripping() as srv:
        monkeypatch.setenv("HF_ENDPOINT", srv.url)
        monkeypatch.setenv("MEDNF_HTTP_DEADLINE", "2")
        start = time.monotonic()
        with pytest.raises(PublishError, match=r"did not finish within 2 s.*raise MEDNF_HTTP_DEADLINE") as err:
            push_hf(export_hf(phantom_dir, tmp_path / "hf"), "my-lab/PhantomNF")
        one_line(err)
        assert srv.requests and time.monotonic() - start < 15  # export (~seconds) + 2 s, not the drip's 100 s
        out = cli("export", str(phantom_dir), "--format", "hf", "--out", str(tmp_path / "hf2"), "--push",
                  "my-lab/PhantomNF", env={"MEDNF_HTTP_DEADLINE": "1"}, after_output=True)
        assert "did not finish within 1 s" in out
    monkeypatch.setenv("HF_ENDPOINT", "http://example.org")
    with pytest.raises(ConfigError, match=r"'http://example.org' \(HF_ENDPOINT\) is refused for --push"):
        push_hf(tmp_path / "hf", "my-lab/PhantomNF")


# ------------------------------------------------------------------------------------------ URL settings


@pytest.mark.parametrize("template", ["/{}", "/{x}", "/{file", "/x}", "/{file:>99999999999}", "/{file!r}"])
def test_a_medmnist_url_template_with_stray_braces_is_one_line(tmp_path, template):
    with Hostile({}) as srv:
        out = cli("build", "breastnf", "--preset", "tiny", "--max-samples", "8", "--medmnist-root",
                  str(tmp_path / "empty"), "--out", str(tmp_path / "bm"),
                  env={"MEDNF_MEDMNIST_URL": srv.url + template}, status=2, after_output=True)
        assert out.startswith("error: MEDNF_MEDMNIST_URL is ") and "exactly one {file} field" in out
        assert srv.requests == []


def test_urls_with_spaces_are_refused_before_any_transfer(tmp_path, monkeypatch):
    with Hostile({"/r": redirect("/my file")}) as srv:
        out = cli("build", "breastnf", "--preset", "tiny", "--max-samples", "8", "--medmnist-root",
                  str(tmp_path / "empty"), "--out", str(tmp_path / "bm"),
                  env={"MEDNF_MEDMNIST_URL": srv.url + "/my mirror/{file}"}, status=2, after_output=True)
        assert "MEDNF_MEDMNIST_URL" in out and "space" in out
        out = cli("download", "DermaNF", "--source", "zenodo", "--root", str(tmp_path / "home"),
                  env={"MEDNF_ZENODO_URL": srv.url + "/a b"}, status=2)
        assert "(from MEDNF_ZENODO_URL) is refused: it contains a space" in out and "fix MEDNF_ZENODO_URL" in out
        assert srv.requests == []
        with pytest.raises(ConfigError, match="contains a space or a control character") as err:
            fetch_verified(f"{srv.url}/a\tb", tmp_path / "f", size=None, progress=False)
        one_line(err)
        with pytest.raises(DownloadError, match="contains a space") as err:  # a redirect to one: the server's fault
            fetch_verified(f"{srv.url}/r", tmp_path / "f", size=None, progress=False)
        assert srv.requests == ["/r"] and not list(tmp_path.glob(".f.*"))
    failure = mhttp._failure("http://127.0.0.1:9/x", http.client.InvalidURL("bad"), mhttp._Clock())
    assert not failure.transient  # never retried


# ------------------------------------------------------------------------------------------ short bodies


def test_a_body_shorter_than_its_content_length_is_a_transfer_that_ended_early(tmp_path: Path):
    def short(client: Client) -> None:
        client.send(b'HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n{"name": "Phan')

    with Hostile({"/X/mednf.json": short, "/j": short}) as srv:
        for read in (lambda: mednf.load(f"{srv.url}/X"), lambda: get_json(f"{srv.url}/j"),
                     lambda: read_bytes(f"{srv.url}/j", limit=1000)):
            with pytest.raises(DownloadError, match="ended early: 14 of the 100 bytes") as err:
                read()
            assert "JSON" not in one_line(err)
        out = cli("info", f"{srv.url}/X")
        assert "ended early: 14 of the 100 bytes" in out
