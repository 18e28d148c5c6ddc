"""Every HTTP read of mednf goes through here, under one rule: :func:`open_url` (one checked GET), and on it
:func:`read_bytes` (a bounded whole answer), :func:`get_json` (a bounded JSON answer) and
:func:`fetch_verified` (a verified file download). Library: :mod:`http.client` (stdlib), so that every
step below is mednf's own code, not a library default.

**URL policy** (:func:`check_url`), applied to the URL asked for **and to every redirect** (at most
:data:`MAX_REDIRECTS`): only ``https://`` URLs, plus ``http://`` to the loopback host (127.0.0.1, ``::1``,
``localhost``: the test servers). ``ftp://``, ``file://``, ``gopher://``, ``data:`` and every other scheme
are refused, and so is a redirect from ``https://`` to ``http://`` (never downgraded, loopback included).
With ``allowed_hosts`` (Zenodo: the API's host and the mirror in ``$MEDNF_ZENODO_URL``) every hop must also
be on one of those hosts.

**Time**: a read that receives nothing for ``$MEDNF_HTTP_TIMEOUT`` seconds (default :data:`TIMEOUT_S`) stops,
and so does a transfer (connection, redirects, headers and body together) still running after
``$MEDNF_HTTP_DEADLINE`` seconds; unset, the deadline is :data:`DEADLINE_S` plus one second per
:data:`DEADLINE_RATE` bytes the transfer is expected to have (a known file size). Both are read when a
transfer starts. Each socket read waits at most the stall timeout and never past the deadline, so a server
that drips one byte at a time is stopped too. The error is one line naming the URL and the setting to raise.

**Size**: an answer is read in pieces and stops at the caller's limit (a ``Content-Length`` above it is
refused before the body is read), so an endless body costs at most the limit in memory. An error answer's
body is never read, and nothing from a server reaches a message but its status code and a short, cleaned
reason phrase.

**Transfer** (:func:`fetch_verified`): streamed to ``.<name>.<pid>.part`` beside the target, then size,
sha256 and md5 (those given) are checked, then it is renamed. The expected size is the caller's (a
``Content-Length`` that disagrees is refused before any byte is stored) or, with ``size=None``, the
``Content-Length`` if sent; without either, at most :data:`MAX_UNSIZED_BYTES` are accepted. A transfer
that does not fit on the disk is refused before it starts.

Connections are kept alive and reused per host (per process: a forked DataLoader worker starts with none);
``$HTTPS_PROXY`` / ``$NO_PROXY`` are honoured for ``https://`` (a CONNECT tunnel).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import http.client
import io
import math
import os
import shutil
import socket
import ssl
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mednf.errors import ConfigError, DownloadError
from mednf.io.files import create_new
from mednf.io.jsonsafe import JSONProblem, parse

TIMEOUT_S = 60  # stall timeout unless $MEDNF_HTTP_TIMEOUT is set (tests set this attribute)
DEADLINE_S = 600  # total time of a transfer of unknown or small size unless $MEDNF_HTTP_DEADLINE is set
DEADLINE_RATE = 100 << 10  # bytes per second the default deadline allows on top of DEADLINE_S for a known size
MAX_REDIRECTS = 5
CHUNK = 1 << 20
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_UNSIZED_BYTES = 64 << 30  # no size known at all: larger than any MedMNIST file (pathmnist_224 ≈ 16 GB)
MAX_JSON_BYTES = 64 << 20  # a Zenodo record listing thousands of files is a few MB
_REDIRECT_CODES = frozenset({301, 302, 303, 307, 308})
_HEADERS = {"User-Agent": "mednf", "Accept-Encoding": "identity"}  # sizes and digests are of the bytes as sent
_IDLE_PER_HOST = 8


# ------------------------------------------------------------------------------------------ URL policy


def url_host(url: str) -> str:
    """``host`` or ``host:port`` (port only when not the scheme's default), lower case: what
    :func:`check_url` compares against ``allowed_hosts``."""
    parts = urllib.parse.urlsplit(url)
    host = (parts.hostname or "").lower()
    try:
        port = parts.port
    except ValueError:
        port = -1  # not a valid port: matches nothing
    host = f"[{host}]" if ":" in host else host
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    return host if port in (None, default) else f"{host}:{port}"


def shown(text: str, limit: int = 200) -> str:
    """``text`` for a one-line message: control characters replaced, at most ``limit`` characters."""
    text = "".join(c if c.isprintable() else "?" for c in text[:limit + 1])
    return text if len(text) <= limit else text[:limit - 1] + "…"


def check_url(url: str, *, allowed_hosts: Collection[str] | None, what: str = "URL",
              previous: str | None = None) -> str:
    """``url`` if mednf may fetch it, else a one-line :class:`DownloadError`.

    Allowed: ``https://``, or ``http://`` to 127.0.0.1 / ``::1`` / ``localhost``. ``allowed_hosts``
    (values of :func:`url_host`, e.g. ``{"zenodo.org"}``) limits the host too; ``None`` checks the
    scheme only. ``previous``: the URL that redirected here (``https://`` may not lead to ``http://``).
    ``what`` names the URL in the message (e.g. ``"Zenodo record 1's link for X.tar"``)."""
    parts = urllib.parse.urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    redirected = "the server redirects where mednf does not follow: use another address or copy, or tell its owner"
    if not (scheme == "https" and host) and not (scheme == "http" and host in LOOPBACK_HOSTS):
        fix = redirected if previous is not None else ("use an https:// address, or fix the mirror you set "
                                                       "(MEDNF_ZENODO_URL, MEDNF_MEDMNIST_URL)")
        raise DownloadError(f"{what} {shown(url)!r} is refused: mednf fetches only https:// URLs (http:// only from "
                            f"127.0.0.1, ::1 or localhost); {fix}")
    if previous is not None and scheme == "http" and urllib.parse.urlsplit(previous).scheme.lower() == "https":
        raise DownloadError(f"{what} {shown(url)!r} is refused: mednf never follows https:// to plain http://; "
                            f"{redirected}")
    if allowed_hosts is not None and url_host(url) not in allowed_hosts:
        raise DownloadError(f"{what} {shown(url)!r} is refused: its host {shown(url_host(url), 80)} is not "
                            f"{' or '.join(sorted(allowed_hosts)) or 'an allowed host'}; "
                            + (redirected if previous is not None else
                               "if that server is a trusted mirror, set MEDNF_ZENODO_URL to it"))
    return url


# ------------------------------------------------------------------------------------------ settings


def _seconds(name: str, default: float) -> float:
    """The number of seconds in ``$name`` (read now), else ``default``."""
    text = os.environ.get(name, "").strip()
    if not text:
        return float(default)
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} is {shown(text, 40)!r}, expected a number of seconds > 0; fix it or unset it")
    return value


def stall_timeout() -> float:
    """Seconds a read may receive nothing: ``$MEDNF_HTTP_TIMEOUT``, else :data:`TIMEOUT_S`."""
    return _seconds("MEDNF_HTTP_TIMEOUT", TIMEOUT_S)


class _Clock:
    """The time budget of one transfer: each socket wait is the stall timeout, cut at the deadline."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.stall = stall_timeout()
        self.fixed = bool(os.environ.get("MEDNF_HTTP_DEADLINE", "").strip())
        self.limit = _seconds("MEDNF_HTTP_DEADLINE", DEADLINE_S)

    def expect(self, size: int | None) -> None:
        """A transfer of ``size`` bytes: the default deadline grows by ``size / DEADLINE_RATE`` seconds."""
        if size and not self.fixed:
            self.limit = DEADLINE_S + size / DEADLINE_RATE

    def expired(self) -> bool:
        return time.monotonic() - self.start >= self.limit

    def timeout(self) -> float:
        """Seconds the next socket operation may wait; TimeoutError once the deadline has passed."""
        left = self.start + self.limit - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline")
        return min(self.stall, left)


# ------------------------------------------------------------------------------------------ errors


class TransferError(DownloadError):
    """An HTTP read that failed: ``reason`` (short: ``"HTTP 500 Internal Server Error"``, ``"no answer for
    60 s"``), ``fix`` (what to do), ``status`` (the HTTP status, if one came) and ``too_large`` (the answer
    passed the caller's limit). Its message is one line; callers often word their own from the parts."""

    def __init__(self, url: str, reason: str, fix: str, *, status: int | None = None, too_large: bool = False) -> None:
        self.url, self.reason, self.fix, self.status, self.too_large = url, reason, fix, status, too_large
        super().__init__(f"could not read {shown(url)} ({reason}); {fix}")


def _status_error(url: str, status: int, phrase: str) -> TransferError:
    if status in (401, 403):
        fix = "the server refused access: check the address and your credentials for it"
    elif status == 404:
        fix = "check the address"
    elif status >= 500:
        fix = "the server failed: try again later"
    else:
        fix = "check the address and the network, and try again"
    return TransferError(url, f"HTTP {status} {shown(phrase, 40)}".strip(), fix, status=status)


def _failure(url: str, err: BaseException, clock: _Clock) -> TransferError:
    """The one-line TransferError for an exception raised while talking to ``url``."""
    if isinstance(err, TimeoutError) and clock.expired():
        return TransferError(url, f"not finished after {clock.limit:g} s", "the server is too slow: try again later, "
                             "or raise MEDNF_HTTP_DEADLINE (seconds a transfer may take in all)")
    if isinstance(err, TimeoutError):
        return TransferError(url, f"no answer for {clock.stall:g} s", "the server is slow or unreachable: try again "
                             "later, or raise MEDNF_HTTP_TIMEOUT (seconds a read may wait for data)")
    if isinstance(err, ConnectionRefusedError):
        return TransferError(url, "connection refused", "no server listens at that address: check the URL, or start "
                             "the server")
    if isinstance(err, ssl.SSLCertVerificationError):
        return TransferError(url, f"TLS certificate not valid: {shown(str(err.verify_message), 80)}",
                             "check the address; the server is not who it claims to be")
    if isinstance(err, ssl.SSLError):
        return TransferError(url, f"TLS error: {shown(str(err.reason or err), 80)}", "check the address and try again")
    if isinstance(err, socket.gaierror):
        return TransferError(url, f"host not found ({shown(str(err.strerror), 60)})",
                             "check the address and the network")
    if isinstance(err, http.client.HTTPException):
        return TransferError(url, f"a broken HTTP answer ({type(err).__name__})", "the server failed: try again later")
    text = getattr(err, "strerror", None) or str(err)
    return TransferError(url, shown(f"{type(err).__name__}: {text}" if text else type(err).__name__, 120),
                         "check the address and that the server is running and reachable")


# ------------------------------------------------------------------------------------------ connections


class _TimedReader(io.RawIOBase):
    """The socket's reads, each waiting at most what the transfer's clock allows."""

    def __init__(self, sock: socket.socket, clock: _Clock) -> None:
        self._sock, self._raw, self._clock = sock, sock.makefile("rb", buffering=0), clock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int | None:
        self._sock.settimeout(self._clock.timeout())
        return self._raw.readinto(buffer)

    def close(self) -> None:
        self._raw.close()
        super().close()


class _Response(http.client.HTTPResponse):
    """An HTTPResponse whose status line, headers and body are read under ``clock``."""

    def __init__(self, sock: socket.socket, debuglevel: int = 0, method: str | None = None, url: str | None = None,
                 *, clock: _Clock) -> None:
        super().__init__(sock, debuglevel, method, url)
        self.fp.close()  # nothing read from it yet: replaced by the timed reader
        self.fp = io.BufferedReader(_TimedReader(sock, clock))


class _Pool:
    """Idle keep-alive connections by (scheme, host, port), at most :data:`_IDLE_PER_HOST` each."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget every connection (a forked child must not share its parent's sockets or lock)."""
        self.lock = threading.Lock()
        self.idle: dict[tuple[str, str, int], list[http.client.HTTPConnection]] = {}

    def take(self, key: tuple[str, str, int]) -> http.client.HTTPConnection | None:
        with self.lock:
            idle = self.idle.get(key)
            return idle.pop() if idle else None

    def give(self, key: tuple[str, str, int], conn: http.client.HTTPConnection) -> None:
        with self.lock:
            idle = self.idle.setdefault(key, [])
            if len(idle) < _IDLE_PER_HOST:
                idle.append(conn)
                return
        conn.close()


_POOL = _Pool()
os.register_at_fork(after_in_child=_POOL.reset)


@functools.cache
def _tls() -> ssl.SSLContext:
    return ssl.create_default_context()


def _proxy(host: str) -> tuple[str, int, dict[str, str]] | None:
    """``(host, port, CONNECT headers)`` of the ``$HTTPS_PROXY`` to use for ``host``, or None."""
    proxy = urllib.request.getproxies().get("https")
    if not proxy or urllib.request.proxy_bypass(host):
        return None
    parts = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
    headers = {}
    if parts.username:
        token = f"{urllib.parse.unquote(parts.username)}:{urllib.parse.unquote(parts.password or '')}"
        headers["Proxy-Authorization"] = "Basic " + base64.b64encode(token.encode()).decode()
    return parts.hostname or "", parts.port or 80, headers


def _connection(scheme: str, host: str, port: int, clock: _Clock) -> http.client.HTTPConnection:
    """A new (unconnected) connection; connecting and the TLS handshake wait at most ``clock.timeout()``."""
    if scheme == "http":
        return http.client.HTTPConnection(host, port, timeout=clock.timeout())
    proxy = _proxy(host)
    if proxy is None:
        return http.client.HTTPSConnection(host, port, timeout=clock.timeout(), context=_tls())
    conn = http.client.HTTPSConnection(proxy[0], proxy[1], timeout=clock.timeout(), context=_tls())
    conn.set_tunnel(host, port, headers=proxy[2])
    return conn


def _exchange(url: str, clock: _Clock) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, tuple]:
    """Send GET ``url`` and read the status line and headers (a reused connection the server has closed
    meanwhile is replaced once: GET may be repeated)."""
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    key = (scheme, parts.hostname or "", parts.port or (443 if scheme == "https" else 80))
    target = urllib.parse.urlunsplit(("", "", parts.path or "/", parts.query, ""))
    for attempt in range(2):
        conn = _POOL.take(key) if attempt == 0 else None
        reused = conn is not None
        conn = conn or _connection(*key, clock)
        conn.response_class = functools.partial(_Response, clock=clock)  # type: ignore[assignment]  # called alike
        try:
            if conn.sock is not None:
                conn.sock.settimeout(clock.timeout())
            conn.request("GET", target, headers=_HEADERS)
            return conn, conn.getresponse(), key
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError):
            conn.close()
            if not reused:
                raise
        except BaseException:
            conn.close()
            raise
    raise AssertionError("unreachable")  # the second attempt returns or raises


class Answer:
    """The body of a successful GET (status 200): ``url`` (after redirects), ``length`` (the announced
    ``Content-Length``, or None), read by :meth:`chunks` or :meth:`read` within the transfer's time."""

    def __init__(self, url: str, response: http.client.HTTPResponse, clock: _Clock) -> None:
        self.url, self._response, self._clock = url, response, clock
        self.length = response.length if not response.chunked else None
        self.complete = False

    def expect(self, size: int | None) -> None:
        """The transfer is expected to carry ``size`` bytes (the default deadline grows with it)."""
        self._clock.expect(size)

    def chunks(self) -> Iterator[bytes]:
        """The body in pieces as they arrive (each at most :data:`CHUNK` bytes)."""
        response = self._response
        try:
            while block := response.read1(CHUNK):
                yield block
        except (OSError, http.client.HTTPException, ValueError) as err:
            raise _failure(self.url, err, self._clock) from None
        # a Content-Length body read to its end, or the last chunk of a chunked one: the connection may be reused
        self.complete = response.length == 0 or (response.chunked and response.isclosed())

    def read(self, limit: int) -> bytes:
        """The whole body, at most ``limit`` bytes (TransferError with ``too_large`` beyond: never read further)."""
        if self.length is not None and self.length > limit:
            raise TransferError(self.url, f"it announces {self.length} bytes, more than the {limit} expected",
                                "check the address", too_large=True)
        data = bytearray()
        for block in self.chunks():
            data += block
            if len(data) > limit:
                raise TransferError(self.url, f"it sends more than the {limit} bytes expected", "check the address",
                                    too_large=True)
        return bytes(data)


@contextmanager
def open_url(url: str, *, allowed_hosts: Collection[str] | None = None, what: str = "URL") -> Iterator[Answer]:
    """GET ``url`` under the module's rule (policy on every hop, clock, no error body read): the
    :class:`Answer` of status 200; a policy refusal is a DownloadError, any other failure a TransferError."""
    clock = _Clock()
    check_url(url, allowed_hosts=allowed_hosts, what=what)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        try:
            conn, response, key = _exchange(current, clock)
        except (OSError, http.client.HTTPException, ValueError) as err:
            raise _failure(current, err, clock) from None
        location = response.getheader("Location") if response.status in _REDIRECT_CODES else None
        if location is not None:
            conn.close()  # its body (if any) is not read
            following = urllib.parse.urljoin(current, location.strip())
            check_url(following, allowed_hosts=allowed_hosts, what=f"the redirect of {shown(current)} to",
                      previous=current)
            current = following
            continue
        if response.status != 200:
            conn.close()
            raise _status_error(current, response.status, response.reason or "")
        answer = Answer(current, response, clock)
        try:
            yield answer
        finally:
            if answer.complete and not response.will_close:
                response.close()
                _POOL.give(key, conn)
            else:
                conn.close()
        return
    raise TransferError(url, f"more than {MAX_REDIRECTS} redirects", "check the address; the server redirects in "
                        "circles")


# ------------------------------------------------------------------------------------------ reads


def read_bytes(url: str, *, limit: int, expected: int | None = None, allowed_hosts: Collection[str] | None = None,
               what: str = "URL") -> bytes:
    """The whole answer to GET ``url``, at most ``limit`` bytes (see :meth:`Answer.read`); ``expected``:
    its size if known (the default deadline grows with it)."""
    with open_url(url, allowed_hosts=allowed_hosts, what=what) as answer:
        answer.expect(expected)
        return answer.read(limit)


def excerpt(data: bytes, limit: int = 40) -> str:
    """The start of ``data`` for a message: decoded, control characters replaced, at most ``limit`` chars."""
    return shown(data[:limit * 4].decode("utf-8", "replace").strip(), limit)


def get_json(url: str, *, allowed_hosts: Collection[str] | None = None,
             fix: str = "check that MEDNF_ZENODO_URL points at a Zenodo server, or try again later") -> Any:
    """The JSON document at ``url`` (at most :data:`MAX_JSON_BYTES`, parsed by :mod:`mednf.io.jsonsafe`); a
    one-line error if it cannot be read or is not JSON. ``fix`` ends the message about a wrong answer."""
    try:
        body = read_bytes(url, limit=MAX_JSON_BYTES, allowed_hosts=allowed_hosts)
    except TransferError as err:
        if err.too_large:
            raise DownloadError(f"{shown(url)} sent more than {MAX_JSON_BYTES >> 20} MiB where a JSON record was "
                                f"expected; {fix}") from None
        raise DownloadError(f"could not read {shown(url)} ({err.reason}); {err.fix}") from None
    try:
        return parse(body)
    except JSONProblem as problem:
        why = f"it starts with {excerpt(body)!r}" if problem.syntax else problem.detail
        raise DownloadError(f"{shown(url)} did not send JSON ({why}); {fix}") from None


def _amount(n: int) -> str:
    return f"{n / 2**30:g} GiB" if n >= 1 << 30 else f"{n} bytes"


def _check_free(folder: Path, size: int, url: str) -> None:
    free = shutil.disk_usage(folder).free
    if size > free:
        raise DownloadError(f"{url} has {size / 2**30:.2f} GiB, {folder} has {free / 2**30:.2f} GiB free; free "
                            "space or use another --root")


def fetch_verified(url: str, target: Path, *, size: int | None, sha256: str | None = None, md5: str | None = None,
                   progress: bool = True, allowed_hosts: Collection[str] | None = None) -> None:
    """Stream ``url`` to ``target`` via a temporary file; size, sha256 and md5 (those given) must match before
    the rename. ``size=None``: the ``Content-Length`` if sent, else at most :data:`MAX_UNSIZED_BYTES`.
    ``allowed_hosts``: as for :func:`check_url`, on every redirect too."""
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    partial.unlink(missing_ok=True)  # left by a killed process that had this pid, or planted: unlink never follows
    wanted = {name: value for name, value in (("sha256", sha256), ("md5", md5)) if value is not None}
    digests = {name: hashlib.new(name) for name in wanted}
    expected, written = size, 0
    try:
        with open_url(url, allowed_hosts=allowed_hosts) as answer:
            announced = answer.length
            if announced is not None and size is not None and announced != size:
                raise DownloadError(f"{url} announces {announced} bytes for {target.name}, expected {size}; nothing "
                                    "was transferred (a changed file or a wrong mirror)")
            if size is None and announced is not None and announced > MAX_UNSIZED_BYTES:
                raise DownloadError(f"{url} announces {announced} bytes for {target.name}, more than the "
                                    f"{_amount(MAX_UNSIZED_BYTES)} mednf accepts without a known size; nothing was "
                                    "transferred, download it by hand")
            expected = size if size is not None else announced
            answer.expect(expected)
            if expected is not None:
                _check_free(target.parent, expected, url)
            limit = expected if expected is not None else MAX_UNSIZED_BYTES
            with os.fdopen(create_new(partial), "wb") as out, tqdm(total=expected, unit="B", unit_scale=True,
                                                                  desc=f"download {target.name}",
                                                                  disable=not progress) as bar:
                for block in answer.chunks():
                    written += len(block)
                    if written > limit:
                        break  # longer than expected: reported below, never stored
                    out.write(block)
                    for digest in digests.values():
                        digest.update(block)
                    bar.update(len(block))
    except TransferError as err:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"download of {shown(url)} failed after {written} of {expected or 'unknown'} bytes "
                            f"({err.reason}); nothing was kept, {err.fix}") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    problem = None
    if expected is None and written > MAX_UNSIZED_BYTES:
        problem = f"more than the {_amount(MAX_UNSIZED_BYTES)} mednf accepts without a known size"
    elif expected is not None and written < expected:
        problem = f"been truncated (size {written} bytes, expected {expected})"
    elif expected is not None and written > expected:
        problem = f"size more than {expected} bytes, expected {expected}"
    else:
        wrong = [(name, digest.hexdigest()) for name, digest in digests.items() if digest.hexdigest() != wanted[name]]
        problem = f"{wrong[0][0]} {wrong[0][1]}, expected {wanted[wrong[0][0]]}" if wrong else None
    if problem:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{target.name} from {url} has {problem}; it was discarded, run again")
    os.replace(partial, target)
