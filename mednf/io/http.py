"""Every HTTP read of mednf goes through here, under one rule: :func:`open_url` (one checked GET), and on it
:func:`read_bytes` (a bounded whole answer), :func:`get_json` (a bounded JSON answer) and
:func:`fetch_verified` (a verified file download). Library: :mod:`http.client` (stdlib), so that every
step below is mednf's own code, not a library default.

**URL policy** (:func:`check_url`), applied to the URL asked for **and to every redirect** (at most
:data:`MAX_REDIRECTS`): only ``https://`` URLs, plus ``http://`` to the loopback host (127.0.0.1, ``::1``,
``localhost``: the test servers). ``ftp://``, ``file://``, ``gopher://``, ``data:`` and every other scheme
are refused, and so is a redirect from ``https://`` to ``http://`` (never downgraded, loopback included).
With ``allowed_hosts`` (Zenodo: the API's host and the mirror in ``$MEDNF_ZENODO_URL``) every hop must also
be on one of those hosts. A URL with a space or a control character is refused before anything is sent (a
ConfigError naming the variable it came from, e.g. ``$MEDNF_MEDMNIST_URL``), never tried again.

**Time**: a read that receives nothing for ``$MEDNF_HTTP_TIMEOUT`` seconds (default :data:`TIMEOUT_S`) stops,
and so does a transfer (connection, redirects, headers and body together) still running after
``$MEDNF_HTTP_DEADLINE`` seconds; unset, the deadline is :data:`DEADLINE_S` plus one second per
:data:`DEADLINE_RATE` bytes the transfer is expected to have (a known file size). Both are read when a
transfer starts. Each socket read waits at most the stall timeout and never past the deadline, so a server
that drips one byte at a time is stopped too. The error is one line naming the URL and the setting to raise.

**Size**: an answer is read in pieces and stops at the caller's limit (a ``Content-Length`` above it is
refused before the body is read), so an endless body costs at most the limit in memory; a body that ends
before its ``Content-Length`` is a transfer that ended early, never handed on short. An error answer's
body is never read, and nothing from a server reaches a message but its status code and a short, cleaned
reason phrase.

**Transfer** (:func:`fetch_verified`): streamed to ``.<name>.<pid>.part`` beside the target, then size,
sha256 and md5 (those given) are checked, then it is renamed. The expected size is the caller's (a
``Content-Length`` that disagrees is refused before any byte is stored) or, with ``size=None``, the
``Content-Length`` if sent; without either, at most :data:`MAX_UNSIZED_BYTES` are accepted. A transfer
that does not fit on the disk is refused before it starts.

**Retries** (:func:`fetch_verified` only): a transfer that breaks (no answer for the stall timeout, a connection
reset or closed before the announced size, HTTP 5xx, 408 or 429) is tried again up to ``$MEDNF_HTTP_RETRIES``
more times (default :data:`RETRIES`; 0: never), after waiting :data:`RETRY_DELAY_S`, then twice as long each
time, or the server's ``Retry-After`` seconds (at most :data:`MAX_RETRY_AFTER_S`). A connection refused is
retried only after an earlier attempt reached the server. Never retried: other 4xx answers, URL-policy refusals,
a URL that cannot be sent (``InvalidURL``), a complete body of the wrong size or digest, a full disk, an exceeded
deadline; the deadline bounds all attempts and waits together. A retry resumes where the ``.part`` file ends
(``Range: bytes=N-``) when the server answers ``206`` with exactly ``bytes N-(size-1)/size`` and the result can
still be checked: the caller gave a digest (the digests run over every stored byte, across resumes), or the
server's strong ``ETag`` is sent as ``If-Range`` and comes back unchanged. Anything else (``200``, another range,
``416``, a changed ``ETag``) starts again from byte 0. After the last attempt the error is one line: the URL,
what happened how many times, and the setting to raise.

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
import re
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
RETRIES = 3  # attempts after the first of a download unless $MEDNF_HTTP_RETRIES is set (tests set this attribute)
RETRY_DELAY_S = 1.0  # the wait before the first retry, doubled before each next one (tests set this attribute)
MAX_RETRY_AFTER_S = 30.0  # the longest wait a server's Retry-After is granted (tests set this attribute)
MAX_RETRIES = 100  # the most $MEDNF_HTTP_RETRIES may ask for
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


URL_SETTINGS = ("MEDNF_ZENODO_URL", "MEDNF_MEDMNIST_URL", "MEDNF_HF_ENDPOINT", "HF_ENDPOINT")


def url_setting(url: str) -> str | None:
    """The environment variable of :data:`URL_SETTINGS` whose value ``url`` starts with (up to a template's
    first ``{``), or None: where a wrong URL came from, for a message."""
    for name in URL_SETTINGS:
        stem = os.environ.get(name, "").split("{", 1)[0].rstrip("/")
        if stem and url.startswith(stem):
            return name
    return None


def check_url(url: str, *, allowed_hosts: Collection[str] | None, what: str = "URL",
              previous: str | None = None) -> str:
    """``url`` if mednf may fetch it, else a one-line :class:`DownloadError`.

    Allowed: ``https://``, or ``http://`` to 127.0.0.1 / ``::1`` / ``localhost``. ``allowed_hosts``
    (values of :func:`url_host`, e.g. ``{"zenodo.org"}``) limits the host too; ``None`` checks the
    scheme only. ``previous``: the URL that redirected here (``https://`` may not lead to ``http://``).
    ``what`` names the URL in the message (e.g. ``"Zenodo record 1's link for X.tar"``). A URL with a space
    or a control character is a :class:`ConfigError` naming the variable it came from (a redirect to one: a
    DownloadError)."""
    if any(c.isspace() or not c.isprintable() for c in url):
        setting = url_setting(url)
        source = f" (from {setting})" if setting else ""
        if previous is not None:
            raise DownloadError(f"{what} {shown(url)!r} is refused: it contains a space or a control character; "
                                "the server redirects where mednf does not follow: tell its owner")
        raise ConfigError(f"{what} {shown(url)!r}{source} is refused: it contains a space or a control character, "
                          "which no URL may hold; write a space as %20 and fix "
                          + (setting if setting else "the address"))
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


def retries() -> int:
    """Attempts a download makes after its first: ``$MEDNF_HTTP_RETRIES`` (read now), else :data:`RETRIES`."""
    text = os.environ.get("MEDNF_HTTP_RETRIES", "").strip()
    if not text:
        return RETRIES
    if not (text.isascii() and text.isdigit() and int(text) <= MAX_RETRIES):
        raise ConfigError(f"MEDNF_HTTP_RETRIES is {shown(text, 40)!r}, expected a whole number from 0 to "
                          f"{MAX_RETRIES}; fix it or unset it")
    return int(text)


def stall_timeout() -> float:
    """Seconds a read may receive nothing: ``$MEDNF_HTTP_TIMEOUT``, else :data:`TIMEOUT_S`."""
    return _seconds("MEDNF_HTTP_TIMEOUT", TIMEOUT_S)


def deadline(size: int | None = None) -> float:
    """Seconds a transfer of ``size`` bytes (None: unknown) may take in all: ``$MEDNF_HTTP_DEADLINE`` (read
    now), else :data:`DEADLINE_S` plus one second per :data:`DEADLINE_RATE` bytes."""
    if os.environ.get("MEDNF_HTTP_DEADLINE", "").strip():
        return _seconds("MEDNF_HTTP_DEADLINE", DEADLINE_S)
    return DEADLINE_S + (size or 0) / DEADLINE_RATE


class _Clock:
    """The time budget of one transfer: each socket wait is the stall timeout, cut at the deadline."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.stall = stall_timeout()
        self.limit = deadline()

    def expect(self, size: int | None) -> None:
        """A transfer of ``size`` bytes: the default deadline grows by ``size / DEADLINE_RATE`` seconds."""
        if size:
            self.limit = deadline(size)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def expired(self) -> bool:
        return self.elapsed() >= self.limit

    def left(self) -> float:
        """Seconds until the deadline (0 once it has passed)."""
        return max(self.limit - self.elapsed(), 0.0)

    def timeout(self) -> float:
        """Seconds the next socket operation may wait; TimeoutError once the deadline has passed."""
        left = self.start + self.limit - time.monotonic()
        if left <= 0:
            raise TimeoutError("deadline")
        return min(self.stall, left)


# ------------------------------------------------------------------------------------------ errors


class TransferError(DownloadError):
    """An HTTP read that failed: ``reason`` (short: ``"HTTP 500 Internal Server Error"``, ``"no answer for
    60 s"``), ``fix`` (what to do), ``status`` (the HTTP status, if one came), ``too_large`` (the answer
    passed the caller's limit), ``transient`` (the same request may well succeed later: a download retries
    it) and ``retry_after`` (the seconds the server asked to wait, if it did). Its message is one line;
    callers often word their own from the parts."""

    def __init__(self, url: str, reason: str, fix: str, *, status: int | None = None, too_large: bool = False,
                 transient: bool = False, retry_after: float | None = None) -> None:
        self.url, self.reason, self.fix, self.status, self.too_large = url, reason, fix, status, too_large
        self.transient, self.retry_after = transient, retry_after
        super().__init__(f"could not read {shown(url)} ({reason}); {fix}")


class _Truncated(TransferError):
    """A body that ended (the server closed the connection) before the size it was expected to have."""


_REFUSED = "connection refused"


def _retry_after(value: str | None) -> float | None:
    """The seconds of a ``Retry-After: <seconds>`` header (a date or anything else: None)."""
    text = (value or "").strip()
    return float(text) if text.isascii() and text.isdigit() and len(text) < 10 else None


def _status_error(url: str, status: int, phrase: str, retry_after: str | None = None) -> TransferError:
    if status in (401, 403):
        fix = "the server refused access: check the address and your credentials for it"
    elif status == 404:
        fix = "check the address"
    elif status == 429:
        fix = "the server is busy (too many requests): try again later"
    elif status >= 500:
        fix = "the server failed: try again later"
    else:
        fix = "check the address and the network, and try again"
    return TransferError(url, f"HTTP {status} {shown(phrase, 40)}".strip(), fix, status=status,
                         transient=status in (408, 429) or status >= 500, retry_after=_retry_after(retry_after))


def _failure(url: str, err: BaseException, clock: _Clock) -> TransferError:
    """The one-line TransferError for an exception raised while talking to ``url``."""
    if isinstance(err, TimeoutError) and clock.expired():
        return TransferError(url, f"not finished after {clock.limit:g} s", "the server is too slow: try again later, "
                             "or raise MEDNF_HTTP_DEADLINE (seconds a transfer may take in all)")
    if isinstance(err, TimeoutError):
        return TransferError(url, f"no answer for {clock.stall:g} s", "the server is slow or unreachable: try again "
                             "later, or raise MEDNF_HTTP_TIMEOUT (seconds a read may wait for data)", transient=True)
    if isinstance(err, ConnectionRefusedError):
        return TransferError(url, _REFUSED, "no server listens at that address: check the URL, or start the server",
                             transient=True)
    if isinstance(err, (ssl.SSLEOFError, ssl.SSLZeroReturnError)):  # the connection closed mid-answer
        return TransferError(url, f"TLS connection closed ({type(err).__name__})", "the server failed: try again "
                             "later", transient=True)
    if isinstance(err, ssl.SSLCertVerificationError):
        return TransferError(url, f"TLS certificate not valid: {shown(str(err.verify_message), 80)}",
                             "check the address; the server is not who it claims to be")
    if isinstance(err, ssl.SSLError):
        return TransferError(url, f"TLS error: {shown(str(err.reason or err), 80)}", "check the address and try again")
    if isinstance(err, socket.gaierror):
        return TransferError(url, f"host not found ({shown(str(err.strerror), 60)})",
                             "check the address and the network")
    if isinstance(err, http.client.InvalidURL):  # nothing was sent: the same URL can never succeed
        return TransferError(url, f"not a valid URL: {shown(str(err), 80)}", "check the address")
    if isinstance(err, http.client.HTTPException):
        return TransferError(url, f"a broken HTTP answer ({type(err).__name__})", "the server failed: try again later",
                             transient=True)
    text = getattr(err, "strerror", None) or str(err)
    return TransferError(url, shown(f"{type(err).__name__}: {text}" if text else type(err).__name__, 120),
                         "check the address and that the server is running and reachable",
                         transient=isinstance(err, ConnectionError))  # reset, aborted, broken pipe


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


def _exchange(url: str, clock: _Clock, headers: dict[str, str]
              ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse, tuple]:
    """Send GET ``url`` with ``headers`` added and read the status line and headers (a reused connection the
    server has closed meanwhile is replaced once: GET may be repeated)."""
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
            conn.request("GET", target, headers={**_HEADERS, **headers})
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
    """The body of a successful GET (status 200, or 206 to a ``Range`` request): ``url`` (after redirects),
    ``status``, ``length`` (the announced ``Content-Length``, or None), read by :meth:`chunks` or :meth:`read`
    within the transfer's time."""

    def __init__(self, url: str, response: http.client.HTTPResponse, clock: _Clock) -> None:
        self.url, self._response, self._clock = url, response, clock
        self.status = response.status
        self.length = response.length if not response.chunked else None
        self.complete = False

    def header(self, name: str) -> str | None:
        """The value of the answer's header ``name`` (stripped), or None if it was not sent."""
        value = self._response.getheader(name)
        return value.strip() if value is not None else None

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
        if self.length is not None and len(data) < self.length:
            raise _Truncated(self.url, f"the transfer ended early: {len(data)} of the {self.length} bytes announced "
                             "arrived", "the server closed the connection too soon: try again later", transient=True)
        return bytes(data)


@contextmanager
def open_url(url: str, *, allowed_hosts: Collection[str] | None = None, what: str = "URL") -> Iterator[Answer]:
    """GET ``url`` under the module's rule (policy on every hop, clock, no error body read): the
    :class:`Answer` of status 200; a policy refusal is a DownloadError, any other failure a TransferError."""
    with _open(url, _Clock(), allowed_hosts=allowed_hosts, what=what) as answer:
        yield answer


@contextmanager
def _open(url: str, clock: _Clock, *, allowed_hosts: Collection[str] | None, what: str = "URL",
          headers: dict[str, str] | None = None) -> Iterator[Answer]:
    """:func:`open_url` under a given ``clock`` (one deadline for several requests), with ``headers`` added to
    each request; a ``Range`` among them makes ``206`` an answer too."""
    headers = headers or {}
    accepted = (200, 206) if "Range" in headers else (200,)
    check_url(url, allowed_hosts=allowed_hosts, what=what)
    current = url
    for _ in range(MAX_REDIRECTS + 1):
        try:
            conn, response, key = _exchange(current, clock, headers)
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
        if response.status not in accepted:
            conn.close()
            raise _status_error(current, response.status, response.reason or "", response.getheader("Retry-After"))
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


_CONTENT_RANGE = re.compile(r"bytes ([0-9]{1,20})-([0-9]{1,20})/([0-9]{1,20})")


def _strong_etag(answer: Answer) -> str | None:
    """The answer's ``ETag`` if it is a strong one (``"…"``; a weak ``W/"…"`` may not validate a range)."""
    tag = answer.header("ETag")
    return tag if tag is not None and len(tag) <= 200 and tag.startswith('"') and tag.endswith('"') else None


class _Download:
    """One verified download across its attempts: the open ``.part`` file ``out``, the bytes stored in it
    (``written``), the digests of exactly those bytes, the expected size, and the strong ``ETag`` that a
    resumed request must still find (None: none was sent)."""

    def __init__(self, url: str, target: Path, size: int | None, wanted: dict[str, str], out: io.BufferedWriter,
                 bar: Any, allowed_hosts: Collection[str] | None) -> None:
        self.url, self.target, self.name, self.size, self.wanted = url, target, target.name, size, wanted
        self.out, self.bar, self.allowed_hosts = out, bar, allowed_hosts
        self.expected, self.written = size, 0
        self.etag: str | None = None
        self.digests = {name: hashlib.new(name) for name in wanted}
        self.resumable = True  # False once the server answered a range wrongly: each later attempt starts at 0

    def attempt(self, clock: _Clock) -> None:
        """One request: the rest of the file from ``written`` on (when a resume can be trusted) or all of it.
        A wrong answer to a range is followed at once by a request for the whole file."""
        while True:
            headers = self._range()
            try:
                with _open(self.url, clock, allowed_hosts=self.allowed_hosts, headers=headers) as answer:
                    if answer.status == 206 and not self._continues(answer):
                        self.resumable = False
                        continue
                    if answer.status == 200:
                        self._begin(answer)
                    self._receive(answer)
                    return
            except TransferError as err:
                if not (headers and err.status == 416):  # 416: the range is not satisfiable, ask for it all
                    raise
                self.resumable = False

    def _range(self) -> dict[str, str]:
        """The headers asking for the bytes after ``written``; none when nothing is stored yet, the size is
        unknown, the server answered a range wrongly, or nothing could tell a changed file from the old one."""
        if not (self.written and self.expected is not None and self.resumable and (self.wanted or self.etag)):
            return {}
        return {"Range": f"bytes={self.written}-", **({"If-Range": self.etag} if self.etag else {})}

    def _continues(self, answer: Answer) -> bool:
        """Whether a 206 answer holds exactly the bytes after ``written``, to the end of the same file."""
        match = _CONTENT_RANGE.fullmatch(answer.header("Content-Range") or "")
        if match is None:
            return False
        first, last, total = (int(group) for group in match.groups())
        rest = total - first
        return (first == self.written and total == self.expected and last == total - 1
                and answer.length in (None, rest) and (self.etag is None or _strong_etag(answer) == self.etag))

    def _begin(self, answer: Answer) -> None:
        """A whole file (status 200): its size checked against the caller's, the ``.part`` emptied."""
        announced = answer.length
        nothing = "nothing was transferred" if not self.written else "nothing was kept"
        if announced is not None and self.size is not None and announced != self.size:
            raise DownloadError(f"{self.url} announces {announced} bytes for {self.name}, expected {self.size}; "
                                f"{nothing} (a changed file or a wrong mirror)")
        if self.size is None and announced is not None and announced > MAX_UNSIZED_BYTES:
            raise DownloadError(f"{self.url} announces {announced} bytes for {self.name}, more than the "
                                f"{_amount(MAX_UNSIZED_BYTES)} mednf accepts without a known size; {nothing}, "
                                "download it by hand")
        self.out.seek(0)
        self.out.truncate()
        self.written = 0
        self.expected = self.size if self.size is not None else announced
        self.etag = _strong_etag(answer)
        answer.expect(self.expected)
        if self.expected is not None:
            _check_free(self.target.parent, self.expected, self.url)
        self.digests = {name: hashlib.new(name) for name in self.wanted}
        self.bar.reset(total=self.expected)

    def _receive(self, answer: Answer) -> None:
        """Append the body to the ``.part`` file; a body that ends before the expected size is a
        :class:`_Truncated` (a retry may resume it), one that runs past it stops there (never stored)."""
        limit = self.expected if self.expected is not None else MAX_UNSIZED_BYTES
        for block in answer.chunks():
            if self.written + len(block) > limit:
                self.written += len(block)  # longer than expected: reported by verify(), never stored
                return
            self.out.write(block)
            self.written += len(block)
            for digest in self.digests.values():
                digest.update(block)
            self.bar.update(len(block))
        if self.expected is not None and self.written < self.expected:
            raise _Truncated(self.url, f"truncated (size {self.written} bytes, expected {self.expected})",
                             "the server closes the connection early: try again later", transient=True)

    def problem(self) -> str | None:
        """What is wrong with the complete file (size, then each digest), or None."""
        if self.expected is None and self.written > MAX_UNSIZED_BYTES:
            return f"more than the {_amount(MAX_UNSIZED_BYTES)} mednf accepts without a known size"
        if self.expected is not None and self.written > self.expected:
            return f"size more than {self.expected} bytes, expected {self.expected}"
        if self.expected is not None and self.written < self.expected:  # a _Truncated: never reaches here
            return f"been truncated (size {self.written} bytes, expected {self.expected})"
        wrong = [(name, digest.hexdigest()) for name, digest in self.digests.items()
                 if digest.hexdigest() != self.wanted[name]]
        return f"{wrong[0][0]} {wrong[0][1]}, expected {self.wanted[wrong[0][0]]}" if wrong else None

    def given_up(self, failures: list[TransferError], allowed: int, clock: _Clock) -> DownloadError:
        """The one-line error once the last attempt failed: the URL, what happened how many times, the fix."""
        last = failures[-1]
        what = last.reason
        if len(failures) > 1:
            alike = all(err.reason == last.reason for err in failures)
            what += (f", {len(failures)} times" if alike else f"; {len(failures)} attempts") + \
                f" in {clock.elapsed():.0f} s"
        fix = last.fix
        if last.transient and len(failures) > allowed:
            fix += f", or raise MEDNF_HTTP_RETRIES (retries of a download, now {allowed})"
        if isinstance(last, _Truncated):
            return DownloadError(f"{self.name} from {shown(self.url)} has been {what}; nothing was kept, {fix}")
        return DownloadError(f"download of {shown(self.url)} failed after {self.written} of "
                             f"{self.expected or 'unknown'} bytes ({what}); nothing was kept, {fix}")


def _wait(err: TransferError, failures: int, clock: _Clock) -> None:
    """Sleep before the next attempt: the server's Retry-After (capped), else the doubling backoff; never past
    the deadline (the next attempt then stops at once with the deadline's message)."""
    delay = RETRY_DELAY_S * 2.0 ** min(failures - 1, 30)
    if err.retry_after is not None:
        delay = min(err.retry_after, MAX_RETRY_AFTER_S)
    time.sleep(min(delay, clock.left()))


def fetch_verified(url: str, target: Path, *, size: int | None, sha256: str | None = None, md5: str | None = None,
                   progress: bool = True, allowed_hosts: Collection[str] | None = None) -> None:
    """Stream ``url`` to ``target`` via a temporary file; size, sha256 and md5 (those given) must match before
    the rename. ``size=None``: the ``Content-Length`` if sent, else at most :data:`MAX_UNSIZED_BYTES`.
    ``allowed_hosts``: as for :func:`check_url`, on every redirect too. A transfer that breaks is retried
    and resumed as the module's docstring says (**Retries**)."""
    from tqdm.auto import tqdm

    check_url(url, allowed_hosts=allowed_hosts)  # a refused URL, or a wrong setting, before anything is created
    clock, allowed = _Clock(), retries()
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    partial.unlink(missing_ok=True)  # left by a killed process that had this pid, or planted: unlink never follows
    wanted = {name: value for name, value in (("sha256", sha256), ("md5", md5)) if value is not None}
    failures: list[TransferError] = []
    try:
        with os.fdopen(create_new(partial), "wb") as out, tqdm(total=size, unit="B", unit_scale=True,
                                                              desc=f"download {target.name}",
                                                              disable=not progress) as bar:
            job = _Download(url, target, size, wanted, out, bar, allowed_hosts)
            while True:
                try:
                    job.attempt(clock)
                    break
                except TransferError as err:
                    failures.append(err)
                    first_refused = err.reason == _REFUSED and len(failures) == 1  # no server there at all
                    if not err.transient or first_refused or len(failures) > allowed:
                        raise job.given_up(failures, allowed, clock) from None
                    _wait(err, len(failures), clock)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    problem = job.problem()
    if problem:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{target.name} from {url} has {problem}; it was discarded, run again")
    os.replace(partial, target)
