"""Verified download of a registered dataset from Zenodo: a mednf export (one tar) or the paper's official
release (imported with :mod:`mednf.remote.official_import`), both through :func:`mednf.remote.install.install`
(dataset lock, reuse of a concurrent download, verification, one rename).

The record's JSON is checked before anything is fetched (:func:`parse_record`: an object; ``files`` a list of
objects or ``{"entries": {...}}``; each chosen file's size, checksum and link of the right type), and every
file link must pass :func:`mednf.io.http.check_url`: https (or loopback http) on the API's host or on the
mirror in ``$MEDNF_ZENODO_URL``. A ``links.self`` of ``file:///etc/passwd`` is refused, nothing fetched. The
same hosts bound every redirect of the record's and the files' transfers (:mod:`mednf.io.http`: also its
timeouts, size limits and the safe JSON parser). Messages list at most a few of a record's file names.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mednf.errors import DownloadError
from mednf.format.layout import MANIFEST, mednf_home
from mednf.io.archives import ARCHIVE_SUFFIXES, safe_extract, safe_extract_zip
from mednf.io.http import check_url, fetch_verified, get_json, url_host
from mednf.remote.install import fetch_folder, install
from mednf.remote.official import find_release_root
from mednf.remote.official_import import import_official
from mednf.remote.registry import offline_check, pinned_files, registry_entry

DEFAULT_ZENODO = "https://zenodo.org"
_SAFE_FILE_NAME = re.compile(r"^[\w.+-]+$")
_MD5 = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class RecordFile:
    """One file of a Zenodo record, checked: its name, size, md5 (if Zenodo gives one) and allowed link."""

    key: str
    size: int
    md5: str | None
    url: str


@dataclass(frozen=True)
class Record:
    """A Zenodo record as the records API returned it, its shape checked (see :func:`parse_record`)."""

    id: str
    base: str
    api: str
    entries: list[dict[str, Any]]

    def malformed(self, what: str, value: Any, expected: str) -> DownloadError:
        """The one-line error for a ``value`` of the record (shown cut short) that is not ``expected``."""
        text = repr(value)
        shown = text if len(text) <= 60 else text[:57] + "..."
        return DownloadError(f"Zenodo record {self.id} ({self.api}) is malformed: {what} is {type(value).__name__} "
                             f"{shown}, expected {expected}; check that MEDNF_ZENODO_URL points at a Zenodo server, "
                             "or report the record")

    def file(self, meta: dict[str, Any]) -> RecordFile:
        """Size, md5 and link of one file entry, checked; the link must pass the URL policy."""
        key = meta["key"]
        size, checksum, links = meta.get("size"), meta.get("checksum", ""), meta.get("links", {})
        if type(size) is not int or size < 0:
            raise self.malformed(f"the size of {key}", size, "a whole number of bytes")
        if not isinstance(checksum, str):
            raise self.malformed(f"the checksum of {key}", checksum, 'a string like "md5:<32 hex>"')
        if not isinstance(links, dict) or not isinstance(links.get("self", ""), str):
            raise self.malformed(f"the links of {key}", links, 'an object with a "self" URL')
        md5 = checksum.removeprefix("md5:") if checksum.startswith("md5:") else ""
        url = links.get("self") or f"{self.base}/records/{self.id}/files/{urllib.parse.quote(key)}?download=1"
        if any(c.isspace() or not c.isprintable() for c in url):  # the record's fault, not a setting's
            raise self.malformed(f"the link of {key}", url, "a URL (no space or control character)")
        check_url(url, allowed_hosts=zenodo_hosts(self.base), what=f"Zenodo record {self.id}'s link for {key}")
        return RecordFile(key, size, md5 if _MD5.fullmatch(md5) else None, url)


def _names(keys: Iterable[str], shown: int = 8) -> str:
    """A record's file names for a message: sorted, at most ``shown`` of them, each cut short."""
    keys = sorted(keys)
    listed = ", ".join(repr(key)[1:-1][:80] for key in keys[:shown]) or "nothing"
    return listed + (f" and {len(keys) - shown} more" if len(keys) > shown else "")


def zenodo_hosts(base: str) -> set[str]:
    """The hosts a record's file links may point at: the API's and the mirror's (``$MEDNF_ZENODO_URL``)."""
    mirror = os.environ.get("MEDNF_ZENODO_URL")
    return {url_host(base)} | ({url_host(mirror)} if mirror else set())


def parse_record(document: Any, record_id: str, base: str, api: str) -> Record:
    """The record behind ``document`` (both API shapes of ``files``: a list, or ``{"entries": {...}}``),
    every file entry an object with a string ``key``; anything else is one line."""
    record = Record(record_id, base, api, [])
    if not isinstance(document, dict):
        raise record.malformed("the record", document, "a JSON object")
    files = document.get("files", [])
    if isinstance(files, dict):
        files = files.get("entries", {})
        if not isinstance(files, dict):
            raise record.malformed("files.entries", files, "an object of file entries")
        files = list(files.values())
    if not isinstance(files, list):
        raise record.malformed("files", files, "a list of file objects")
    for i, meta in enumerate(files):
        if not isinstance(meta, dict):
            raise record.malformed(f"files[{i}]", meta, "an object")
        key = meta.get("key")
        if not isinstance(key, str) or not key or len(key) > 255 or not key.isprintable():  # names go into messages
            raise record.malformed(f"the key of files[{i}]", key, "a file name")
    return Record(record_id, base, api, files)


def download_zenodo(name: str, *, root: str | Path | None = None, base_url: str | None = None,
                    progress: bool = True) -> Path:
    """Fetch, verify and unpack the registered Zenodo copy of ``name`` into the cache; its path."""
    key, entry = registry_entry(name)
    home = Path(root).expanduser() if root else mednf_home()
    target = home / key
    base = (base_url or os.environ.get("MEDNF_ZENODO_URL") or DEFAULT_ZENODO).rstrip("/")
    record_id = str(entry.get("zenodo_record", ""))
    if not record_id:
        raise DownloadError(f"{key} has no Zenodo record in the registry; try --source hf or build it")
    api = f"{base}/api/records/{record_id}"

    def produce(tmp: Path) -> None:
        offline_check(key, offline_hint(key, entry, base, record_id, target))
        check_url(api, allowed_hosts=None, what="the Zenodo API URL")
        record = parse_record(get_json(api, allowed_hosts=zenodo_hosts(base)), record_id, base, api)
        unpack = _official if entry.get("layout") == "official" else _export
        unpack(key, entry, record, tmp, fetch_folder(target), progress)

    return install(target, produce, what=f"{key} (Zenodo record {record_id})")


def offline_hint(key: str, entry: dict[str, Any], base: str, record_id: str, target: Path) -> str:
    """What to do by hand without the network: which file of the record to download, and the command or
    place that makes it the cached dataset ``target``."""
    pinned = entry.get("files")
    pins: dict[str, Any] = pinned if isinstance(pinned, dict) else {}
    record = f"{base}/records/{record_id}"
    if entry.get("layout") == "official":
        files = " and ".join(f"{record}/files/{name}?download=1" for name in pins) or (
            f"the zip/tar archive(s) named like {key} from {record}")
        return (f"download {files}, unpack it and run `mednf import-official <unpacked folder> --name {key} "
                f"--out {target}`")
    if pins:
        name, pin = next(iter(pins.items()))
        sha = f" (sha256 {pin['sha256']})" if isinstance(pin, dict) and "sha256" in pin else ""
        return (f"download {record}/files/{name}?download=1{sha} and unpack it into {target.parent} "
                f"(`tar -xf {name} -C {target.parent}`)")
    return f"download {key}'s files from {record} into {target}"


def _export(key: str, entry: dict[str, Any], record: Record, tmp: Path, archives: Path, progress: bool) -> None:
    """A mednf export: the registry's files (sha256 + size pinned), fetched to ``archives``, unpacked, moved to
    ``tmp``."""
    pins = pinned_files(key, entry, required=("sha256", "size"))
    if not pins:
        raise DownloadError(f"registry entry [{key}] pins no files; add the entry `mednf export` wrote for it")
    listed = {meta["key"]: meta for meta in record.entries}
    plan = []
    for file_name, pin in pins.items():
        if not _SAFE_FILE_NAME.match(file_name):
            raise DownloadError(f"registry entry [{key}] names a file {file_name!r}; expected a plain file name")
        if file_name not in listed:
            raise DownloadError(f"Zenodo record {record.id} has no file {file_name!r} (it has: "
                                f"{_names(listed)}); the registry and record disagree")
        source = record.file(listed[file_name])
        if source.size != pin["size"]:
            raise DownloadError(f"Zenodo record {record.id} lists {file_name} with {source.size} bytes, the registry "
                                f"pins {pin['size']}; the registry and record disagree, nothing was fetched")
        plan.append((source, pin["sha256"]))
    unpack = tmp.parent / "unpack"
    for source, sha256 in plan:
        fetch_verified(source.url, archives / source.key, size=source.size, sha256=sha256, md5=source.md5,
                       progress=progress, allowed_hosts=zenodo_hosts(record.base))
    for source, _ in plan:
        safe_extract(archives / source.key, unpack)
        (archives / source.key).unlink()
    if not (unpack / key / MANIFEST).is_file():
        raise DownloadError(f"the archive of {key} does not hold {key}/{MANIFEST}; the record is not a mednf export")
    hidden = sorted(p.relative_to(unpack).as_posix() for p in (unpack / key).rglob(".*"))
    if hidden:  # an export holds no dot entry: a .partial or .continue would be build state nobody verified
        raise DownloadError(f"the archive of {key} holds {_names(hidden, 3)}, which no mednf export holds: hidden "
                            "files are never installed; the record is not a plain mednf export, nothing was kept")
    os.replace(unpack / key, tmp)


def official_files(entries: list[dict[str, Any]], name: str, record_id: str,
                   pinned: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The record's archives of sub-dataset ``name``: the registry's pinned file names when it has them,
    else the zip/tar files whose names contain ``name`` (case-insensitively)."""
    held = _names(meta["key"] for meta in entries)
    if pinned:
        by_key = {meta["key"]: meta for meta in entries}
        absent = [k for k in pinned if k not in by_key]
        if absent:
            raise DownloadError(f"Zenodo record {record_id} has no file {absent[0]!r} (it holds: {held}); the "
                                "registry and the record disagree")
        return [by_key[k] for k in pinned]
    chosen = [meta for meta in entries if name.lower() in meta["key"].lower()
              and meta["key"].lower().endswith(ARCHIVE_SUFFIXES)]
    if not chosen:
        raise DownloadError(f"Zenodo record {record_id} has no zip/tar archive named like {name!r} (it holds: "
                            f"{held}); download the right file by hand and run `mednf import-official`")
    return chosen


def _official(key: str, entry: dict[str, Any], record: Record, tmp: Path, archives: Path, progress: bool) -> None:
    """The paper's own release: fetch the sub-dataset's archive(s) to ``archives``, check Zenodo's md5, unpack
    safely and import with the allow-listed reader of :mod:`mednf.remote.official_import` into ``tmp``."""
    pinned = pinned_files(key, entry)
    plan = []
    for meta in official_files(record.entries, key, record.id, pinned):
        file_name = meta["key"]
        if not _SAFE_FILE_NAME.match(file_name):
            raise DownloadError(f"Zenodo record {record.id} lists a file named {file_name!r}; refusing a name "
                                "that is not a plain file name")
        if not file_name.lower().endswith(ARCHIVE_SUFFIXES):
            raise DownloadError(f"{file_name} of Zenodo record {record.id} is not a zip or tar archive; "
                                "download it by hand and run `mednf import-official`")
        source = record.file(meta)
        if source.md5 is None:
            raise DownloadError(f"Zenodo record {record.id} lists {file_name} without an md5 checksum; it cannot be "
                                "verified, refusing it")
        pin = pinned.get(file_name, {})
        if pin and (pin.get("md5", source.md5) != source.md5 or pin.get("size", source.size) != source.size):
            raise DownloadError(f"Zenodo record {record.id} now lists {file_name} with md5 {source.md5} and size "
                                f"{source.size}; the registry pins md5 {pin.get('md5')} and size {pin.get('size')} "
                                "(a changed record or mirror), refusing it")
        plan.append((source, bool(pin)))
    release = tmp.parent / "release"
    release.mkdir(parents=True)
    fetched: dict[str, dict[str, Any]] = {}
    for source, is_pinned in plan:
        archive = archives / source.key
        fetch_verified(source.url, archive, size=source.size, md5=source.md5, progress=progress,
                       allowed_hosts=zenodo_hosts(record.base))
        if source.key.lower().endswith(".zip"):
            safe_extract_zip(archive, release)
        else:
            safe_extract(archive, release, allow_torch_files=True)
        archive.unlink()
        fetched[source.key] = {"md5": source.md5, "size": source.size, "url": source.url,
                               "pinned_by_registry": is_pinned}
    import_official(find_release_root(release), key, tmp, progress=progress,
                    origin={"zenodo_record": record.id, "zenodo": record.base, "files": fetched})
