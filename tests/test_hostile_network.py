"""Every network read of mednf against hostile servers on 127.0.0.1 (real sockets, no mocks): redirects to refused
hosts and schemes, drips, silence, endless and oversized bodies, JSON built to break parsers, raw server text in
errors, and a malformed registry file. Each case must end in one line (a MednfError; exit status 2 at the command
line), never a traceback, a hang or unbounded memory.

Servers here are bounded: every loop stops after a fixed count or when the test ends, sockets time out, and the
whole file runs in seconds.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

import pytest
from click.testing import CliRunner
from loopback import RawSocketServer

import mednf
from mednf.cli import main
from mednf.errors import ConfigError, DownloadError, FormatError, MednfError
from mednf.io import http, jsonsafe
from mednf.io.http import check_url, fetch_verified, get_json, read_bytes, url_host
from mednf.remote.fetch import MAX_MANIFEST_BYTES
from mednf.remote.hf import download_hf
from mednf.remote.zenodo import download_zenodo

Handler = Callable[["Client"], None]
NESTED = b"[" * 100_000 + b"]" * 100_000
HUGE_INT = b'{"size": ' + b"7" * 5000 + b"}"


class Client:
    """One accepted connection: the request's path, and helpers to answer it (each send bounded by a timeout)."""

    def __init__(self, sock: socket.socket, server: Hostile) -> None:
        self.sock, self.server = sock, server
        self.sock.settimeout(5)
        data = b""
        while b"\r\n\r\n" not in data and len(data) < 65536:
            block = sock.recv(4096)
            if not block:
                break
            data += block
        line = data.split(b"\r\n", 1)[0].decode("latin-1").split()
        self.path = line[1] if len(line) > 1 else ""

    def send(self, data: bytes) -> bool:
        """Send ``data``; False once the client has gone (or the test ended)."""
        if self.server.stopped.is_set():
            return False
        try:
            self.sock.sendall(data)
            self.server.sent += len(data)
            return True
        except OSError:
            return False

    def answer(self, status: str, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", "Connection: close",
                *(f"{k}: {v}" for k, v in (headers or {}).items())]
        self.send(("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body)

    def drip(self, data: bytes, every: float = 0.2) -> None:
        """One byte of ``data`` every ``every`` seconds, while the client listens."""
        for i in range(len(data)):
            if not self.send(data[i:i + 1]) or self.server.stopped.wait(every):
                return


class Hostile(RawSocketServer):
    """A server on 127.0.0.1 answering each path with its handler (404 for others), one thread per connection;
    ``requests`` lists the paths asked for, ``sent`` counts the bytes written."""

    def __init__(self, routes: dict[str, Handler]) -> None:
        super().__init__()
        self.routes = routes
        self.requests: list[str] = []
        self.sent = 0

    def handle(self, sock: socket.socket) -> None:
        """Read the request line, then answer with the path's handler."""
        try:
            client = Client(sock, self)
        except OSError:
            return
        self.requests.append(client.path)
        handler = self.routes.get(client.path.split("?", 1)[0])
        if handler is None:
            client.answer("404 Not Found")
        else:
            handler(client)


def ok(body: bytes, headers: dict[str, str] | None = None) -> Handler:
    return lambda client: client.answer("200 OK", body, headers)


def redirect(location: str) -> Handler:
    return lambda client: client.answer("302 Found", headers={"Location": location})


def one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert message and "\n" not in message and len(message) < 600, message
    return message


def cli(*args: str, env: dict[str, str] | None = None, after_output: bool = False, status: int = 1) -> str:
    """The error line of ``mednf ARGS``, which must fail with exit ``status`` (1: the transfer failed; 2: the
    command line or a setting is wrong) and one line (``after_output``: after what the command printed before,
    e.g. a download's progress bar), no traceback."""
    result = CliRunner().invoke(main, list(args), env=env)
    assert result.exit_code == status, (result.exit_code, result.output, result.exception)
    lines = result.output.splitlines() if after_output else [result.output.removesuffix("\n")]
    assert lines[-1].startswith("error: ") and "\n" not in lines[-1] and len(lines[-1]) < 600, result.output
    assert "Traceback" not in result.output, result.output
    return lines[-1]


@pytest.fixture(autouse=True)
def _fresh_settings(monkeypatch):
    for name in ("MEDNF_HTTP_TIMEOUT", "MEDNF_HTTP_DEADLINE", "MEDNF_OFFLINE", "HTTPS_PROXY", "https_proxy"):
        monkeypatch.delenv(name, raising=False)


# ------------------------------------------------------------------------------------------ redirects


def test_the_lazy_reader_refuses_a_redirect_to_plain_http_elsewhere():
    with Hostile({"/X/mednf.json": redirect("http://example.invalid/X/mednf.json")}) as srv:
        with pytest.raises(DownloadError, match="redirect of .*/X/mednf.json to 'http://example.invalid/X/mednf.json' "
                                                "is refused: mednf fetches only https://") as err:
            mednf.load(f"{srv.url}/X")
        one_line(err)
        out = cli("info", f"{srv.url}/X")
        assert "'http://example.invalid/X/mednf.json' is refused" in out
        assert srv.requests == ["/X/mednf.json", "/X/mednf.json"]  # nothing else was asked for


@pytest.mark.parametrize("scheme", ["ftp", "file", "gopher"])
def test_a_redirect_to_another_scheme_is_refused_by_every_reader(scheme):
    target = f"{scheme}://127.0.0.1/etc/passwd"
    with Hostile({"/X/mednf.json": redirect(target), "/r": redirect(target)}) as srv:
        with pytest.raises(DownloadError, match=f"to '{target}' is refused") as err:
            mednf.load(f"{srv.url}/X")
        one_line(err)
        for read in (lambda: get_json(f"{srv.url}/r"), lambda: read_bytes(f"{srv.url}/r", limit=10)):
            with pytest.raises(DownloadError, match=f"to '{target}' is refused") as err:
                read()
            one_line(err)


def test_downloads_recheck_the_allowed_hosts_on_every_redirect(tmp_path):
    with Hostile({"/f": ok(b"secret")}) as elsewhere, \
            Hostile({"/f": redirect(f"{elsewhere.url}/f"), "/api": redirect(f"{elsewhere.url}/f")}) as zenodo:
        allowed = {url_host(zenodo.url)}
        with pytest.raises(DownloadError, match=f"host {url_host(elsewhere.url)} is not {url_host(zenodo.url)}") as err:
            fetch_verified(f"{zenodo.url}/f", tmp_path / "f", size=6, progress=False, allowed_hosts=allowed)
        one_line(err)
        with pytest.raises(DownloadError, match="is not"):
            get_json(f"{zenodo.url}/api", allowed_hosts=allowed)
        assert elsewhere.requests == [] and not list(tmp_path.iterdir())
        # without a host list (the lazy reader, MedMNIST, the Hub's CDN) any host under the scheme policy is fine
        assert read_bytes(f"{zenodo.url}/f", limit=10) == b"secret"


def test_https_is_never_downgraded_to_http():
    for previous in ("https://zenodo.org/x", "https://127.0.0.1:8443/x"):
        with pytest.raises(DownloadError, match="never follows https:// to plain http://") as err:
            check_url("http://127.0.0.1:8000/x", allowed_hosts=None, what="the redirect of x to", previous=previous)
        one_line(err)
    assert check_url("https://cdn.example/x", allowed_hosts=None, previous="https://zenodo.org/x")
    assert check_url("http://127.0.0.1/y", allowed_hosts=None, previous="http://localhost/x")


def test_redirect_loops_stop_after_a_few_hops():
    with Hostile({"/a": redirect("/b"), "/b": redirect("/a")}) as srv:
        with pytest.raises(DownloadError, match=f"more than {http.MAX_REDIRECTS} redirects") as err:
            read_bytes(f"{srv.url}/a", limit=10)
        one_line(err)
        assert len(srv.requests) == http.MAX_REDIRECTS + 1


# ------------------------------------------------------------------------------------------ schemes


@pytest.mark.parametrize("url", ["ftp://127.0.0.1:1/X", "file:///etc", "gopher://127.0.0.1:1/X",
                                 "http://example.org/X"])
def test_other_schemes_and_plain_http_elsewhere_are_refused_before_any_transfer(url):
    with pytest.raises(ConfigError, match="is refused: mednf reads") as err:
        mednf.load(url)
    one_line(err)
    assert "is refused" in cli("info", url, status=2)
    with pytest.raises(DownloadError, match="is refused: mednf fetches only https://") as err:
        read_bytes(url, limit=10)
    one_line(err)


# ------------------------------------------------------------------------------------------ time


def test_a_drip_is_stopped_by_the_deadline_from_the_environment(monkeypatch, tmp_path):
    body = b"x" * 1000

    def drip(client: Client) -> None:
        client.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
        client.drip(body)

    def drip_head(client: Client) -> None:
        client.drip(b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n\r\nx")

    monkeypatch.setenv("MEDNF_HTTP_DEADLINE", "1")
    with Hostile({"/X/mednf.json": drip, "/f": drip, "/head": drip_head}) as srv:
        start = time.monotonic()
        with pytest.raises(DownloadError, match=r"\(not finished after 1 s\).*raise MEDNF_HTTP_DEADLINE") as err:
            mednf.load(f"{srv.url}/X")
        assert "127.0.0.1" in one_line(err)
        with pytest.raises(DownloadError, match=r"failed after \d+ of 1000 bytes \(not finished after 1 s\)") as err:
            fetch_verified(f"{srv.url}/f", tmp_path / "f", size=1000, progress=False)
        one_line(err)
        with pytest.raises(DownloadError, match="not finished after 1 s"):  # dripping the status line and headers
            read_bytes(f"{srv.url}/head", limit=10)
        assert "MEDNF_HTTP_DEADLINE" in cli("info", f"{srv.url}/X", env={"MEDNF_HTTP_DEADLINE": "0.5"})
        assert time.monotonic() - start < 15  # four transfers of ~1 s each, not 1000 × 0.2 s
        assert not list(tmp_path.iterdir())


def test_a_silent_server_is_stopped_by_the_stall_timeout(monkeypatch):
    def silent(client: Client) -> None:
        client.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        client.server.stopped.wait(20)

    monkeypatch.setenv("MEDNF_HTTP_TIMEOUT", "0.5")
    with Hostile({"/X/mednf.json": silent}) as srv:
        with pytest.raises(DownloadError, match=r"\(no answer for 0.5 s\).*raise MEDNF_HTTP_TIMEOUT") as err:
            mednf.load(f"{srv.url}/X")
        one_line(err)


@pytest.mark.parametrize("value", ["soon", "-1", "0", "nan"])
def test_a_wrong_time_setting_is_one_line(monkeypatch, value):
    monkeypatch.setenv("MEDNF_HTTP_DEADLINE", value)
    with pytest.raises(ConfigError, match=f"MEDNF_HTTP_DEADLINE is '{value}', expected a number of seconds") as err:
        read_bytes("http://127.0.0.1:1/x", limit=1)
    one_line(err)


# ------------------------------------------------------------------------------------------ size


def endless(head: bytes) -> Handler:
    """An answer starting with ``head`` whose body never ends (64 KiB blocks, at most 1 GiB, while the client
    reads)."""
    def handler(client: Client) -> None:
        client.send(head)
        for _ in range(16384):
            if not client.send(b"{" * 65536):
                return
    return handler


def test_an_endless_manifest_is_read_only_up_to_the_limit():
    with Hostile({"/X/mednf.json": endless(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")}) as srv:
        with pytest.raises(FormatError, match="more than a MedNF manifest") as err:
            mednf.load(f"{srv.url}/X")
        one_line(err)
        srv.stopped.wait(0.2)  # what the server still wrote into the socket buffers after the client left
        assert MAX_MANIFEST_BYTES < srv.sent < MAX_MANIFEST_BYTES + (32 << 20)  # read up to the limit, not on


def test_a_length_above_the_limit_is_refused_before_the_body():
    announce = endless(b"HTTP/1.1 200 OK\r\nContent-Length: 1048576000\r\n\r\n")
    with Hostile({"/X/mednf.json": announce, "/api": announce}) as srv:
        with pytest.raises(FormatError, match="more than a MedNF manifest") as err:
            mednf.load(f"{srv.url}/X")
        one_line(err)
        with pytest.raises(DownloadError, match=f"sent more than {http.MAX_JSON_BYTES >> 20} MiB where a JSON"):
            get_json(f"{srv.url}/api")
        srv.stopped.wait(0.2)
        assert srv.sent < 2 * (32 << 20)  # only what the socket buffers took: the body was never read


# ------------------------------------------------------------------------------------------ JSON


def test_a_remote_manifest_built_to_break_the_parser_is_one_line():
    routes = {"/deep/mednf.json": ok(NESTED), "/int/mednf.json": ok(HUGE_INT),
              "/html/mednf.json": ok(b"<html>" + b"A" * 11_500 + b"</html>"), "/bin/mednf.json": ok(b"\xff\xfe\x00")}
    with Hostile(routes) as srv:
        for name, reason in [("deep", "nested deeper than 64 levels"), ("int", "an integer of 5000 digits"),
                             ("html", "Expecting value at line 1 column 1"), ("bin", "not UTF-8 text")]:
            with pytest.raises(FormatError, match=f"{name}/mednf.json is not valid JSON \\({reason}") as err:
                mednf.load(f"{srv.url}/{name}")
            assert "AAAA" not in one_line(err)
        assert "nested deeper" in cli("info", f"{srv.url}/deep")


def test_the_safe_parser_reads_json_and_refuses_what_breaks_parsers():
    assert jsonsafe.loads(b'{"a": [1, 2.5, -3, null], "b": "\\u00e9"}', "x", "fix") == {"a": [1, 2.5, -3, None],
                                                                                       "b": "é"}
    assert jsonsafe.loads("[" * 64 + "]" * 64, "x", "fix") is not None
    for data, reason in [(NESTED, "nested deeper"), (b"[" * 65 + b"]" * 65, "nested deeper"),
                         (b'{"a": {"b": ' * 40 + b"1" + b"}}" * 40, "nested deeper"),
                         (b"-" + b"9" * 5000, "an integer of 5000 digits"), (b"\xff", "not UTF-8"),
                         (b"", "Expecting value")]:
        with pytest.raises(FormatError, match=reason) as err:
            jsonsafe.loads(data, "x", "fix it")
        assert one_line(err).endswith("; fix it")


@pytest.fixture
def zenodo(tmp_path, monkeypatch):
    """A registry pointing PhantomNF at Zenodo record 1 and HF repo mednf/PhantomNF, both on ``server``."""
    (tmp_path / "registry.toml").write_text(
        '[PhantomNF]\nzenodo_record = "1"\nhf_repo = "mednf/PhantomNF"\n'
        f'files = {{ "PhantomNF.tar" = {{ sha256 = "{"0" * 64}", size = 10 }} }}\n')
    monkeypatch.setenv("MEDNF_REGISTRY", str(tmp_path / "registry.toml"))
    monkeypatch.setenv("MEDNF_HOME", str(tmp_path / "home"))
    return tmp_path


@pytest.mark.parametrize("body, reason", [(NESTED, "nested deeper than 64 levels"),
                                          (HUGE_INT, "an integer of 5000 digits"),
                                          (b"<!DOCTYPE html>" + b"B" * 11_500, "it starts with '<!DOCTYPE html>BBB")],
                         ids=["nested", "huge-int", "html"])
def test_a_zenodo_record_or_hub_answer_built_to_break_the_parser_is_one_line(zenodo, monkeypatch, body, reason):
    routes = {"/api/records/1": ok(body), "/api/datasets/mednf/PhantomNF/revision/main": ok(body)}
    with Hostile(routes) as srv:
        monkeypatch.setenv("MEDNF_ZENODO_URL", srv.url)
        monkeypatch.setenv("MEDNF_HF_ENDPOINT", srv.url)
        with pytest.raises(DownloadError, match=f"did not send JSON \\({reason}") as err:
            download_zenodo("PhantomNF", progress=False)
        assert "B" * 50 not in one_line(err)
        with pytest.raises(DownloadError, match=f"could not download mednf/PhantomNF .* did not send JSON \\({reason}"):
            download_hf("PhantomNF", progress=False)
        out = cli("download", "PhantomNF")
        assert "did not send JSON" in out and "B" * 50 not in out
        assert not (zenodo / "home" / "PhantomNF").exists()


def test_a_zenodo_file_that_drips_is_stopped(zenodo, monkeypatch):
    record = {"files": [{"key": "PhantomNF.tar", "size": 10, "checksum": "md5:" + "0" * 32,
                         "links": {"self": "/records/1/files/PhantomNF.tar/content"}}]}

    def drip(client: Client) -> None:
        client.send(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n")
        client.drip(b"x" * 10, every=0.5)

    with Hostile({"/api/records/1": ok(b""), "/records/1/files/PhantomNF.tar/content": drip}) as srv:
        record["files"][0]["links"]["self"] = srv.url + record["files"][0]["links"]["self"]
        srv.routes["/api/records/1"] = ok(json.dumps(record).encode())
        monkeypatch.setenv("MEDNF_ZENODO_URL", srv.url)
        out = cli("download", "PhantomNF", env={"MEDNF_HTTP_DEADLINE": "1"}, after_output=True)
        assert "PhantomNF.tar" in out and "not finished after 1 s" in out and "MEDNF_HTTP_DEADLINE" in out


# ------------------------------------------------------------------------------------------ server text in errors


def test_an_error_answer_is_never_echoed():
    page = b"<html>" + b"S" * 11_500 + b"</html>"

    def long_reason(client: Client) -> None:
        client.send(b"HTTP/1.1 503 " + b"R" * 11_500 + b"\r\nContent-Length: %d\r\n\r\n" % len(page) + page)

    with Hostile({"/X/mednf.json": lambda client: client.answer("500 Internal Server Error", page),
                  "/Y/mednf.json": long_reason}) as srv:
        for name in ("X", "Y"):
            out = cli("info", f"{srv.url}/{name}")
            assert "SSSS" not in out and "R" * 60 not in out and "HTTP 5" in out


# ------------------------------------------------------------------------------------------ keep-alive


def test_connections_are_reused_and_a_closed_one_is_replaced():
    """A server that keeps the connection open (HTTP/1.1) is asked twice on one connection; one that closes it
    silently after each answer costs a fresh connection, not an error."""
    peers: list[int] = []

    def keep(client: Client, close: bool) -> None:
        for _ in range(3):  # at most three requests per connection
            peers.append(client.sock.getpeername()[1])
            client.send(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
            if close:
                return
            data = b""
            try:
                while b"\r\n\r\n" not in data and len(data) < 65536:
                    block = client.sock.recv(4096)
                    if not block:
                        return
                    data += block
            except OSError:
                return

    with Hostile({"/keep": lambda c: keep(c, False), "/drop": lambda c: keep(c, True)}) as srv:
        assert [read_bytes(f"{srv.url}/keep", limit=2) for _ in range(2)] == [b"ok", b"ok"]
        assert len(peers) == 2 and peers[0] == peers[1]
        peers.clear()
        assert [read_bytes(f"{srv.url}/drop", limit=2) for _ in range(3)] == [b"ok"] * 3
        assert len(set(peers)) == 3


# ------------------------------------------------------------------------------------------ registry file


@pytest.mark.parametrize("text, reason", [
    ("[PhantomNF\n", "is not valid TOML"), ("a = " + "[" * 100_000 + "]" * 100_000 + "\n", "is not valid TOML"),
    ("a = " + "7" * 5000 + "\n", "is not valid TOML"), ("PhantomNF = 3\n", "'PhantomNF' is int, expected a table"),
    (None, "cannot be read")], ids=["syntax", "nested", "huge-int", "not-a-table", "missing"])
def test_a_malformed_registry_file_is_one_line(tmp_path, monkeypatch, text, reason):
    registry = tmp_path / "registry.toml"
    if text is not None:
        registry.write_text(text)
    monkeypatch.setenv("MEDNF_REGISTRY", str(registry))
    monkeypatch.setenv("MEDNF_HOME", str(tmp_path / "home"))
    for args in (["download", "PhantomNF"], ["list"]):
        out = cli(*args, after_output=args == ["list"], status=2)  # `mednf list` has printed its first rows by then
        assert reason in out and "MEDNF_REGISTRY" in out, out
    with pytest.raises(MednfError, match=reason) as err:
        mednf.load("NotBuiltNF")
    one_line(err)



# ------------------------------------------------------------------------------------------ forged sizes


def _forged_manifest(phantom_dir, index_size: int, count: int | None = None) -> bytes:
    manifest = json.loads((phantom_dir / "mednf.json").read_text())
    manifest["files"]["index.parquet"]["size"] = index_size
    if count is not None:
        manifest["splits"]["train"]["count"] = count
    return json.dumps(manifest).encode()


def test_a_forged_file_size_beyond_the_datasets_shape_is_refused_before_any_read(phantom_dir):
    with Hostile({"/X/mednf.json": ok(_forged_manifest(phantom_dir, 20 << 30))}) as srv:
        with pytest.raises(FormatError, match="index.parquet is said to have 21474836480 bytes, more than a "
                                              "dataset of this shape can need") as err:
            mednf.load(f"{srv.url}/X")
        one_line(err)
        assert srv.requests == ["/X/mednf.json"]


def test_a_forged_file_size_beyond_the_memory_is_refused_before_any_read(phantom_dir):
    forged = _forged_manifest(phantom_dir, 1 << 40, count=10**9)  # a shape that would allow 1 TiB
    with Hostile({"/X/mednf.json": ok(forged)}) as srv:
        with pytest.raises(DownloadError, match="more than half the memory available") as err:
            mednf.load(f"{srv.url}/X")
        one_line(err)
        assert srv.requests == ["/X/mednf.json"]
