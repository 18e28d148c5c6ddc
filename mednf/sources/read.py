"""Read the source data of a builder spec (through its kind, :mod:`mednf.sources.kinds`), check that the
labels fit the builder, and get the original images of a built dataset's samples for evaluation and plots.

(The raw data a dataset is built from. Reading a built MedNF dataset is :func:`mednf.load`,
:mod:`mednf.loading`.)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mednf.arguments import CLI, Wording
from mednf.errors import FormatError, SourceError
from mednf.sources.base import SourceData, SplitData, Warn
from mednf.sources.kinds import ReadContext, Root, get_kind, kind_of
from mednf.sources.kinds.base import warn_source
from mednf.sources.spec import BuilderSpec


def load_source(
    spec: BuilderSpec,
    *,
    root: Root = None,
    source_npz: Root = None,
    max_samples: int | None = None,
    download_missing: bool = True,
    progress: bool = True,
    warn: Warn | None = None,
    recorded: dict[str, Any] | None = None,
    wording: Wording = CLI,
) -> SourceData:
    """All three splits of a builder's data, validated (and limited to ``max_samples`` per split). ``warn``
    (default: a :class:`~mednf.sources.base.SourceWarning`) receives what is usable but unusual; ``recorded``:
    the manifest ``source`` of a build this read continues, whose data is looked for where that build read it
    (:func:`mednf.sources.kinds.recorded_source`) before anything is downloaded; ``wording``: how messages
    name the options (the CLI's flags or :func:`mednf.build`'s keywords)."""
    context = ReadContext(root=root, source_npz=source_npz, download_missing=download_missing, progress=progress,
                          warn=warn or warn_source, recorded=recorded, wording=wording)
    data = kind_of(spec).load(spec, context)
    check_labels(spec, data.splits, data.origin)
    if max_samples is not None:
        data.splits = {s: SplitData(d.images[:max_samples], d.labels[:max_samples], d.source_index[:max_samples])
                       for s, d in data.splits.items()}
        data.description["max_samples"] = max_samples
    return data


def check_labels(spec: BuilderSpec, splits: dict[str, SplitData], origin: str) -> None:
    """Every label of the data has a name in the builder's ``[labels]``: class ids ``0..names-1``, or for
    multi-label one 0/1 column per name. A SourceError naming the values found otherwise."""
    n = spec.labels.num_classes
    multi = spec.labels.task == "multi-label"
    for split, data in splits.items():
        labels = data.labels
        width = n if multi else 1
        if labels.ndim != 2 or labels.shape[1] != width:
            raise SourceError(f"{origin}: the {split} labels have shape {labels.shape}, expected ({len(labels)}, "
                              f"{width}) for {spec.name} ({spec.labels.task}, {n} label names); check the data "
                              "belongs to this builder")
        found = np.unique(labels)
        limit = 2 if multi else n
        if found.size and (found[0] < 0 or found[-1] >= limit):
            values = ", ".join(str(v) for v in found[:12]) + (", …" if found.size > 12 else "")
            if multi:
                raise SourceError(f"{origin}: the {split} labels hold the values [{values}], but multi-label flags "
                                  f"of {spec.name} are 0 or 1; check the data belongs to this builder")
            raise SourceError(f"{origin}: the {split} labels hold the values [{values}], outside the {n} label names "
                              f"of {spec.name} (values 0..{n - 1}); give {spec.path or spec.name} [labels] one name "
                              "per label value, or check the data belongs to this builder")


def source_images(manifest: Any, split: str, source_index: np.ndarray,
                  root: Root = None) -> np.ndarray | None:
    """The original images ``[n, D, *spatial]`` (float in [0, 1]) of a built dataset's samples, when they
    can be had without a download: phantoms are regenerated, MedMNIST files are read from ``root`` (else
    ``$MEDMNIST_ROOT``, ``~/.medmnist``) or, failing that, from the path the build recorded
    (:func:`mednf.sources.kinds.recorded_source`), with the md5 the manifest recorded. None otherwise
    (:func:`mednf.sources.kinds.images_unavailable` says why)."""
    source = manifest.source  # a mednf.format.manifest.Manifest
    spec = BuilderSpec.from_dict(manifest.builder)
    data = get_kind(source["kind"], "manifest source").built_split(spec, source, split, root)
    if data is None:
        return None
    index = np.asarray(source_index)
    if index.size and (index.min() < 0 or index.max() >= len(data.images)):  # negative ones would wrap around
        raise FormatError(f"{manifest.name} {split}: source indices span {index.min()}..{index.max()}, its source "
                          f"has {len(data.images)} samples (0..{len(data.images) - 1}); the index is damaged, rebuild "
                          "it or download it again")
    images = data.images[index]
    return images.astype(np.float32) / 255.0 if images.dtype == np.uint8 else images.astype(np.float32)
