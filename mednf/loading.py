"""``mednf.load`` and ``mednf.info`` (module ``loading``: a submodule named ``load`` would replace the function
``mednf.load`` on import): find a dataset by path or name (cache, or a verified download).

Names are looked up case-insensitively in ``root`` / ``$MEDNF_HOME``; a name that is not there but is in
the registry is downloaded (Zenodo by default, or the HF Hub) and verified before it is opened. A URL
(``https://host/path/DermaNF``, ``s3://…``, ``gs://…``) is read lazily, by chunk, without a download
(:mod:`mednf.remote.lazy`).
"""

from __future__ import annotations

from pathlib import Path

import torch

from mednf.arguments import optional_positive_int
from mednf.dataset import MedNFConcat, MedNFDataset, MedNFDatasetDict, Transform
from mednf.errors import ConfigError, NotFoundError
from mednf.format.lazy import DEFAULT_CACHE_BYTES
from mednf.format.reader import DatasetFiles, open_dataset
from mednf.format.splits import SPLITS, check_split, parse_split_spec
from mednf.lookup import find_dataset, info
from mednf.remote.fetch import is_url
from mednf.remote.hf import download_hf
from mednf.remote.lazy import RemoteFiles, open_remote
from mednf.remote.registry import is_registered
from mednf.remote.zenodo import download_zenodo

__all__ = ["find_dataset", "info", "load"]  # find_dataset and info live in mednf.lookup (no torch)


def load(name_or_path: str | Path, split: str | None = "train", *, root: str | Path | None = None,
         source: str = "auto", download: bool = True, device: str | torch.device | None = None,
         verify: bool = True, transform: Transform | None = None,
         cache_bytes: int | None = None) -> MedNFDataset | MedNFConcat | MedNFDatasetDict:
    """A MedNF dataset: a directory, a name in the cache (``root`` / ``$MEDNF_HOME``), (``download``) a name
    fetched from Zenodo / the HF Hub, or the URL of a published dataset folder, read lazily.

    ``split`` is ``"train"``, ``"val"`` (or its Hugging Face name ``"validation"``), ``"test"``, or None for
    all three (:class:`MedNFDatasetDict`); Hugging Face's split syntax selects rows too: ``"train[:1000]"``,
    ``"train[:10%]"``, ``"test[-50:]"`` (a :class:`MedNFDataset` of those rows, indexed from 0) and
    ``"train+validation"``, ``"train[:10%]+test"`` (a :class:`~mednf.dataset.MedNFConcat`), with the rows
    ``datasets`` would take (percentages rounded to the closest row).
    ``transform``: ``fn(item) -> item`` applied to every item, one sample at a time (``ds[i]``, DataLoader samples,
    and each sample of a batch index before stacking; see :mod:`mednf.dataset`); its failure is a one-line
    :class:`~mednf.errors.TransformError`.
    ``verify``: check the sha256 of every file against the manifest before the first read (remembered
    while the files are unchanged; see :mod:`mednf.format.reader`); False skips it. A URL
    (``https://host/path/DermaNF``; ``s3://``, ``gs://``, … with that fsspec filesystem installed) fetches
    the manifest and index now and latent chunks, θ when first needed, every file checked against the
    manifest's sha256 as it arrives whatever ``verify`` says (:mod:`mednf.remote.lazy`).
    ``cache_bytes``: the most memory decoded latent chunks may hold, shared by the splits of this load (default
    256 MiB), where latents are read by chunk on demand: a URL, or a local split that is not unpacked. A local
    split is unpacked once into ``$MEDNF_HOME/.unpacked/`` and memory-mapped (``MEDNF_UNPACK=0`` turns that
    off; see :mod:`mednf.format.lazy`).
    """
    if source not in ("auto", "local", "zenodo", "hf"):
        raise ConfigError(f"source = {source!r} is invalid: expected 'auto', 'local', 'zenodo' or 'hf'")
    if transform is not None and not callable(transform):
        raise ConfigError(f"transform = {transform!r} is invalid: expected a function item -> item")
    cache = optional_positive_int(cache_bytes, "cache_bytes", "e.g. 1 << 30 for 1 GiB, or None for the default")
    cache = DEFAULT_CACHE_BYTES if cache is None else cache
    spec = split if isinstance(split, str) and ("[" in split or "+" in split) else None
    if split is not None and spec is None:
        split = check_split(split, SPLITS)  # "validation" → "val"
    files: DatasetFiles | RemoteFiles
    if is_url(name_or_path):
        if source != "auto":
            raise ConfigError(f"source = {source!r} was given with a URL {name_or_path}; use source='auto'")
        files = open_remote(str(name_or_path), cache_bytes=cache)
    else:
        files = open_dataset(_local(name_or_path, root, source, download), verify=verify, cache_bytes=cache)
    if split is None:
        return MedNFDatasetDict({s: MedNFDataset(files.root, s, device=device, files=files, transform=transform)
                                 for s in files.manifest.splits})
    if spec is None:
        return MedNFDataset(files.root, split, device=device, files=files, transform=transform)
    parts = [MedNFDataset(files.root, part.split, device=device, files=files, transform=transform, window=part)
             for part in parse_split_spec(spec, {s: v.count for s, v in files.manifest.splits.items()})]
    return parts[0] if len(parts) == 1 else MedNFConcat(parts, spec)


def _local(name_or_path: str | Path, root: str | Path | None, source: str, download: bool) -> Path:
    """The folder of a local dataset, or of a registered one downloaded now (see :func:`load`)."""
    try:
        path = find_dataset(name_or_path, root)
        if source in ("zenodo", "hf") and Path(name_or_path).expanduser().is_dir():
            raise ConfigError(f"source = {source!r} was given with a local path {name_or_path}; use source='auto'")
    except NotFoundError:
        if not download or source == "local" or Path(name_or_path).expanduser().is_dir() \
                or not is_registered(str(name_or_path)):
            raise  # nothing to download: the local error (with its "did you mean") is the useful one
        path = download_hf(str(name_or_path), root=root) if source == "hf" else download_zenodo(
            str(name_or_path), root=root)
    return path
