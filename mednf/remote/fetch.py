"""Whole-file reads of a published dataset folder by URL, each verified against the manifest as it arrives.

:class:`RemoteFolder` turns ``https://host/path/DermaNF`` (or ``s3://``, ``gs://``, … where the user has
installed that fsspec filesystem: s3fs, gcsfs, adlfs) and a relative path into bytes:

- :meth:`~RemoteFolder.fetch` GETs the **whole file** (fsspec ``cat_file``; no ``Range`` request), then
  checks its size and sha256 against the manifest's entry. Wrong bytes are a one-line FormatError naming the
  URL; nothing unverified is returned. An HTTP server therefore needs only plain ``GET`` of static files
  (``python -m http.server`` will do); ``Range`` and ``HEAD`` are never required.
- Network problems are one line naming the URL and the fix: 404 (NotFoundError for the manifest, a
  FormatError for a file the manifest lists: the copy is incomplete), other HTTP statuses, timeouts (no
  data for :data:`mednf.io.http.TIMEOUT_S` seconds) and refused connections (DownloadError).
- ``http://`` only to loopback hosts, as for downloads (:mod:`mednf.io.http`); ``https://`` anywhere.
- With ``$MEDNF_REMOTE_CACHE=disk`` verified files are also kept under ``$MEDNF_HOME/.remote/``, named by
  their sha256 and hashed again when read back (a damaged cached file is fetched again). Delete the folder
  to free the space; nothing else removes it.

Library: fsspec, because one call (``cat_file``) then reads http(s) (through aiohttp) and every object store
that has an fsspec filesystem, with connection pooling and concurrent use from threads. The filesystem
object is made per process: fsspec's async filesystems must not be used across a fork (DataLoader workers).
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from mednf.errors import ConfigError, DownloadError, FormatError, NotFoundError
from mednf.format.layout import MANIFEST, mednf_home
from mednf.format.manifest import FileEntry
from mednf.io import http
from mednf.io.http import LOOPBACK_HOSTS
from mednf.optional import optional_import

MAX_MANIFEST_BYTES = 64 << 20  # the manifest of the largest MedNF set (ChestNF: ~1,300 files) is ~300 KB
_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_PACKAGES = {"s3": "s3fs", "s3a": "s3fs", "gs": "gcsfs", "gcs": "gcsfs", "az": "adlfs", "abfs": "adlfs",
             "abfss": "adlfs", "http": "aiohttp", "https": "aiohttp", "hf": "huggingface_hub"}


def is_url(name_or_path: Any) -> bool:
    """True for ``scheme://…`` strings (a remote dataset folder), False for paths and dataset names."""
    return isinstance(name_or_path, str) and bool(_URL.match(name_or_path))


class RemoteFolder:
    """A dataset folder at ``url``: verified whole-file reads (see the module docstring)."""

    def __init__(self, url: str) -> None:
        self.url = url.rstrip("/")
        self.protocol = self.url.split("://", 1)[0].lower()
        if self.protocol == "http":
            if (urllib.parse.urlsplit(self.url).hostname or "").lower() not in LOOPBACK_HOSTS:
                raise ConfigError(f"dataset URL {self.url!r} is refused: mednf reads http:// only from 127.0.0.1, ::1 "
                                  "or localhost (nothing would protect the manifest in transit); use https://")
        self._fs: Any = None
        self._path = ""
        self._pid = -1
        self.disk_cache = mednf_home() / ".remote" if os.environ.get("MEDNF_REMOTE_CACHE") == "disk" else None
        self.filesystem()  # a missing fsspec filesystem is reported now, not at the first read

    def __getstate__(self) -> dict[str, Any]:  # DataLoader workers make their own filesystem
        return {**self.__dict__, "_fs": None, "_pid": -1}

    def filesystem(self) -> tuple[Any, str]:
        """``(fsspec filesystem, root path in it)`` for this process."""
        if self._pid != os.getpid():
            fsspec = optional_import("fsspec", f"reading {self.protocol}:// URLs")
            options: dict[str, Any] = {}
            if self.protocol in ("http", "https"):
                aiohttp = optional_import("aiohttp", f"reading {self.protocol}:// URLs")
                # no data for TIMEOUT_S is a timeout; a long transfer that keeps moving is not
                options["client_kwargs"] = {"timeout": aiohttp.ClientTimeout(
                    total=None, sock_connect=http.TIMEOUT_S, sock_read=http.TIMEOUT_S)}
            try:
                self._fs, self._path = fsspec.core.url_to_fs(self.url, **options)
            except ImportError:
                package = _PACKAGES.get(self.protocol) or fsspec.registry.known_implementations.get(
                    self.protocol, {}).get("err", "the fsspec filesystem for it")
                raise ConfigError(f"reading {self.protocol}:// URLs needs the Python package {package}: "
                                  f"pip install {package}") from None
            except ValueError as err:  # fsspec: protocol not known
                raise ConfigError(f"dataset URL {self.url!r} is invalid ({err}); expected https://, s3://, gs://, "
                                  "or another protocol fsspec knows") from None
            self._pid = os.getpid()
        return self._fs, self._path

    def file_url(self, rel: str) -> str:
        return f"{self.url}/{rel}"

    # ------------------------------------------------------------------ reads
    def manifest_bytes(self) -> bytes:
        """``mednf.json`` as served (the root of trust: every other file is checked against it)."""
        try:
            data = self._get(MANIFEST)
        except FileNotFoundError:
            raise NotFoundError(f"no MedNF dataset at {self.url}: {self.file_url(MANIFEST)} does not exist (HTTP "
                                f"404); give the address of the folder that holds {MANIFEST}") from None
        if len(data) > MAX_MANIFEST_BYTES:
            raise FormatError(f"{self.file_url(MANIFEST)} has {len(data)} bytes, more than a MedNF manifest; "
                              "check the address")
        return data

    def fetch(self, rel: str, entry: FileEntry) -> bytes:
        """The bytes of ``rel``, whose size and sha256 equal the manifest's ``entry`` (else FormatError)."""
        cached = self._from_disk(entry)
        if cached is not None:
            return cached
        try:
            data = self._get(rel)
        except FileNotFoundError:
            raise FormatError(f"{self.file_url(rel)} does not exist on the server (HTTP 404) although the manifest "
                              "lists it: the published copy is incomplete; tell its publisher, or use another "
                              "copy") from None
        url = self.file_url(rel)
        if len(data) != entry.size:
            raise FormatError(f"{url} sent {len(data)} bytes, the manifest says {entry.size}: the file on the server "
                              "was changed or damaged; nothing of it was used (reload, or use another copy)")
        digest = hashlib.sha256(data).hexdigest()
        if digest != entry.sha256:
            raise FormatError(f"{url} has sha256 {digest[:16]}…, the manifest says {entry.sha256[:16]}…: the file on "
                              "the server was changed or damaged; nothing of it was used (reload, or use another "
                              "copy)")
        self._to_disk(entry, data)
        return data

    def _get(self, rel: str) -> bytes:
        """The whole file ``rel``; FileNotFoundError passes through, every other failure is a DownloadError."""
        fs, root = self.filesystem()
        url = self.file_url(rel)
        try:
            return fs.cat_file(f"{root}/{rel}")
        except FileNotFoundError:
            raise
        except Exception as err:  # noqa: BLE001 (aiohttp, botocore, google-auth: each raises its own types)
            raise DownloadError(f"could not read {url} ({_reason(err)}); {_fix(err)}") from None

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


def _reason(err: BaseException) -> str:
    if _refused(err):
        return "connection refused"
    status = getattr(err, "status", None)
    if isinstance(status, int):
        return f"HTTP {status} {getattr(err, 'message', '') or ''}".strip()
    if isinstance(err, TimeoutError) or "Timeout" in type(err).__name__:
        return f"no answer for {http.TIMEOUT_S} s"  # read now: a setting that may change
    text = str(err).splitlines()[0][:160] if str(err) else ""
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


def _fix(err: BaseException) -> str:
    status = getattr(err, "status", None)
    if status in (401, 403) or isinstance(err, PermissionError):
        return "the server refused access: check the address and your credentials for it"
    if isinstance(status, int) and status >= 500:
        return "the server failed: try again later"
    if isinstance(err, TimeoutError) or "Timeout" in type(err).__name__:
        return "the server is slow or unreachable: try again later"
    if _refused(err):
        return "no server listens at that address: check the URL, or start the server"
    if "connect" in type(err).__name__.lower() or isinstance(err, ConnectionError):
        return "check the address and that the server is running and reachable"
    return "check the address and the network, and try again"
