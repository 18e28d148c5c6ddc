"""Where a dataset is and what it holds, from its manifest alone: :func:`find_dataset` and ``mednf.info``.

Kept apart from :mod:`mednf.loading` (which opens a dataset with torch, zarr and pyarrow) so that commands that
only read a manifest (``mednf info``) start without importing any of them.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from mednf.errors import NotFoundError, did_you_mean, match_name
from mednf.format.layout import INDEX, MANIFEST, mednf_home
from mednf.format.manifest import Manifest
from mednf.remote.fetch import RemoteFolder, is_url, remote_manifest


def find_dataset(name_or_path: str | Path, root: str | Path | None = None) -> Path:
    """A dataset directory from a path, or from a name (case-insensitive) in ``root`` / ``$MEDNF_HOME``."""
    path = Path(name_or_path).expanduser()
    bare_name = isinstance(name_or_path, str) and "/" not in name_or_path and not name_or_path.startswith(".")
    if path.is_dir() and not (bare_name and not (path / INDEX).is_file()):
        # a folder given by path; a bare name that happens to be a folder here (e.g. an HF export, which has
        # a manifest but no index) is looked up in the cache instead
        if not (path / MANIFEST).is_file():
            raise NotFoundError(f"{path} has no {MANIFEST}: it is not a complete MedNF dataset (an unfinished "
                                "build resumes when you rerun `mednf build`)")
        return path
    home = Path(root).expanduser() if root else mednf_home()
    name = str(name_or_path)
    if not bare_name:  # a path, not a name: nothing to build under that name
        raise NotFoundError(f"{path} does not exist ({path.name!r} is not in {path.parent}): expected a dataset "
                            f"folder; check the path, or give the name of a dataset in {home}")
    candidates = [p for p in home.iterdir() if (p / MANIFEST).is_file()] if home.is_dir() else []
    found = match_name(name, [p.name for p in candidates], str(home))
    if found is not None:
        return home / found
    known = sorted(p.name for p in candidates)
    hint = did_you_mean(name, known)
    raise NotFoundError(f"dataset {name!r} is not in {home} (found: {', '.join(known) or 'none'}){hint}; "
                        f"build it with `mednf build {name.lower()}` or give the path of a dataset directory")


def _image_shape(builder: dict[str, Any]) -> dict[str, int]:
    """The size of a dataset's signals: side length, dimensions and channels of the builder's source."""
    source = builder["source"]
    return {"size": source["size"], "dims": source["dims"], "channels": source["channels"]}


def info(name_or_path: str | Path, root: str | Path | None = None) -> dict[str, Any]:
    """Manifest summary: counts, P, hyper-parameters, PSNR/SSIM per split, licence, source, path (a URL:
    only its manifest is fetched)."""
    if is_url(name_or_path):
        folder = RemoteFolder(str(name_or_path))
        path: str | Path = folder.url
        m = remote_manifest(folder)
    else:
        path = find_dataset(name_or_path, root)
        m = Manifest.read(path)
    return {"name": m.name, "path": str(path), "splits": {s: dataclasses.asdict(v) for s, v in m.splits.items()},
            "latent_dim": m.latent.dim, "labels": {"task": m.labels.task, "names": list(m.labels.names)},
            "engine": m.engine, "source": m.source, "license": m.license, "image": _image_shape(m.builder),
            "created": m.created, "device": m.device,
            "meta_training": {k: v for k, v in m.meta_training.items() if k != "history"},
            "software": m.software, "size_bytes": m.size_bytes}
