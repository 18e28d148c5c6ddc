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
from mednf.dataset import MedNFDataset, MedNFDatasetDict, Transform
from mednf.errors import ConfigError, NotFoundError
from mednf.format.lazy import DEFAULT_CACHE_BYTES
from mednf.format.reader import open_dataset
from mednf.format.splits import SPLITS, check_split
from mednf.lookup import find_dataset, info
from mednf.remote.fetch import is_url
from mednf.remote.hf import download_hf
from mednf.remote.lazy import open_remote
from mednf.remote.registry import is_registered
from mednf.remote.zenodo import download_zenodo

__all__ = ["find_dataset", "info", "load"]  # find_dataset and info live in mednf.lookup (no torch)


def load(name_or_path: str | Path, split: str | None = "train", *, root: str | Path | None = None,
         source: str = "auto", download: bool = True, device: str | torch.device | None = None,
         verify: bool = True, transform: Transform | None = None,
         cache_bytes: int | None = None) -> MedNFDataset | MedNFDatasetDict:
    """A MedNF dataset: a directory, a name in the cache (``root`` / ``$MEDNF_HOME``), (``download``) a name
    fetched from Zenodo / the HF Hub, or the URL of a published dataset folder, read lazily.

    ``split`` is ``"train"``, ``"val"`` (or its Hugging Face name ``"validation"``), ``"test"``, or None for
    all three (:class:`MedNFDatasetDict`). ``transform``: ``fn(item) -> item`` applied to every item, one
    sample at a time (``ds[i]``, DataLoader samples, and each sample of a batch index before stacking; see
    :mod:`mednf.dataset`); its failure is a one-line :class:`~mednf.errors.TransformError`.
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
    if split is not None:
        split = check_split(split, SPLITS)  # "validation" → "val"
    if is_url(name_or_path):
        if source != "auto":
            raise ConfigError(f"source = {source!r} was given with a URL {name_or_path}; use source='auto'")
        remote = open_remote(str(name_or_path), cache_bytes=cache)
        if split is None:
            return MedNFDatasetDict({s: MedNFDataset(remote.root, s, device=device, files=remote, transform=transform)
                                     for s in remote.manifest.splits})
        return MedNFDataset(remote.root, split, device=device, files=remote, transform=transform)
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
    files = open_dataset(path, verify=verify, cache_bytes=cache)
    if split is None:
        return MedNFDatasetDict({s: MedNFDataset(path, s, device=device, files=files, transform=transform)
                                 for s in files.manifest.splits})
    return MedNFDataset(path, split, device=device, files=files, transform=transform)
