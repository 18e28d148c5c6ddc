"""Publishable copies of a built dataset: one tar for Zenodo (+ SHA256SUMS, registry entry), or an HF Hub
dataset folder (Parquet shards with features, card with ``configs``, manifest and θ) to upload with
``hf upload <org>/<Name> <folder> --repo-type dataset`` (:func:`upload_hint`).

Both publish the manifest and card without the absolute paths of the machine that built the dataset
(:func:`public_copy`): where the source files and the builder file were is the builder's business, and a
path such as ``/home/<user>/patients/…`` says more than a dataset should.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
from pathlib import Path, PurePath, PureWindowsPath
from typing import Any

from mednf.errors import ConfigError
from mednf.format.card import render_card
from mednf.format.layout import CARD, FIGURES, MANIFEST, MODEL
from mednf.format.manifest import FileEntry, Manifest
from mednf.format.reader import DatasetFiles, open_dataset
from mednf.io.files import atomic_write_bytes, sha256_file, temporary_name
from mednf.sources.kinds import source_card_line
from mednf.format.splits import hf_split
from mednf.dataset import MedNFDataset


def _open_for_export(dataset: str | Path, out: str | Path) -> tuple[DatasetFiles, Path]:
    """The verified dataset and the output folder, which must lie outside it (an export written into the
    dataset would add files its manifest does not list, and damage it)."""
    files = open_dataset(dataset, verify=True)
    out = Path(out).expanduser()
    inside = out.resolve() == files.root.resolve() or files.root.resolve() in out.resolve().parents
    if inside:
        raise ConfigError(f"--out {out} is inside the dataset {files.root}: an export there would damage it; "
                          "choose a folder outside it")
    return files, out


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
    """The last component of a POSIX or Windows path (``C:\\data\\x`` → ``x`` on any system)."""
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
    files, out = _open_for_export(dataset, out)
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
    format from the repository, and the build's curves and reconstruction grid that the card shows."""
    files, out = _open_for_export(dataset, out)
    manifest, dataset = files.manifest, files.root
    (out / "data").mkdir(parents=True, exist_ok=True)
    shards = {split: out / "data" / f"{hf_split(split)}-00000-of-00001.parquet" for split in manifest.splits}
    for split, path in shards.items():
        for name in {split, hf_split(split)}:  # an earlier export's shards (older ones named "val") would match too
            for stale in (out / "data").glob(f"{name}-*.parquet"):
                if stale != path:
                    stale.unlink()
        MedNFDataset(dataset, split, files=files).to_hf().to_parquet(str(path))
    configs = [{"config_name": hf_config_name(shards), "default": True,
                "data_files": [{"split": hf_split(s), "path": f"data/{hf_split(s)}-*.parquet"} for s in shards]}]
    for name in (MODEL, *(f for f in FIGURES if f in manifest.files)):
        shutil.copyfile(dataset / name, out / name)
    public_manifest, public_card = public_copy(files, out, configs)
    atomic_write_bytes(out / MANIFEST, public_manifest)
    atomic_write_bytes(out / CARD, public_card)
    files.check_unchanged()  # not rebuilt while it was being exported
    # the registry pins the manifest (which pins θ and every split's latents) and the uploaded commit
    (out.parent / f"{out.name}.registry-entry.toml").write_text(
        f'[{manifest.name}]\nhf_repo = "<org>/{manifest.name}"\nhf_revision = "<commit after upload>"\n'
        f'manifest_sha256 = "{sha256_file(out / MANIFEST)}"\n', encoding="utf-8")
    return out


def upload_hint(folder: str | Path, repo: str | None = None) -> str:
    """The command that uploads an HF export folder with the CLI huggingface_hub ships (``hf``; the older
    ``huggingface-cli`` is deprecated): ``hf upload <org>/<Name> <folder> --repo-type dataset``."""
    folder = Path(folder)
    repo = repo or f"<org>/{Manifest.read(folder).name}"
    return f"hf upload {repo} {folder} --repo-type dataset"
