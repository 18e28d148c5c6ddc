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
      .mednf-owner        mednf's mark: this folder is a build's (mednf.io.files.write_owner_mark)

Every other file in the directory is content and must be listed in the manifest.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path

from mednf.errors import ConfigError, MednfError
from mednf.io import jsonsafe
from mednf.io.files import OWNER_MARK, is_temporary, owner_mark

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


# the kinds of mednf's output folders (an HF export is never marked: its folder is uploaded as it is)
KINDS = {"build": "a MedNF build", "zenodo-export": "a Zenodo export", "hf-export": "a Hugging Face export"}


def _shown(names: list[str]) -> str:
    return ", ".join(names[:3]) + (", …" if len(names) > 3 else "")


def check_output_folder(folder: Path, option: str, *, kind: str, name: str | None, ours: Callable[[Path], bool],
                        earlier: Callable[[Path], bool] = lambda _: False) -> Path:
    """``folder`` (expanded) if mednf may write its ``kind`` output (see :data:`KINDS`) of the dataset ``name`` there:
    it is absent, empty, or mednf's own: it carries mednf's mark of that kind (and, with ``name``, of that
    dataset), or (``earlier``) it is such an output of a mednf that did not mark its folders yet. In a folder
    of mednf's, every entry must be one that ``ours`` accepts (its own files), the mark or a temporary file of
    mednf's. Anything else is a one-line ConfigError and nothing there changes: names alone (a ``build.log``,
    a ``.tar``) never make a folder mednf's, and a symbolic link (the folder itself or an entry) never is."""
    folder = Path(folder).expanduser()
    what = f"{KINDS[kind]} of {name}" if name else KINDS[kind]
    if folder.is_symlink():
        raise ConfigError(f"{option} {folder} is a symbolic link: mednf writes only into a real folder; give the "
                          "folder it points to")
    if folder.exists() and not folder.is_dir():
        raise ConfigError(f"{option} {folder} is a file: expected a folder (new or empty); choose another path")
    # the mark being written by another rank of the same build (``..mednf-owner.<pid>.tmp``) is no one else's
    entries = sorted((p for p in folder.iterdir() if not (is_temporary(p) and p.name.startswith(f".{OWNER_MARK}.")))
                     if folder.is_dir() else [], key=lambda p: p.name)
    if not entries:
        return folder
    mark = owner_mark(folder)
    if mark is not None and (mark[0] != kind or (name is not None and mark[1] != name)):
        other = f"{KINDS.get(mark[0], 'the output of another mednf command')} of {mark[1]}"
        raise ConfigError(f"{option} {folder} holds {other}, not {what}: writing there would replace it; choose "
                          "another folder")
    if mark is None and not earlier(folder):
        raise ConfigError(f"{option} {folder} already holds {_shown([p.name for p in entries])}, which is not {what}: "
                          "mednf writes only into a new or empty folder; choose another one or empty it")
    foreign = [p.name for p in entries if p.name != OWNER_MARK and not is_temporary(p)
               and (p.is_symlink() or not ours(p))]
    if foreign:
        raise ConfigError(f"{option} {folder} already holds {_shown(foreign)}, which is not {what}: mednf writes only "
                          "into a new or empty folder; choose another one or empty it")
    return folder


BUILD_NAMES = frozenset({MANIFEST, MODEL, LATENTS, INDEX, CARD, *FIGURES, LOG, WORK, CONTINUE})


def earlier_build(folder: Path) -> bool:
    """``folder`` holds a build of a mednf that did not mark its folders yet: a manifest (a JSON object with a
    manifest's sections; the full check is the reader's), or an unfinished build's recorded identity
    (``.partial/build.json``). A ``build.log`` or a card alone is not one."""
    if (folder / MANIFEST).is_file() and not (folder / MANIFEST).is_symlink():
        try:
            data = jsonsafe.loads((folder / MANIFEST).read_bytes(), str(folder / MANIFEST), "")
        except (MednfError, OSError):
            return False
        return isinstance(data, dict) and {"name", "builder", "engine", "files"} <= set(data)
    identity = folder / WORK / "build.json"
    if identity.is_file() and not identity.is_symlink() and not (folder / WORK).is_symlink():
        try:
            return isinstance(json.loads(identity.read_bytes()), dict)
        except (OSError, ValueError, RecursionError):
            return False
    return False


def check_build_folder(out: Path, option: str = "--out") -> Path:
    """The output folder of a build (expanded): not inside another dataset, and absent, empty, or a build's
    folder (marked by mednf, or an earlier mednf's build: :func:`earlier_build`) holding only a build's own
    files (an earlier run to resume or confirm; a build with other settings is refused later by its identity).
    Files of anyone else there are refused, never adopted as content or deleted. ``option`` names the folder in
    errors as the caller gave it (``--out``, or ``out=`` from Python)."""
    out = Path(out).expanduser()
    around = dataset_around(out.parent)
    if around is not None:
        raise ConfigError(f"{option} {out} is inside the dataset {around}: a build there would damage it; choose a "
                          "folder outside it")
    return check_output_folder(out, option, kind="build", name=None, ours=lambda p: p.name in BUILD_NAMES,
                               earlier=earlier_build)
