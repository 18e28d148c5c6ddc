"""Read the source data of a builder spec (MedMNIST file or phantoms), and the original images of a built
dataset's samples for evaluation and plots.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from mednf.errors import SourceError
from mednf.sources.base import SourceData, SourceWarning, SplitData
from mednf.sources.medmnist import expected_md5, file_md5, locate_medmnist, medmnist_root, read_npz, source_url
from mednf.sources.phantoms import GENERATOR_VERSION, phantom_source
from mednf.sources.spec import BuilderSpec


def load_source(
    spec: BuilderSpec,
    *,
    root: str | Path | None = None,
    source_npz: str | Path | None = None,
    max_samples: int | None = None,
    download_missing: bool = True,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> SourceData:
    """All three splits of a builder's data, validated (and limited to ``max_samples`` per split)."""
    warn = warn or (lambda msg: warnings.warn(msg, SourceWarning, stacklevel=3))
    if spec.source.kind == "phantom":
        splits = phantom_source(spec)
        description: dict[str, object] = {"kind": "phantom", "size": spec.source.size, "seed": spec.seed,
                                          "generator": GENERATOR_VERSION, "official": True}
    else:
        expected = expected_md5(spec)
        if source_npz is not None:
            path = Path(source_npz).expanduser()
            if not path.is_file():
                raise SourceError(f"--source-npz {path} does not exist; give the path of a MedMNIST-layout .npz")
            md5 = file_md5(path)
        else:
            path, md5 = locate_medmnist(spec, root, download_missing=download_missing, progress=progress)
        splits = read_npz(path, spec)
        official = md5 == expected
        counts = {s: len(d.images) for s, d in splits.items()}
        if official and counts != spec.splits:
            raise SourceError(f"{path} has split counts {counts}, but {spec.path} expects {spec.splits}; "
                              "fix [splits] in the builder file")
        if not official:
            warn(f"{path} is not the official {spec.source.file_name} (md5 {md5}, official {expected}); "
                 f"building from it anyway with split counts {counts}")
        description = {"kind": "medmnist", "flag": spec.source.flag, "size": spec.source.size,
                       "file": spec.source.file_name, "md5": md5, "official": official,
                       "url": source_url(spec), "license": spec.source.license}
    if max_samples is not None:
        splits = {s: SplitData(d.images[:max_samples], d.labels[:max_samples], d.source_index[:max_samples])
                  for s, d in splits.items()}
        description["max_samples"] = max_samples
    return SourceData(splits, description)


def source_images(manifest: dict, split: str, source_index: np.ndarray,
                  root: str | Path | None = None) -> np.ndarray | None:
    """The original images ``[n, D, *spatial]`` (float in [0, 1]) of a built dataset's samples, when they
    can be had without a download: phantoms are regenerated, MedMNIST files are read from the root if
    present with the md5 the manifest recorded. None otherwise."""
    source = manifest["source"]
    spec = BuilderSpec.from_dict(manifest["builder"])
    if source["kind"] == "phantom":
        if source.get("generator") != GENERATOR_VERSION:
            return None  # drawn by another version of mednf.sources.phantoms
        data = phantom_source(spec)[split]
    else:
        path = medmnist_root(root) / spec.source.file_name
        if not path.is_file() or file_md5(path) != source["md5"]:
            return None
        data = read_npz(path, spec)[split]
    images = data.images[np.asarray(source_index)]
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
