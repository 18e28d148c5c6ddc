"""The one verified HTTP transfer of mednf (:func:`fetch_verified`), small JSON GETs (:func:`get_json`) and
the URL policy both apply (:func:`check_url`). Library: urllib (stdlib), with timeouts.

**URL policy**: only ``https://`` URLs are fetched, plus ``http://`` to the loopback host (127.0.0.1,
``::1``, ``localhost``: the test servers). ``file://``, ``ftp://``, ``data:`` and every other scheme are
refused, and so is a redirect to one. :func:`check_url` with ``allowed_hosts`` also refuses other hosts
(Zenodo: the record's API host and the mirror in ``$MEDNF_ZENODO_URL``); a redirect may change the host
(storage back ends), never the scheme policy.

**Transfer** (:func:`fetch_verified`): streamed to ``.<name>.<pid>.part`` beside the target, then size,
sha256 and md5 (those given) are checked, then it is renamed. The expected size is the caller's (a
``Content-Length`` that disagrees is refused before any byte is stored) or, with ``size=None``, the
``Content-Length`` if sent; without either, at most :data:`MAX_UNSIZED_BYTES` are accepted. A transfer
that does not fit on the disk is refused before it starts.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Collection
from pathlib import Path
from typing import Any

from mednf.errors import DownloadError

TIMEOUT_S = 60
CHUNK = 1 << 20
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})
MAX_UNSIZED_BYTES = 64 << 30  # no size known at all: larger than any MedMNIST file (pathmnist_224 ≈ 16 GB)
MAX_JSON_BYTES = 64 << 20  # a Zenodo record listing thousands of files is a few MB
_NET_ERRORS = (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError)


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


def check_url(url: str, *, allowed_hosts: Collection[str] | None, what: str = "URL") -> str:
    """``url`` if mednf may fetch it, else a one-line :class:`DownloadError`.

    Allowed: ``https://``, or ``http://`` to 127.0.0.1 / ``::1`` / ``localhost``. ``allowed_hosts``
    (values of :func:`url_host`, e.g. ``{"zenodo.org"}``) limits the host too; ``None`` checks the
    scheme only. ``what`` names the URL in the message (e.g. ``"Zenodo record 1's link for X.tar"``)."""
    parts = urllib.parse.urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if not (scheme == "https" and host) and not (scheme == "http" and host in LOOPBACK_HOSTS):
        raise DownloadError(f"{what} {url!r} is refused: mednf fetches only https:// URLs (http:// only from "
                            "127.0.0.1, ::1 or localhost); use an https:// address, or fix the mirror you set "
                            "(MEDNF_ZENODO_URL, MEDNF_MEDMNIST_URL)")
    if allowed_hosts is not None and url_host(url) not in allowed_hosts:
        raise DownloadError(f"{what} {url!r} is refused: its host {url_host(url)} is not "
                            f"{' or '.join(sorted(allowed_hosts)) or 'an allowed host'}; if that server is a "
                            "trusted mirror, set MEDNF_ZENODO_URL to it")
    return url


class _PolicyRedirect(urllib.request.HTTPRedirectHandler):
    """Follow a redirect only to a URL the scheme policy allows (never https → http, ftp, file)."""

    def redirect_request(self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any,
                         newurl: str) -> urllib.request.Request | None:
        try:
            check_url(newurl, allowed_hosts=None, what=f"the redirect of {req.full_url} to")
        except DownloadError:
            fp.close()
            raise
        return super().redirect_request(req, fp, code, msg, headers, newurl)


_OPENER = urllib.request.build_opener(_PolicyRedirect)


def _open(url: str) -> Any:
    """The response to a GET of ``url`` (scheme policy checked, redirects too), with the timeout."""
    check_url(url, allowed_hosts=None)
    return _OPENER.open(url, timeout=TIMEOUT_S)


def _reason(err: BaseException) -> str:
    if isinstance(err, urllib.error.HTTPError):
        return f"HTTP {err.code} {err.reason}"
    return str(getattr(err, "reason", err))


def get_json(url: str) -> Any:
    """The JSON document at ``url`` (at most :data:`MAX_JSON_BYTES`); a one-line error if it is not JSON."""
    try:
        with _open(url) as response:
            body = response.read(MAX_JSON_BYTES + 1)
    except _NET_ERRORS as err:
        raise DownloadError(f"could not read {url} ({_reason(err)}); check the network "
                            "(or MEDNF_ZENODO_URL) and try again") from None
    if len(body) > MAX_JSON_BYTES:
        raise DownloadError(f"{url} sent more than {MAX_JSON_BYTES >> 20} MiB where a JSON record was expected; "
                            "check that MEDNF_ZENODO_URL points at a Zenodo server")
    try:
        return json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        start = body[:40].decode("utf-8", "replace").strip()
        raise DownloadError(f"{url} did not send JSON (it starts with {start!r}); check that MEDNF_ZENODO_URL "
                            "points at a Zenodo server, or try again later") from None


def _amount(n: int) -> str:
    return f"{n / 2**30:g} GiB" if n >= 1 << 30 else f"{n} bytes"


def _content_length(response: Any) -> int | None:
    value = response.headers.get("Content-Length")
    try:
        return int(value) if value is not None and int(value) >= 0 else None
    except ValueError:
        return None


def _check_free(folder: Path, size: int, url: str) -> None:
    free = shutil.disk_usage(folder).free
    if size > free:
        raise DownloadError(f"{url} has {size / 2**30:.2f} GiB, {folder} has {free / 2**30:.2f} GiB free; free "
                            "space or use another --root")


def fetch_verified(url: str, target: Path, *, size: int | None, sha256: str | None = None, md5: str | None = None,
                   progress: bool = True) -> None:
    """Stream ``url`` to ``target`` via a temporary file; size, sha256 and md5 (those given) must match before
    the rename. ``size=None``: the ``Content-Length`` if sent, else at most :data:`MAX_UNSIZED_BYTES`."""
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    wanted = {name: value for name, value in (("sha256", sha256), ("md5", md5)) if value is not None}
    digests = {name: hashlib.new(name) for name in wanted}
    expected, written = size, 0
    try:
        with _open(url) as response:
            announced = _content_length(response)
            if announced is not None and size is not None and announced != size:
                raise DownloadError(f"{url} announces {announced} bytes for {target.name}, expected {size}; nothing "
                                    "was transferred (a changed file or a wrong mirror)")
            if size is None and announced is not None and announced > MAX_UNSIZED_BYTES:
                raise DownloadError(f"{url} announces {announced} bytes for {target.name}, more than the "
                                    f"{_amount(MAX_UNSIZED_BYTES)} mednf accepts without a known size; nothing was "
                                    "transferred, download it by hand")
            expected = size if size is not None else announced
            if expected is not None:
                _check_free(target.parent, expected, url)
            limit = expected if expected is not None else MAX_UNSIZED_BYTES
            with open(partial, "wb") as out, tqdm(total=expected, unit="B", unit_scale=True,
                                                  desc=f"download {target.name}", disable=not progress) as bar:
                while block := response.read(CHUNK):
                    written += len(block)
                    if written > limit:
                        break  # longer than expected: reported below, never stored
                    out.write(block)
                    for digest in digests.values():
                        digest.update(block)
                    bar.update(len(block))
    except _NET_ERRORS as err:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} failed after {written} of {expected or 'unknown'} bytes "
                            f"({_reason(err)}); nothing was kept, run again") from None
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
