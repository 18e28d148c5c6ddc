"""Whole-file reads of a published dataset folder by URL, each verified against the manifest as it arrives.

:class:`RemoteFolder` turns ``https://host/path/DermaNF`` (or ``hf://datasets/ORG/NAME``, or ``s3://``, ``gs://``,
``az://`` where the user has installed that fsspec filesystem: s3fs, gcsfs, adlfs) and a relative path into bytes:

- :meth:`~RemoteFolder.fetch` GETs the **whole file** (no ``Range`` request), at most the manifest's size plus
  one byte, then checks its size and sha256 against the manifest's entry. A file the manifest declares
  larger than half the available memory is refused before it is asked for (the manifest's own check already
  refuses sizes beyond what a dataset of its shape can hold). Wrong bytes are a one-line
  FormatError naming the URL; nothing unverified is returned. An HTTP server therefore needs only plain
  ``GET`` of static files (``python -m http.server`` will do); ``Range`` and ``HEAD`` are never required.
- ``http(s)://`` is read by :func:`mednf.io.http.read_bytes`, the rule of every network read of mednf: the
  URL policy on the address and on every redirect (``https://`` anywhere, ``http://`` only to loopback hosts,
  never from ``https://`` to ``http://``), the stall timeout and total deadline (``$MEDNF_HTTP_TIMEOUT``,
  ``$MEDNF_HTTP_DEADLINE``), and a size limit read incrementally (``mednf.json``: :data:`MAX_MANIFEST_BYTES`).
- ``hf://datasets/ORG/NAME[@REVISION][/path]`` is read the same way, from the Hub's file URLs
  ``{endpoint}/datasets/ORG/NAME/resolve/{REVISION or main}/path`` (:func:`hf_resolve_url`; the endpoint is
  ``$MEDNF_HF_ENDPOINT``, else ``$HF_ENDPOINT``, else https://huggingface.co: :func:`hf_endpoint`). No token
  is sent: only public repositories are read this way (a 401/403 says how to read a private one).
- Object stores (:data:`OBJECT_STORES`) are read through fsspec, by a byte range that ends at the same limit;
  their SDKs' own timeouts apply. Every other scheme (``ftp://``, ``file://``, ``gopher://``, …) is refused
  before anything is fetched.
- Network problems are one line naming the URL and the fix: 404 (NotFoundError for the manifest, a
  FormatError for a file the manifest lists: the copy is incomplete), other HTTP statuses, timeouts and
  refused connections (DownloadError).
- With ``$MEDNF_REMOTE_CACHE=disk`` verified files are also kept under ``$MEDNF_HOME/.remote/``, named by
  their sha256 and hashed again when read back (a damaged cached file is fetched again). Delete the folder
  to free the space; nothing else removes it.

Why mednf's own transfer for http(s) rather than fsspec/aiohttp: aiohttp follows redirects itself, has no
total deadline, and fsspec's ``cat_file`` reads a whole answer before anything can check its size; one rule
in :mod:`mednf.io.http` covers downloads and lazy reads alike. Concurrency comes from zarr's threads
(:mod:`mednf.remote.zarr_store`), connections are kept alive per host. fsspec filesystems (object stores) are
made per process: fsspec's async filesystems must not be used across a fork (DataLoader workers).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from mednf.engine.memory import available_host_memory, format_bytes
from mednf.errors import ConfigError, DownloadError, FormatError, NotFoundError
from mednf.format.layout import MANIFEST, mednf_home
from mednf.format.manifest import FileEntry, Manifest
from mednf.io import http, jsonsafe
from mednf.optional import optional_import

MAX_MANIFEST_BYTES = 64 << 20  # the manifest of the largest MedNF set (ChestNF: ~1,300 files) is ~300 KB
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
OBJECT_STORES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
                 "abfss": "adlfs"}  # scheme → the package of its fsspec filesystem
DEFAULT_HF_ENDPOINT = "https://huggingface.co"
HF_ENDPOINT_SETTINGS = ("MEDNF_HF_ENDPOINT", "HF_ENDPOINT")  # the first one set is the Hub mednf talks to
_HF_URL = re.compile(r"hf://datasets/(?P<repo>[\w.-]+/[\w.-]+)(?:@(?P<rev>refs/(?:pr|convert)/[^/]+|[^/]+))?"
                     r"(?P<path>/.*)?", re.IGNORECASE)
_HF_FORM = "hf://datasets/ORG/NAME[@REVISION][/folder]"


def is_url(name_or_path: Any) -> bool:
    """True for ``scheme://…`` strings (a remote dataset folder), False for paths and dataset names."""
    return isinstance(name_or_path, str) and bool(_URL.match(name_or_path))


def hf_endpoint() -> str:
    """The Hugging Face Hub mednf talks to (no trailing ``/``): ``$MEDNF_HF_ENDPOINT``, else ``$HF_ENDPOINT``,
    else :data:`DEFAULT_HF_ENDPOINT`."""
    for name in HF_ENDPOINT_SETTINGS:
        value = os.environ.get(name, "").strip()
        if value:
            return value.rstrip("/")
    return DEFAULT_HF_ENDPOINT


def check_hf_endpoint(endpoint: str, purpose: str) -> str:
    """``endpoint`` if mednf may talk to it (:func:`mednf.io.http.check_url`'s policy: https://, or http:// to
    a loopback host), else a one-line ConfigError naming the variable it came from; ``purpose``: what it is for
    (e.g. ``"reading hf:// URLs"``)."""
    try:
        http.check_url(endpoint, allowed_hosts=None, what="the Hub endpoint")
    except DownloadError:
        setting = next((name for name in HF_ENDPOINT_SETTINGS if os.environ.get(name, "").strip()), None)
        raise ConfigError(f"the Hub endpoint {http.shown(endpoint)!r}" + (f" ({setting})" if setting else "")
                          + f" is refused for {purpose}: mednf talks only to https:// (http:// only to 127.0.0.1, "
                          f"::1 or localhost); fix {setting or 'it'}") from None
    return endpoint


def hf_resolve_url(url: str) -> str:
    """The Hub URL that serves the folder ``hf://datasets/ORG/NAME[@REVISION][/path]``:
    ``{endpoint}/datasets/ORG/NAME/resolve/{REVISION or main}[/path]`` (a ConfigError for any other ``hf://``
    form, or an endpoint the URL policy refuses)."""
    match = _HF_URL.fullmatch(url)
    if match is None or ".." in match["repo"].split("/"):
        raise ConfigError(f"dataset URL {http.shown(url)!r} is not one mednf reads: expected {_HF_FORM} (a dataset "
                          "repository of the Hugging Face Hub)")
    revision = urllib.parse.quote(urllib.parse.unquote(match["rev"] or "main"), safe="")
    endpoint = check_hf_endpoint(hf_endpoint(), "reading hf:// URLs")
    return f"{endpoint}/datasets/{match['repo']}/resolve/{revision}{(match['path'] or '').rstrip('/')}"


def check_folder_url(url: str) -> str:
    """The scheme of dataset URL ``url`` if mednf reads it (see the module docstring), else a ConfigError."""
    protocol = url.split("://", 1)[0].lower()
    if protocol == "hf":
        url = hf_resolve_url(url)
    if protocol in ("http", "https", "hf"):
        try:
            http.check_url(url, allowed_hosts=None, what="dataset URL")
        except DownloadError:
            raise ConfigError(f"dataset URL {http.shown(url)!r} is refused: mednf reads http:// only from 127.0.0.1, "
                              "::1 or localhost (nothing would protect the manifest in transit); "
                              "use https://") from None
    elif protocol not in OBJECT_STORES:
        stores = ", ".join(f"{scheme}://" for scheme in OBJECT_STORES)
        raise ConfigError(f"dataset URL {http.shown(url)!r} is refused: mednf reads https:// (http:// only from "
                          f"127.0.0.1, ::1 or localhost), {_HF_FORM} and the object stores {stores}; use one of those")
    return protocol


class _TooLarge(Exception):
    """An http(s) answer longer than the limit of :meth:`RemoteFolder._get` (never read past it)."""


class RemoteFolder:
    """A dataset folder at ``url``: verified whole-file reads (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.protocol = check_folder_url(self.url)
        # the http(s) address its files are read from (None: an object store, read through fsspec)
        self.http_base = hf_resolve_url(self.url) if self.protocol == "hf" else (
            self.url if self.protocol in ("http", "https") else None)
        self._fs: Any = None
        self._path = ""
        self._pid = -1
        self.disk_cache = mednf_home() / ".remote" if os.environ.get("MEDNF_REMOTE_CACHE") == "disk" else None
        if self.protocol in OBJECT_STORES:
            self.filesystem()  # a missing fsspec filesystem is reported now, not at the first read

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers make their own filesystem
        return {**self.__dict__, "_fs": None, "_pid": -1}

    def filesystem(self) -> tuple[Any, str]:
        """``(fsspec filesystem, root path in it)`` of an object store URL, for this process."""
        if self._pid != os.getpid():
            fsspec = optional_import("fsspec", f"reading {self.protocol}:// URLs")
            try:
                self._fs, self._path = fsspec.core.url_to_fs(self.url)
            except ImportError:
                package = OBJECT_STORES[self.protocol]
                raise ConfigError(f"reading {self.protocol}:// URLs needs the Python package {package}: "
                                  f"pip install {package}") from None
            except ValueError as err:  # fsspec: protocol not known
                raise ConfigError(f"dataset URL {http.shown(self.url)!r} is invalid ({http.shown(str(err), 120)}); "
                                  "expected https://, s3://, gs:// or another object store fsspec knows") from None
            self._pid = os.getpid()
        return self._fs, self._path

    def file_url(self, rel: str) -> str:
        """The URL of ``rel`` in this folder."""
        return f"{self.url}/{rel}"

    # ------------------------------------------------------------------ reads
    def manifest_bytes(self) -> bytes:
        """``mednf.json`` as served (the root of trust: every other file is checked against it)."""
        try:
            data = self._get(MANIFEST, MAX_MANIFEST_BYTES, expected=None)
        except FileNotFoundError:
            raise NotFoundError(f"no MedNF dataset at {self.url}: {self.file_url(MANIFEST)} does not exist (HTTP "
                                f"404); give the address of the folder that holds {MANIFEST}") from None
        except _TooLarge:
            data = None
        if data is None or len(data) > MAX_MANIFEST_BYTES:
            raise FormatError(f"{self.file_url(MANIFEST)} has more than {MAX_MANIFEST_BYTES} bytes, more than a MedNF "
                              "manifest; check the address")
        return data

    def fetch(self, rel: str, entry: FileEntry) -> bytes:
        """The bytes of ``rel``, whose size and sha256 equal the manifest's ``entry`` (else FormatError)."""
        cached = self._from_disk(entry)
        if cached is not None:
            return cached
        room = available_host_memory()
        if entry.size > room // 2:  # a whole file is held in memory while it is checked
            raise DownloadError(f"{self.file_url(rel)} has {format_bytes(entry.size)} (the manifest says), more "
                                f"than half the memory available ({format_bytes(room)}); download the dataset "
                                "(mednf download) or read it on a machine with more memory")
        try:
            data = self._get(rel, entry.size, expected=entry.size)
        except FileNotFoundError:
            raise FormatError(f"{self.file_url(rel)} does not exist on the server (HTTP 404) although the manifest "
                              "lists it: the published copy is incomplete; tell its publisher, or use another "
                              "copy") from None
        except _TooLarge:
            data = None
        url = self.file_url(rel)
        if data is None or len(data) != entry.size:
            sent = f"more than {entry.size}" if data is None or len(data) > entry.size else str(len(data))
            raise FormatError(f"{url} sent {sent} bytes, the manifest says {entry.size}: the file on the server "
                              "was changed or damaged; nothing of it was used (reload, or use another copy)")
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.sha256:
            raise FormatError(f"{url} has sha256 {digest[:16]}…, the manifest says {entry.sha256[:16]}…: the file on "
                              "the server was changed or damaged; nothing of it was used (reload, or use another "
                              "copy)")
        self._to_disk(entry, data)
        return data

    def _get(self, rel: str, limit: int, *, expected: int | None) -> bytes:
        """The file ``rel`` (``expected`` bytes if known): at most ``limit`` bytes over http(s) (_TooLarge
        beyond), at most ``limit + 1`` from an object store; FileNotFoundError passes through, every other
        failure is a DownloadError."""
        url = self.file_url(rel)
        if self.http_base is not None:
            address = f"{self.http_base}/{rel}"
            try:
                return http.read_bytes(address, limit=limit, expected=expected)
            except http.TransferError as err:
                if err.status == 404:
                    raise FileNotFoundError(url) from None
                if err.too_large:
                    raise _TooLarge from None
                if self.protocol == "hf" and err.status in (401, 403):
                    raise DownloadError(f"could not read {http.shown(url)} ({err.reason} from {http.shown(address)}): "
                                        "the repository is private or does not exist, and private repositories are "
                                        "not read through hf:// (no token is sent); check the name, or download a "
                                        "copy (`hf download ORG/NAME --repo-type dataset --local-dir DIR`, or "
                                        "`mednf download NAME --source hf` for a registered dataset) and open "
                                        "that") from None
                raise DownloadError(f"could not read {http.shown(address)} ({err.reason}); {err.fix}") from None
        fs, root = self.filesystem()
        try:
            return fs.cat_file(f"{root}/{rel}", start=0, end=limit + 1)  # a range: a larger object is not read
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 (botocore, google-auth, adlfs: each raises its own types)
            raise DownloadError(f"could not read {http.shown(url)} ({_reason(err)}); {_fix(err)}") from None

    # ------------------------------------------------------------------ disk cache (opt-in)
    def _cached_path(self, entry: FileEntry) -> Path | None:
        if self.disk_cache is None or not re.fullmatch(r"[0-9a-f]{64}", entry.sha256):
            return None
        return self.disk_cache / entry.sha256[:2] / entry.sha256

    def _from_disk(self, entry: FileEntry) -> bytes | None:
        path = self._cached_path(entry)
        try:
            data = path.read_bytes() if path is not None else None
        except OSError:
            return None
        if data is None or len(data) != entry.size or hashlib.sha256(data).hexdigest() != entry.sha256:
            return None  # absent or damaged: fetched again (and the cached file replaced)
        return data

    def _to_disk(self, entry: FileEntry, data: bytes) -> None:
        path = self._cached_path(entry)
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp",
                                             delete=False) as fh:
                fh.write(data)
            os.replace(fh.name, path)  # several threads may store the same file: each rename is whole
        except OSError:
            pass  # a full or read-only cache only costs a fetch next time


def _refused(err: BaseException) -> bool:
    return isinstance(err, ConnectionRefusedError) or isinstance(getattr(err, "os_error", None), ConnectionRefusedError)


def _timeout(err: BaseException) -> bool:
    return isinstance(err, TimeoutError) or "Timeout" in type(err).__name__


def _reason(err: BaseException) -> str:
    """What went wrong in an object store's SDK, in a few words (its message's first line, cut short)."""
    if _refused(err):
        return "connection refused"
    if _timeout(err):
        return "no answer in time"
    text = str(err).splitlines()[0] if str(err) else ""
    return http.shown(f"{type(err).__name__}: {text}" if text else type(err).__name__, 160)


def _fix(err: BaseException) -> str:
    if isinstance(err, PermissionError):
        return "the server refused access: check the address and your credentials for it"
    if _timeout(err):
        return "the server is slow or unreachable: try again later"
    if _refused(err) or isinstance(err, ConnectionError):
        return "check the address and that the server is running and reachable"
    return "check the address and the network, and try again"


def remote_manifest(folder: RemoteFolder) -> Manifest:
    """The parsed and checked manifest at ``folder``."""
    where = folder.file_url(MANIFEST)
    data = jsonsafe.loads(folder.manifest_bytes(), where, "check that the address is a MedNF dataset folder")
    return Manifest.from_json(data, where)
