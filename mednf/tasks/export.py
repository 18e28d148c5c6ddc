"""Publishable copies of a built dataset: one tar for Zenodo (+ SHA256SUMS, registry entry), or an HF Hub
dataset folder (Parquet shards with features, card with ``configs``, manifest and θ) to upload with
``hf upload <org>/<Name> <folder> --repo-type dataset`` (:func:`upload_hint`).

Both publish the manifest and card without the absolute paths of the machine that built the dataset
(:func:`public_copy`): where the source files and the builder file were is the builder's business, and a
path such as ``/home/<user>/patients/…`` says more than a dataset should.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import os
import shlex
import shutil
import tarfile
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

from mednf.dataset import MedNFDataset
from mednf.errors import ConfigError
from mednf.format.card import render_card
from mednf.format.layout import CARD, FIGURES, MANIFEST, MODEL, check_empty_or_ours, check_outside_datasets
from mednf.format.manifest import FileEntry, Manifest
from mednf.format.reader import DatasetFiles, open_dataset
from mednf.format.splits import hf_split
from mednf.io.files import atomic_write_bytes, sha256_file, temporary_name
from mednf.sources.kinds import source_card_line

_HF_FILES = {"data", CARD, MANIFEST, MODEL, *FIGURES}  # what an HF export folder holds


def _open_for_export(dataset: str | Path, out: str | Path, ours: Callable[[str], set[str]],
                     markers: Callable[[str], tuple[str, ...]], what: str) -> tuple[DatasetFiles, Path]:
    """The verified dataset and the output folder: outside every dataset, and new, empty or an earlier export of
    the same dataset: it holds one of ``markers(name)`` and nothing but the files ``ours(name)`` (``what`` names
    it in the error); an HF export's ``data/`` holds Parquet shards only."""
    files = open_dataset(dataset, verify=True)
    name = files.manifest.name
    names = ours(name)
    out = check_outside_datasets(Path(out), "--out")

    def earlier(path: Path) -> bool:
        if path.name == "data":  # an HF export's shards, nothing else (a dataset called "data" is not ours)
            return path.is_dir() and all(c.is_file() and not c.is_symlink() and c.suffix == ".parquet"
                                         for c in path.iterdir())
        return path.name in names and not path.is_dir()

    out = check_empty_or_ours(out, "--out", earlier, f"an earlier {what} of {name}", markers=markers(name))
    earlier = _exported_name(out)
    if earlier not in (None, name):
        raise ConfigError(f"--out {out} holds the export of {earlier}, not of {name}: exporting there would replace "
                          "it; choose another folder")
    return files, out


def _exported_name(folder: Path) -> str | None:
    """The dataset name an earlier HF export in ``folder`` records (None: no manifest there)."""
    try:
        return str(json.loads((folder / MANIFEST).read_bytes()).get("name"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, AttributeError, RecursionError):
        return "an unreadable dataset"


def _without_local_paths(value: Any) -> Any:
    """``value`` (manifest JSON) with every absolute ``path`` / ``file`` / ``folder`` reduced to its last part."""
    if isinstance(value, dict):
        return {k: (_last_part(v) if k in _PATH_KEYS and isinstance(v, str) and _is_absolute(v)
                    else _without_local_paths(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_without_local_paths(v) for v in value]
    return value


_PATH_KEYS = ("path", "file", "folder")  # manifest keys that hold where something was on the builder's machine


def _last_part(text: str) -> str:
    r"""The last component of a POSIX or Windows path (``C:\data\x`` → ``x`` on any system)."""
    return PureWindowsPath(text).name if "\\" in text else PurePath(text).name


def _is_absolute(text: str) -> bool:
    return text.startswith(("/", "~", "\\")) or PureWindowsPath(text).is_absolute()


def public_copy(files: DatasetFiles, root: Path | None = None,
                configs: list[dict[str, Any]] | None = None) -> tuple[bytes, bytes]:
    """``(mednf.json, README.md)`` as an export publishes them: the manifest without the absolute paths of the
    machine that built it (the source files' folder, the builder file; only their names stay) and the card
    rendered from it (``configs``: an HF export's; ``root``: where the figures it shows are), with the
    manifest's entry for the card updated to the new bytes. Everything else is as built."""
    data = files.manifest.to_json()
    public = Manifest.from_json({k: (_without_local_paths(v) if k != "files" else v) for k, v in data.items()},
                                files.root / MANIFEST)
    card = render_card(public, source_card_line(public.source), configs, root=root or files.root).encode("utf-8")
    entries = dict(public.files)
    if CARD in entries:
        entries[CARD] = FileEntry(hashlib.sha256(card).hexdigest(), len(card))
    return public.replace(files=entries).dumps().encode("utf-8"), card


def _tar_entry(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """Archive members without the machine's details (times, owners, modes): same files → same archive."""
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    info.mode = 0o755 if info.isdir() else 0o644
    info.pax_headers = {}
    return info


def _add_bytes(tar: tarfile.TarFile, arcname: str, data: bytes) -> None:
    info = tarfile.TarInfo(arcname)
    info.size = len(data)
    tar.addfile(_tar_entry(info), io.BytesIO(data))


def export_zenodo(dataset: str | Path, out: str | Path) -> Path:
    """Write ``<out>/<Name>.tar`` (+ ``SHA256SUMS``, ``registry-entry.toml``) from a verified dataset.

    The archive's bytes depend only on the dataset's files: the same dataset always gives the same sha256."""
    files, out = _open_for_export(dataset, out, lambda name: {f"{name}.tar", "SHA256SUMS", "registry-entry.toml"},
                                  lambda name: (f"{name}.tar",), "Zenodo export")
    manifest, dataset = files.manifest, files.root
    name = manifest.name
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"{name}.tar"
    partial = temporary_name(archive)
    try:
        public_manifest, public_card = public_copy(files)
        with tarfile.open(partial, "w", format=tarfile.PAX_FORMAT) as tar:
            for rel in [*sorted(manifest.files), MANIFEST]:
                if rel in (CARD, MANIFEST):  # as published: without the machine's paths
                    _add_bytes(tar, f"{name}/{rel}", public_card if rel == CARD else public_manifest)
                else:
                    tar.add(dataset / rel, arcname=f"{name}/{rel}", recursive=False, filter=_tar_entry)
        files.check_unchanged()  # not rebuilt while it was being archived
        os.replace(partial, archive)
    finally:
        partial.unlink(missing_ok=True)
    digest = sha256_file(archive)
    size = archive.stat().st_size
    atomic_write_bytes(out / "SHA256SUMS", f"{digest}  {archive.name}\n".encode())
    atomic_write_bytes(out / "registry-entry.toml", (
        f'[{name}]\nzenodo_record = "<record id after publishing>"\n'
        f'files = {{ "{archive.name}" = {{ sha256 = "{digest}", size = {size} }} }}\n').encode())
    return archive


def hf_config_name(shards: dict[str, Path]) -> str:
    """``mednf-<16 hex>``: the sha256 of every split's name and Parquet shard digest, i.e. of exactly what
    ``datasets.load_dataset`` reads.

    ``datasets`` keys its cache of a local folder by the folder's name, the config name and the card's YAML,
    not by the data files' content: two exports both called PhantomNF under a config ``default`` shared one
    cache entry, and the second load returned the first export's rows. Named after its content, each export
    has a cache entry of its own, and exporting the same dataset again reuses it."""
    lines = "".join(f"{split} {sha256_file(path)}\n" for split, path in sorted(shards.items()))
    return "mednf-" + hashlib.sha256(lines.encode()).hexdigest()[:16]


def export_hf(dataset: str | Path, out: str | Path) -> Path:
    """An HF-Hub-ready folder: ``data/<split>-00000-of-00001.parquet`` with the Hugging Face split names
    (``train``, ``validation``, ``test``; latent, label, index, psnr, ssim,
    written by ``datasets`` so the features travel in the schema), ``README.md`` whose YAML ``configs``
    (one config, the default, named by :func:`hf_config_name`) make ``datasets.load_dataset(out)`` find the
    splits, plus ``mednf.json`` and ``model.safetensors`` so that ``mednf`` can rebuild and verify its own
    format from the repository, and the build's curves and reconstruction grid that the card shows. The
    registry entry goes beside the folder (:func:`hf_registry_entry`), so the folder uploads as it is."""
    files, out = _open_for_export(dataset, out, lambda name: _HF_FILES, lambda name: (MANIFEST, "data"),
                                  "Hugging Face export")
    manifest = files.manifest
    entry = hf_registry_entry(out)
    ours = entry.is_file() and entry.read_text(errors="replace").startswith(f"[{manifest.name}]")
    if entry.is_symlink() or (entry.exists() and not ours):
        raise ConfigError(f"{entry} exists and is not the registry entry of an earlier export of {manifest.name}: "
                          "the export writes its entry there; move that file or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    # a new folder of a fresh name (never an existing one or a planted link), swapped in whole: a killed export
    # leaves the earlier one as it was
    scratch = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", suffix=".tmp", dir=out.parent))
    try:
        _write_hf_export(files, scratch)
        _swap_in(scratch, out)
    except OSError as err:
        if err.errno in (errno.ENOSPC, errno.EDQUOT):  # the disk of the export, not of the file being copied
            raise OSError(err.errno, err.strerror, str(out)) from None
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    write_hf_registry_entry(out)
    return out


def write_hf_registry_entry(folder: Path, repo: str | None = None, revision: str | None = None) -> Path:
    """The registry entry of the HF export ``folder`` (:func:`hf_registry_entry`): it pins the manifest (which
    pins θ and every split's latents) and the uploaded commit (placeholders until ``repo`` and ``revision``
    are known)."""
    name = Manifest.read(folder).name
    entry = hf_registry_entry(folder)
    atomic_write_bytes(entry, (f'[{name}]\nhf_repo = "{repo or f"<org>/{name}"}"\n'
                               f'hf_revision = "{revision or "<commit after upload>"}"\n'
                               f'manifest_sha256 = "{sha256_file(folder / MANIFEST)}"\n').encode())
    return entry


def hf_registry_entry(folder: str | Path) -> Path:
    """Where :func:`export_hf` writes the registry entry of the HF export ``folder``: beside it,
    ``<folder>.registry-entry.toml``, not inside. The folder is what gets uploaded, as it is; the entry is for
    mednf's registry (``builders/registry.toml``) and is completed with the commit the upload makes."""
    folder = Path(folder)
    return folder.parent / f"{folder.name}.registry-entry.toml"


def _write_hf_export(files: DatasetFiles, folder: Path) -> None:
    """The files of an HF export (see :func:`export_hf`) of the verified dataset ``files`` into a new ``folder``."""
    manifest, dataset = files.manifest, files.root
    (folder / "data").mkdir(parents=True)
    shards = {split: folder / "data" / f"{hf_split(split)}-00000-of-00001.parquet" for split in manifest.splits}
    for split, path in shards.items():
        MedNFDataset(dataset, split, files=files).to_hf().to_parquet(str(path))
    configs = [{"config_name": hf_config_name(shards), "default": True,
                "data_files": [{"split": hf_split(s), "path": f"data/{hf_split(s)}-*.parquet"} for s in shards]}]
    for name in (MODEL, *(f for f in FIGURES if f in manifest.files)):
        shutil.copyfile(dataset / name, folder / name)
    public_manifest, public_card = public_copy(files, folder, configs)
    atomic_write_bytes(folder / CARD, public_card)
    atomic_write_bytes(folder / MANIFEST, public_manifest)
    files.check_unchanged()  # not rebuilt while it was being exported


def _swap_in(scratch: Path, out: Path) -> None:
    """Put the finished folder ``scratch`` at ``out``, replacing an earlier export there only now."""
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", suffix=".tmp", dir=out.parent))  # fresh: no link
    try:
        if out.exists():
            os.replace(out, old)  # onto the empty new folder
        os.replace(scratch, out)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def upload_hint(folder: str | Path, repo: str | None = None) -> str:
    """The command that uploads an HF export folder with the CLI huggingface_hub ships (``hf``; the older
    ``huggingface-cli`` is deprecated): ``hf upload <org>/<Name> <folder> --repo-type dataset``."""
    folder = Path(folder)
    repo = repo or f"<org>/{Manifest.read(folder).name}"
    return f"hf upload {repo} {shlex.quote(str(folder))} --repo-type dataset"  # repo: a placeholder to replace
