"""Verified download of a registered dataset from Zenodo: a mednf export (one tar) or the paper's official
release (imported with :mod:`mednf.remote.official_import`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

from mednf.errors import DownloadError
from mednf.format.store import MANIFEST, mednf_home, verify_dataset
from mednf.io.archives import ARCHIVE_SUFFIXES, safe_extract, safe_extract_zip
from mednf.io.http import fetch_verified, get_json
from mednf.remote.registry import check_target, offline_check, registry_entry

DEFAULT_ZENODO = "https://zenodo.org"




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
    check_target(target)
    offline_check(key, api, target)
    record = get_json(api)
    if entry.get("layout") == "official":
        return _download_official(key, entry, record, record_id, base, home, target, progress)
    listed = {f["key"]: f for f in record.get("files", [])}
    downloads = home / ".downloads"
    work = home / f".{key}.unpack-{os.getpid()}"
    try:
        for file_name, expected in entry["files"].items():
            if file_name not in listed:
                raise DownloadError(f"Zenodo record {record_id} has no file {file_name!r} (it has: "
                                    f"{', '.join(sorted(listed)) or 'nothing'}); the registry and record disagree")
            meta = listed[file_name]
            url = meta.get("links", {}).get("self") or f"{base}/records/{record_id}/files/{file_name}?download=1"
            md5 = meta.get("checksum", "").removeprefix("md5:") or None
            fetch_verified(url, downloads / file_name, size=int(expected["size"]), sha256=expected["sha256"],
                           md5=md5, progress=progress)
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for file_name in entry["files"]:
            safe_extract(downloads / file_name, work)
        unpacked = work / key
        if not (unpacked / MANIFEST).is_file():
            raise DownloadError(f"the archive of {key} does not hold {key}/{MANIFEST}; the record is not a mednf export")
        verify_dataset(unpacked, checksums=True)
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier copy (a complete one is never downloaded again)
        os.replace(unpacked, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        for file_name in entry["files"]:
            (downloads / file_name).unlink(missing_ok=True)
    return target


def _record_files(record: dict[str, Any]) -> list[dict[str, Any]]:
    files = record.get("files", [])
    return files if isinstance(files, list) else list(files.get("entries", {}).values())  # both API shapes


_SAFE_FILE_NAME = re.compile(r"^[\w.+-]+$")


def official_files(record: dict[str, Any], name: str, record_id: str,
                   pinned: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """The record's archives of sub-dataset ``name``: the registry's pinned file names when it has them,
    else the zip/tar files whose names contain ``name`` (case-insensitively)."""
    files = _record_files(record)
    held = ", ".join(sorted(str(f.get("key")) for f in files)) or "nothing"
    if pinned:
        by_key = {str(f.get("key")): f for f in files}
        absent = [k for k in pinned if k not in by_key]
        if absent:
            raise DownloadError(f"Zenodo record {record_id} has no file {absent[0]!r} (it holds: {held}); the "
                                "registry and the record disagree")
        return [by_key[k] for k in pinned]
    chosen = [f for f in files if name.lower() in str(f.get("key", "")).lower()
              and str(f.get("key", "")).lower().endswith(ARCHIVE_SUFFIXES)]
    if not chosen:
        raise DownloadError(f"Zenodo record {record_id} has no zip/tar archive named like {name!r} (it holds: "
                            f"{held}); download the right file by hand and run `mednf import-official`")
    return chosen


def _download_official(key: str, entry: dict[str, Any], record: dict[str, Any], record_id: str, base: str,
                       home: Path, target: Path, progress: bool) -> Path:
    """The paper's own release: fetch the sub-dataset's archive(s), check Zenodo's md5, unpack safely and
    import with the allow-listed reader of :mod:`mednf.remote.official_import` into the cache."""
    from mednf.remote.official import find_release_root
    from mednf.remote.official_import import import_official

    pinned = entry.get("files") or {}
    chosen = official_files(record, key, record_id, pinned)
    downloads = home / ".downloads"
    work = home / f".{key}.official-{os.getpid()}"
    imported = home / f".{key}.imported-{os.getpid()}"
    fetched: dict[str, dict[str, Any]] = {}
    try:
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir(parents=True)
        for meta in chosen:
            file_name = str(meta["key"])
            if not _SAFE_FILE_NAME.match(file_name):
                raise DownloadError(f"Zenodo record {record_id} lists a file named {file_name!r}; refusing a name "
                                    "that is not a plain file name")
            md5 = str(meta.get("checksum", "")).removeprefix("md5:")
            if len(md5) != 32 or not isinstance(meta.get("size"), int):
                raise DownloadError(f"Zenodo record {record_id} lists {file_name} without an md5 checksum and size; "
                                    "it cannot be verified, refusing it")
            pin = pinned.get(file_name, {})
            if pin and (pin.get("md5", md5) != md5 or pin.get("size", meta["size"]) != meta["size"]):
                raise DownloadError(f"Zenodo record {record_id} now lists {file_name} with md5 {md5} and size "
                                    f"{meta['size']}; the registry pins md5 {pin.get('md5')} and size {pin.get('size')} "
                                    "(a changed record or mirror), refusing it")
            url = meta.get("links", {}).get("self") or f"{base}/records/{record_id}/files/{file_name}?download=1"
            archive = downloads / file_name
            fetch_verified(url, archive, size=meta["size"], sha256=None, md5=md5, progress=progress)
            lower = file_name.lower()
            if lower.endswith(".zip"):
                safe_extract_zip(archive, work)
            elif lower.endswith((".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")):
                safe_extract(archive, work, allow_torch_files=True)
            else:
                raise DownloadError(f"{file_name} of Zenodo record {record_id} is not a zip or tar archive; "
                                    "download it by hand and run `mednf import-official`")
            archive.unlink()
            fetched[file_name] = {"md5": md5, "size": meta["size"], "url": url, "pinned_by_registry": bool(pin)}
        import_official(find_release_root(work), key, imported, progress=progress,
                        origin={"zenodo_record": record_id, "zenodo": base, "files": fetched})
        if target.exists():
            shutil.rmtree(target)  # an incomplete earlier copy (a complete one is never downloaded again)
        os.replace(imported, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(imported, ignore_errors=True)
        for meta in chosen:
            if _SAFE_FILE_NAME.match(str(meta["key"])):
                (downloads / str(meta["key"])).unlink(missing_ok=True)
    return target
