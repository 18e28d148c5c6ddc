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
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from mednf.errors import ConfigError
from mednf.io.files import is_temporary

FORMAT_VERSION = 1
DATASET_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*\Z")  # a dataset's name is a folder name under $MEDNF_HOME
MAX_SAMPLES = 10**10  # more samples than any split can have: a larger count is a damaged manifest
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


# ---------------------------------------------------------------------- where mednf may write
# A dataset folder is mednf's alone: every file in it is content listed by its manifest, or a build's state.
# Outputs of other commands never go into one, and nothing is written into a folder that is not mednf's.


def is_dataset_folder(path: Path) -> bool:
    """``path`` holds a dataset (a manifest beside its index) or a build in progress or interrupted."""
    return ((path / MANIFEST).is_file() and (path / INDEX).exists()) or unfinished_build(path)


def dataset_around(path: Path) -> Path | None:
    """The dataset folder that ``path`` is, or lies in (any of its parents), or None."""
    path = Path(path).expanduser().resolve()
    return next((folder for folder in (path, *path.parents) if is_dataset_folder(folder)), None)


def check_outside_datasets(path: Path, option: str) -> Path:
    """``path`` (expanded) if it is not in a dataset folder, else a one-line ConfigError naming ``option``:
    a file written there would be content its manifest does not list, and the dataset would read as damaged."""
    path = Path(path).expanduser()
    folder = dataset_around(path)
    if folder is not None:
        raise ConfigError(f"{option} {path} is inside the dataset {folder}: a file there would damage it; choose a "
                          "path outside it")
    return path


def foreign_entries(folder: Path, ours: Callable[[Path], bool]) -> list[str]:
    """The names in ``folder`` (absent: none) that ``ours`` does not recognise as mednf's own, sorted."""
    if not folder.is_dir():
        return []
    return sorted(p.name for p in folder.iterdir() if not ours(p))


def check_empty_or_ours(folder: Path, option: str, ours: Callable[[Path], bool], what: str,
                        markers: Iterable[str] = ()) -> Path:
    """``folder`` (expanded) if it is absent, empty, or an earlier ``what``: it holds one of ``markers`` (the
    files that only such an output has) and nothing that ``ours`` does not accept. Else a one-line
    ConfigError: mednf never writes into, or adopts files of, a folder that holds anything else. Names alone
    never make a folder mednf's, and a symbolic link (the folder itself or an entry) is never mednf's."""
    folder = Path(folder).expanduser()
    if folder.is_symlink():
        raise ConfigError(f"{option} {folder} is a symbolic link: mednf writes only into a real folder; give the "
                          "folder it points to")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} is a file: expected a folder (new or empty); choose another path")
    entries = [p for p in folder.iterdir() if not is_temporary(p)] if folder.is_dir() else []  # leftovers of a kill
    marked = any((folder / m).exists() and not (folder / m).is_symlink() and ours(folder / m) for m in markers)
    if entries and markers and not marked:
        shown = ", ".join(sorted(p.name for p in entries)[:3]) + (", …" if len(entries) > 3 else "")
        raise ConfigError(f"{option} {folder} already holds {shown}, which is not {what}: mednf writes only into a "
                          "new or empty folder; choose another one or empty it")
    foreign = foreign_entries(folder, lambda p: not p.is_symlink() and ours(p))
    if foreign:
        shown = ", ".join(foreign[:3]) + (", …" if len(foreign) > 3 else "")
        raise ConfigError(f"{option} {folder} already holds {shown}, which is not {what}: mednf writes only into a "
                          "new or empty folder; choose another one or empty it")
    return folder


BUILD_NAMES = frozenset({MANIFEST, MODEL, LATENTS, INDEX, CARD, *FIGURES, LOG, WORK, CONTINUE})


def check_build_folder(out: Path, option: str = "--out") -> Path:
    """The output folder of a build (expanded): not inside another dataset, and absent, empty or holding only
    a build's own files (an earlier run to resume or confirm; a build with other settings is refused later by
    its identity). Files of anyone else there are refused, never adopted as content. ``option`` names the
    folder in errors as the caller gave it (``--out``, or ``out=`` from Python)."""
    out = Path(out).expanduser()
    around = dataset_around(out.parent)
    if around is not None:
        raise ConfigError(f"{option} {out} is inside the dataset {around}: a build there would damage it; choose a "
                          "folder outside it")
    return check_empty_or_ours(out, option, lambda p: p.name in BUILD_NAMES or is_temporary(p),
                               "a MedNF build", markers=(MANIFEST, LOG, WORK))
