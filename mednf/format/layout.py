"""The on-disk layout of one MedNF dataset directory (see DESIGN.md) and where datasets live.

::

    <Name>/
      mednf.json          manifest (mednf.format.manifest), written last: its presence means "complete"
      model.safetensors   θ* (shared network), flat names as in mednf.engine.field
      latents.zarr/       Zarr v3 group, one array per split [N, P] float32, chunks of chunk_rows rows
      index.parquet       one row per sample: split, row, source_index, label | labels, psnr, ssim
      README.md           dataset card
      training.csv        one row per meta-iteration and per validation (mednf.building.curves)
      training.png        its curves
      reconstructions.png the first test samples: input, reconstruction, |error| (mednf build only)
      build.log           log of the build (not content: not checksummed)
      .partial/           state of a build in progress (checkpoints, finished blocks); removed at the end
      .continue/          the finished build's last and best checkpoints, for `mednf build --continue-to`

Every other file in the directory is content and must be listed in the manifest.
"""

from __future__ import annotations

import os
from pathlib import Path

from mednf.io.files import is_temporary

FORMAT_VERSION = 1
MANIFEST = "mednf.json"
MODEL = "model.safetensors"
LATENTS = "latents.zarr"
INDEX = "index.parquet"
CARD = "README.md"
TRAINING_CSV = "training.csv"
TRAINING_PNG = "training.png"
RECONSTRUCTIONS_PNG = "reconstructions.png"
FIGURES = (TRAINING_CSV, TRAINING_PNG, RECONSTRUCTIONS_PNG)  # what a build writes beside the data, for people
LOG = "build.log"
WORK = ".partial"
CONTINUE = ".continue"
_NOT_CONTENT = {MANIFEST, LOG, WORK}


def mednf_home() -> Path:
    """Where datasets live by default: ``$MEDNF_HOME`` or ``~/.cache/mednf``."""
    return Path(os.environ.get("MEDNF_HOME") or "~/.cache/mednf").expanduser()


def unfinished_build(path: Path) -> bool:
    """True if ``path`` holds the state of a build in progress or interrupted (``.partial/``: checkpoints,
    fitted blocks), which a download must never replace. A build that failed before it started leaves
    only ``build.log``: nothing to keep."""
    return (path / WORK).is_dir()


def content_files(root: Path) -> list[Path]:
    """Every file that belongs to the dataset's content (what the manifest checksums), sorted."""
    files = []
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root)
        if (rel.parts[0] in _NOT_CONTENT or any(part.startswith(".") for part in rel.parts) or not path.is_file()
                or is_temporary(path)):
            continue
        files.append(path)
    return files
