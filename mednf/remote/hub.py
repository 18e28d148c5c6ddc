"""Published copies of MedNF datasets: export for Zenodo, verified download from Zenodo into the cache.

**Registry** (``builders/registry.toml``, shipped; ``$MEDNF_REGISTRY`` replaces it): per dataset the
Zenodo record id and the sha256 + size of each file of the record. A download trusts nothing else.

**Download** (:func:`download_zenodo`): list the record through Zenodo's REST API
(``GET {base}/api/records/{id}``), fetch each registry file whole (HTTP timeout, progress bar) to a
temporary name, check size, then sha256 (registry) and md5 (Zenodo's own checksum), then rename. The
archive is unpacked into a temporary folder (tar entries with absolute paths, ``..``, links or devices
are refused), the dataset is verified against its manifest (sha256 of every file), and only then moved
to ``$MEDNF_HOME/<Name>``. Any failure leaves nothing that looks usable; the next call starts again.
``$MEDNF_OFFLINE=1`` forbids the network. ``$MEDNF_ZENODO_URL`` replaces ``https://zenodo.org``.

**The paper's release** (registry ``layout = "official"``, record 10.5281/zenodo.14898708) holds the
official research code's layout, not this one: the files whose names contain the dataset's name are
fetched and checked against Zenodo's md5 (no sha256 is published), unpacked (zip or tar, same refusals, the
``.pt`` files allowed) and imported by :mod:`mednf.remote.official_import`, which reads them weights-only.

**Export** (:func:`export_zenodo`): ``<out>/<Name>.tar`` (the manifest's files, uncompressed: the latents
are already compressed) plus ``SHA256SUMS`` and the registry entry to paste, for a maintainer to upload.
:func:`export_hf` writes an HF dataset repository (Parquet + card); :func:`download_hf` fetches one with
``huggingface_hub.snapshot_download`` and verifies it against the manifest, which the registry pins by
sha256 (``manifest_sha256``) when the entry has one.

Libraries: urllib (stdlib) for two plain GETs with timeouts, tarfile/zipfile for the archives. Only
bytes, JSON, safetensors, Zarr and Parquet are read from a mednf copy; the official release's ``.pt``
files go through torch's weights-only unpickler with an allow-list: nothing is unpickled freely.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import re
import shutil
import tarfile
import tomllib
import urllib.error
import urllib.request
from importlib import resources
from pathlib import Path
from typing import Any

from mednf.errors import DownloadError
from mednf.format.store import MANIFEST, mednf_home, sha256_file, unfinished_build, verify_dataset

_TIMEOUT_S = 60
_CHUNK = 1 << 20
DEFAULT_ZENODO = "https://zenodo.org"
_PICKLE_SUFFIXES = (".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")




def registry() -> dict[str, dict[str, Any]]:
    """Name → entry of every published dataset (keys as written, e.g. ``DermaNF``)."""
    override = os.environ.get("MEDNF_REGISTRY")
    if override:
        text = Path(override).read_text(encoding="utf-8")
    else:
        text = resources.files("mednf.builders").joinpath("registry.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def is_registered(name: str) -> bool:
    return any(key.lower() == name.lower() for key in registry())


def registry_entry(name: str) -> tuple[str, dict[str, Any]]:
    for key, entry in registry().items():
        if key.lower() == name.lower():
            return key, entry
    raise DownloadError(f"no published copy of {name!r} is registered (known: {', '.join(registry()) or 'none'}); "
                        f"build it with `mednf build {name.lower()}`")


def _check_target(target: Path) -> None:
    if unfinished_build(target):
        raise DownloadError(f"{target} holds an unfinished `mednf build`; finish it (rerun the build) or remove it, "
                            "or download into another --root")


def _offline_check(what: str, url: str, target: Path) -> None:
    if os.environ.get("MEDNF_OFFLINE", "") not in ("", "0"):
        raise DownloadError(f"{what} is not in the cache and MEDNF_OFFLINE is set; download {url} and unpack it "
                            f"to {target}, or unset MEDNF_OFFLINE")


def _get_json(url: str) -> Any:
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError, json.JSONDecodeError) as err:
        raise DownloadError(f"could not read {url} ({getattr(err, 'reason', err)}); check the network "
                            "(or MEDNF_ZENODO_URL) and try again") from None


def fetch_verified(url: str, target: Path, *, size: int, sha256: str | None, md5: str | None = None,
                   progress: bool = True) -> None:
    """Stream ``url`` to ``target`` via a temporary file; size, sha256 and md5 (those given) must match first."""
    from tqdm.auto import tqdm

    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    digests = {"sha256": hashlib.sha256(), "md5": hashlib.md5()}
    written = 0
    try:
        with urllib.request.urlopen(url, timeout=_TIMEOUT_S) as response, open(partial, "wb") as out, tqdm(
                total=size, unit="B", unit_scale=True, desc=f"download {target.name}", disable=not progress) as bar:
            while block := response.read(_CHUNK):
                written += len(block)
                if written > size:
                    break  # longer than the registry says: reported below, never stored
                out.write(block)
                for digest in digests.values():
                    digest.update(block)
                bar.update(len(block))
    except (urllib.error.URLError, http.client.HTTPException, TimeoutError, OSError) as err:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"download of {url} failed after {written} of {size} bytes "
                            f"({getattr(err, 'reason', err)}); nothing was kept, run again") from None
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    problems = []
    if written != size:
        problems.append(f"size {'more than ' if written > size else ''}{written} bytes, expected {size}")
    elif sha256 is not None and digests["sha256"].hexdigest() != sha256:
        problems.append(f"sha256 {digests['sha256'].hexdigest()}, expected {sha256}")
    elif md5 is not None and digests["md5"].hexdigest() != md5:
        problems.append(f"md5 {digests['md5'].hexdigest()}, expected {md5} (Zenodo)")
    if problems:
        partial.unlink(missing_ok=True)
        raise DownloadError(f"{target.name} from {url} has {problems[0]}; it was discarded, run again")
    os.replace(partial, target)


def _unsafe_name(name: str) -> bool:
    """An archive member name that could land outside the target: absolute, drive-letter, or with ``..``."""
    posix = name.replace("\\", "/")
    return not name or posix.startswith("/") or ".." in Path(posix).parts or (len(name) > 1 and name[1] == ":")


def _check_space(archive: Path, unpacked_bytes: int, into: Path) -> None:
    """Refuse an archive whose declared contents would not fit on the disk (or a decompression bomb)."""
    into.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(into).free
    if unpacked_bytes > free - (1 << 30):
        raise DownloadError(f"{archive.name} unpacks to {unpacked_bytes / 2**30:.1f} GiB, {into} has "
                            f"{free / 2**30:.1f} GiB free; free space (keep 1 GiB spare) or use another --root")


def safe_extract_zip(archive: Path, into: Path) -> None:
    """Unpack a zip, refusing absolute paths, ``..`` and symbolic links (before writing anything)."""
    import stat
    import zipfile

    try:
        with zipfile.ZipFile(archive) as zf:
            infos = zf.infolist()
            for info in infos:
                if _unsafe_name(info.filename) or stat.S_ISLNK(info.external_attr >> 16):
                    raise DownloadError(f"{archive.name} holds an unsafe entry {info.filename!r} (absolute path, "
                                        "'..' or link); refusing to unpack it")
            _check_space(archive, sum(info.file_size for info in infos), into)
            zf.extractall(into)
    except (zipfile.BadZipFile, NotImplementedError) as err:
        raise DownloadError(f"{archive.name} is not a readable zip ({err}); unpack it with another tool and run "
                            "`mednf import-official`") from None


def safe_extract(archive: Path, into: Path, *, allow_torch_files: bool = False) -> None:
    """Unpack a tar, refusing absolute paths, ``..``, links and special files (before writing anything).

    Pickle-based files are refused too, unless ``allow_torch_files`` (the official release's ``.pt`` files,
    which :mod:`mednf.remote.official` reads weights-only and allow-listed, never with ``pickle``)."""
    with tarfile.open(archive, "r:*") as tar:
        members = tar.getmembers()
        for member in members:
            if _unsafe_name(member.name) or not (member.isfile() or member.isdir()):
                raise DownloadError(f"{archive.name} holds an unsafe entry {member.name!r} (absolute path, '..', "
                                    "link or device); refusing to unpack it")
            if member.name.lower().endswith(_PICKLE_SUFFIXES) and not (allow_torch_files and member.name.endswith(".pt")):
                raise DownloadError(f"{archive.name} holds {member.name!r}, a pickle-based file; mednf's format has "
                                    "no pickle and never unpickles a download, refusing the archive")
        _check_space(archive, sum(m.size for m in members), into)
        tar.extractall(into, members=members, filter="data")


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
    _check_target(target)
    _offline_check(key, api, target)
    record = _get_json(api)
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


_ARCHIVE_SUFFIXES = (".zip", ".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
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
              and str(f.get("key", "")).lower().endswith(_ARCHIVE_SUFFIXES)]
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


def export_zenodo(dataset: str | Path, out: str | Path) -> Path:
    """Write ``<out>/<Name>.tar`` (+ ``SHA256SUMS``, ``registry-entry.toml``) from a verified dataset."""
    dataset = Path(dataset)
    manifest = verify_dataset(dataset, checksums=True)
    name = manifest["name"]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{name}.tar"
    partial = archive.with_name(f".{archive.name}.part")
    with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
        for rel in [*sorted(manifest["files"]), MANIFEST]:
            tar.add(dataset / rel, arcname=f"{name}/{rel}", recursive=False)
    os.replace(partial, archive)
    digest = sha256_file(archive)
    size = archive.stat().st_size
    (out / "SHA256SUMS").write_text(f"{digest}  {archive.name}\n", encoding="utf-8")
    (out / "registry-entry.toml").write_text(
        f'[{name}]\nzenodo_record = "<record id after publishing>"\n'
        f'files = {{ "{archive.name}" = {{ sha256 = "{digest}", size = {size} }} }}\n', encoding="utf-8")
    return archive


# ------------------------------------------------------------------------------------------ HF Hub


def export_hf(dataset: str | Path, out: str | Path) -> Path:
    """An HF-Hub-ready folder: ``data/<split>-00000-of-00001.parquet`` (latent, label, index, psnr, ssim,
    written by ``datasets`` so the features travel in the schema), ``README.md`` whose YAML ``configs``
    make ``datasets.load_dataset(out)`` find the splits, plus ``mednf.json`` and ``model.safetensors`` so
    that ``mednf`` can rebuild and verify its own format from the repository."""
    from mednf.dataset import MedNFDataset
    from mednf.format.card import render_card

    dataset = Path(dataset)
    manifest = verify_dataset(dataset, checksums=True)
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    configs = [{"config_name": "default", "default": True,
                "data_files": [{"split": s, "path": f"data/{s}-*.parquet"} for s in manifest["splits"]]}]
    for split in manifest["splits"]:
        MedNFDataset(dataset, split).to_hf().to_parquet(str(out / "data" / f"{split}-00000-of-00001.parquet"))
    (out / "README.md").write_text(render_card(manifest, configs), encoding="utf-8")
    for name in (MANIFEST, "model.safetensors"):
        shutil.copyfile(dataset / name, out / name)
    # the registry pins the manifest (which pins θ and every split's latents) and the uploaded commit
    (out.parent / f"{out.name}.registry-entry.toml").write_text(
        f'[{manifest["name"]}]\nhf_repo = "<org>/{manifest["name"]}"\nhf_revision = "<commit after upload>"\n'
        f'manifest_sha256 = "{sha256_file(out / MANIFEST)}"\n', encoding="utf-8")
    return out


def download_hf(name: str, *, root: str | Path | None = None, endpoint: str | None = None,
                progress: bool = True) -> Path:
    """Fetch the registered HF Hub copy of ``name`` (``huggingface_hub.snapshot_download``), verify θ by
    sha256 and every split's latents by the manifest's digest of the raw float32 rows, and rebuild
    mednf's own format from it in the cache."""
    import hashlib as _hashlib

    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    from mednf.format.card import render_card
    from mednf.format.store import (
        CARD,
        INDEX,
        atomic_write_bytes,
        atomic_write_json,
        check_content,
        create_latent_arrays,
        file_table,
        index_columns,
        write_index,
        write_latent_block,
    )

    key, entry = registry_entry(name)
    repo, revision = entry.get("hf_repo"), entry.get("hf_revision")
    if not repo:
        raise DownloadError(f"{key} has no HF Hub repository in the registry; try --source zenodo or build it")
    home = Path(root).expanduser() if root else mednf_home()
    target = home / key
    endpoint = endpoint or os.environ.get("MEDNF_HF_ENDPOINT") or os.environ.get("HF_ENDPOINT") or "https://huggingface.co"
    _check_target(target)
    _offline_check(key, f"{endpoint}/datasets/{repo}", target)
    snapshot = home / f".{key}.hf-{os.getpid()}"
    build = home / f".{key}.rebuild-{os.getpid()}"
    try:
        try:
            snapshot_download(repo, repo_type="dataset", revision=revision, local_dir=snapshot, endpoint=endpoint,
                              etag_timeout=_TIMEOUT_S)
        except (HfHubHTTPError, LocalEntryNotFoundError, OSError) as err:
            raise DownloadError(f"could not download {repo} from {endpoint} ({str(err).splitlines()[0]}); "
                                "nothing was kept, run again") from None
        pinned = entry.get("manifest_sha256")
        if pinned and (snapshot / MANIFEST).is_file() and sha256_file(snapshot / MANIFEST) != pinned:
            raise DownloadError(f"{MANIFEST} of {repo} has sha256 {sha256_file(snapshot / MANIFEST)}, the registry "
                                f"pins {pinned}; discarded")
        try:
            manifest = json.loads((snapshot / MANIFEST).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as err:
            raise DownloadError(f"{MANIFEST} of {repo} is missing or not JSON ({err}); discarded") from None
        expected = manifest["files"]["model.safetensors"]["sha256"]
        actual = sha256_file(snapshot / "model.safetensors")
        if actual != expected:
            raise DownloadError(f"model.safetensors of {repo} has sha256 {actual}, expected {expected}; discarded")
        build.mkdir(parents=True)
        shutil.copyfile(snapshot / "model.safetensors", build / "model.safetensors")
        rows = manifest["latent"]["chunk_rows"]
        counts = {s: v["count"] for s, v in manifest["splits"].items()}
        create_latent_arrays(build, counts, manifest["latent"]["dim"], rows,
                             {"name": key, "latent_dim": manifest["latent"]["dim"]})
        cols: dict[str, list] = {k: [] for k in ("names", "rows", "source", "labels", "psnr", "ssim")}
        multi = manifest["labels"]["task"] == "multi-label"
        for split, count in counts.items():
            shard = snapshot / "data" / f"{split}-00000-of-00001.parquet"
            try:
                table = pq.read_table(shard)
            except (OSError, pa.ArrowException) as err:
                raise DownloadError(f"{shard.name} of {repo} is not a readable Parquet file ({err}); discarded") from None
            latents = table["latent"].combine_chunks().flatten().to_numpy().reshape(len(table), -1)
            digest = _hashlib.sha256(np.ascontiguousarray(latents, dtype="<f4").tobytes()).hexdigest()
            if "latents_sha256" not in manifest["splits"][split]:
                raise DownloadError(f"{repo} was exported by an older mednf (no latent digest in {MANIFEST}); "
                                    "it cannot be verified, ask for a new export")
            if len(table) != count or digest != manifest["splits"][split]["latents_sha256"]:
                raise DownloadError(f"split {split!r} of {repo} has {len(table)} rows with latent digest {digest}, "
                                    f"expected {count} rows and {manifest['splits'][split]['latents_sha256']}; "
                                    "discarded")
            for start in range(0, count, rows):
                write_latent_block(build, split, start, latents[start:start + rows])
            labels = (table["label"].combine_chunks().flatten().to_numpy().reshape(count, -1) if multi
                      else table["label"].to_numpy()[:, None])
            for k, value in zip(cols, (split, np.arange(count), table["index"].to_numpy(), labels,
                                       table["psnr"].to_numpy(), table["ssim"].to_numpy())):
                cols[k].append(value)
        write_index(build / INDEX, index_columns(cols["names"], cols["rows"], cols["source"], cols["labels"],
                                                 cols["psnr"], cols["ssim"], multi))
        atomic_write_bytes(build / CARD, render_card(manifest).encode("utf-8"))
        manifest["origin"] = {"hf_repo": repo, "revision": revision, "endpoint": endpoint}
        manifest["files"] = file_table(build)
        check_content(build, manifest, checksums=False)  # file_table just hashed every file
        atomic_write_json(build / MANIFEST, manifest)
        if target.exists():
            shutil.rmtree(target)
        os.replace(build, target)
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.rmtree(build, ignore_errors=True)
    return target
