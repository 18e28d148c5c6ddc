"""Publishable copies of a built dataset: one tar for Zenodo (+ SHA256SUMS, registry entry), or an HF Hub
dataset folder (Parquet shards with features, card with ``configs``, manifest and θ) to upload with
``hf upload <org>/<Name> <folder> --repo-type dataset`` (:func:`upload_hint`).

Both publish the manifest and card without the absolute paths of the machine that built the dataset
(:func:`public_copy`): where the source files and the builder file were is the builder's business, and a
path such as ``/home/<user>/patients/…`` says more than a dataset should.

Where an export writes: ``--out`` is locked for the export (:func:`mednf.io.lock.dataset_lock`, role
``export``: a second export into the same folder is refused at once) and must be new, empty, or an earlier
export of the same dataset by mednf (:func:`mednf.format.layout.check_output_folder`). A Zenodo export
folder carries mednf's mark (``.mednf-owner``, never archived). An HF export folder is uploaded as it is, so
it carries no mark of mednf's: its own ``mednf.json``, which names the dataset, is what makes it an earlier
export; a folder with Parquet shards and a card but no such manifest is someone else's.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import io
import json
import os
import shlex
import shutil
import stat
import tarfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

from mednf.dataset import MedNFDataset
from mednf.errors import ConfigError, MednfError
from mednf.format.card import render_card
from mednf.format.layout import CARD, FIGURES, MANIFEST, MODEL, check_output_folder, check_outside_datasets
from mednf.format.manifest import FileEntry, Manifest
from mednf.format.reader import DatasetFiles, open_dataset
from mednf.format.splits import hf_split
from mednf.io.files import (
    atomic_write_bytes,
    create_new,
    make_scratch,
    sha256_file,
    sweep_dead_scratch,
    temporary_name,
    write_owner_mark,
)
from mednf.io.lock import dataset_lock
from mednf.sources.kinds import source_card_line

_HF_FILES = {CARD, MANIFEST, MODEL, *FIGURES}  # the files of an HF export folder, beside data/


@contextmanager
def _export_folder(dataset: str | Path, out: str | Path) -> Iterator[tuple[DatasetFiles, Path]]:
    """The verified dataset and the output folder (outside every dataset), whose lock (role ``export``) is held
    for the ``with`` block: a second export into the same folder is refused at once."""
    files = open_dataset(dataset, verify=True)
    folder = check_outside_datasets(Path(out), "--out")
    with dataset_lock(folder, "export"):
        yield files, folder


def _hf_entry(path: Path) -> bool:
    """An entry of an HF export folder: its files, and ``data/`` holding Parquet shards only (a dataset called
    ``data`` is not one)."""
    if path.name == "data":
        return path.is_dir() and all(c.is_file() and not c.is_symlink() and c.suffix == ".parquet"
                                     for c in path.iterdir())
    return path.name in _HF_FILES and path.is_file()


def _exported_name(folder: Path) -> str | None:
    """The dataset name the ``mednf.json`` in ``folder`` records, read leniently (None: none there, or none
    that names one), so that another dataset's export is named in the refusal."""
    try:
        name = json.loads((folder / MANIFEST).read_bytes()).get("name")
    except (OSError, ValueError, AttributeError, RecursionError):
        return None
    return name if isinstance(name, str) and name else None


def _has_manifest(folder: Path) -> bool:
    """``folder`` holds a manifest that reads: an HF export's own mark (which dataset is checked after)."""
    if (folder / MANIFEST).is_symlink():
        return False
    try:
        Manifest.read(folder)
    except (MednfError, OSError):
        return False
    return True


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
    with _export_folder(dataset, out) as (files, out):
        manifest, dataset = files.manifest, files.root
        name = manifest.name
        names = {f"{name}.tar", "SHA256SUMS", "registry-entry.toml"}
        out = check_output_folder(out, "--out", kind="zenodo-export", name=name,
                                  ours=lambda p: p.name in names and p.is_file())
        out.mkdir(parents=True, exist_ok=True)
        write_owner_mark(out, "zenodo-export", name)  # new or empty: now mednf's; else marked already
        archive = out / f"{name}.tar"
        partial = temporary_name(archive)
        partial.unlink(missing_ok=True)  # left by a killed export that had this pid (or planted): never followed
        try:
            public_manifest, public_card = public_copy(files)
            with (os.fdopen(create_new(partial), "wb") as fh,
                  tarfile.open(fileobj=fh, mode="w", format=tarfile.PAX_FORMAT) as tar):
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
    with _export_folder(dataset, out) as (files, out):
        name = files.manifest.name
        earlier = _exported_name(out)
        if earlier not in (None, name):
            raise ConfigError(f"--out {out} holds the export of {earlier}, not of {name}: exporting there would "
                              "replace it; choose another folder")
        out = check_output_folder(out, "--out", kind="hf-export", name=name, ours=_hf_entry,
                                  earlier=lambda folder: _has_manifest(folder) and earlier == name)
        entry = hf_registry_entry(out)
        ours = entry.is_file() and entry.read_text(errors="replace").startswith(f"[{name}]")
        if entry.is_symlink() or (entry.exists() and not ours):
            raise ConfigError(f"{entry} exists and is not the registry entry of an earlier export of {name}: "
                              "the export writes its entry there; move that file or choose another --out")
        out.parent.mkdir(parents=True, exist_ok=True)
        sweep_dead_scratch(out.parent.glob(f".{glob.escape(out.name)}.export-*"))  # of killed exports
        # written in a scratch folder of mednf's and swapped in whole: a killed export leaves the earlier one
        box = make_scratch(out.parent, f".{out.name}.export-{os.getpid()}")
        try:
            new = box / out.name
            _write_hf_export(files, new)
            _swap_in(new, out, box)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT):  # the disk of the export, not of the file being copied
                raise OSError(err.errno, err.strerror, str(out)) from None
            raise
        finally:
            shutil.rmtree(box, ignore_errors=True)
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


def _swap_in(new: Path, out: Path, box: Path) -> None:
    """Put the finished folder ``new`` at ``out``, replacing an earlier export there only now; the earlier one
    (or the empty folder given) goes into the scratch folder ``box`` to be removed with it. ``new`` takes the
    permissions of the folder it replaces."""
    if out.exists():
        new.chmod(stat.S_IMODE(out.stat().st_mode))
        os.replace(out, box / f"{out.name}.replaced")
    os.replace(new, out)


def upload_hint(folder: str | Path, repo: str | None = None) -> str:
    """The command that uploads an HF export folder with the CLI huggingface_hub ships (``hf``; the older
    ``huggingface-cli`` is deprecated): ``hf upload <org>/<Name> <folder> --repo-type dataset``."""
    folder = Path(folder)
    repo = repo or f"<org>/{Manifest.read(folder).name}"
    return f"hf upload {repo} {shlex.quote(str(folder))} --repo-type dataset"  # repo: a placeholder to replace
