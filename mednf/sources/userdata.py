"""A user's own files as a source: the rules and helpers the kinds "images", "nifti" and "table1d" share
(the kinds themselves: :mod:`mednf.sources.kinds.userfiles`, :mod:`mednf.sources.kinds.folder` and one module
per kind).

- **Where**: ``[source] path``, resolved against the builder file's folder when relative and stored
  absolute (:mod:`mednf.sources.spec`).
- **Labels and splits** of a folder come from a CSV (``csv = "labels.csv"``, in the folder) with a header
  naming the columns ``path``, ``label`` and optionally ``split``; other columns are ignored. ``path`` is
  relative to the folder (absolute paths and ``..`` are refused). A label is one of the builder's
  ``[labels] names`` or a class id ``0..n-1``; for ``task = "multi-label"`` a ``;``-separated list of
  them (empty: no label set). A ``split`` is ``train``, ``val`` (or ``validation``) or ``test``.
- **Without a split column**, a seeded split by ratio: ``split_ratio = [train, val, test]`` (default
  [0.8, 0.1, 0.1]) with the builder's ``seed``; val and test get ``round(ratio · N)`` samples, train the
  rest; a NumPy ``default_rng(seed).permutation`` decides who goes where. Within a split, samples keep
  the CSV's order, and a sample's ``source_index`` is its row among all the samples (0-based), whatever
  its split (:func:`make_splits`).
- **[splits]** must equal the counts found (a user's data has no "official" counts to fall back on): a
  mismatch is one error that says which numbers to write.
- **Digest**: sha256 over the CSV and over every file's (relative path, sha256 of its bytes), sorted by
  path, recorded in the manifest's ``source.sha256``. Evaluation reads everything again and gets the
  images back only when the digest is the same
  (:meth:`~mednf.sources.kinds.userfiles.UserDataKind.built_split`), so it compares against the exact
  images the dataset was built from.
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np

from mednf.errors import ConfigError, SourceError, did_you_mean
from mednf.format.splits import SPLITS, canonical_split
from mednf.sources.base import SplitData, Warn
from mednf.sources.values import get_numbers, get_value

if TYPE_CHECKING:
    from mednf.sources.spec import BuilderSpec

DEFAULT_RATIO = (0.8, 0.1, 0.1)
DIGEST_VERSION = 1  # bump when what the digest covers changes


def parse_split_ratio(table: dict[str, Any], where: str) -> list[float]:
    """``split_ratio``: three numbers > 0 that sum to 1."""
    ratio = get_numbers(table, "split_ratio", where, 3, DEFAULT_RATIO)
    if min(ratio) <= 0 or abs(sum(ratio) - 1.0) > 1e-6:
        raise ConfigError(f"{where}: split_ratio = {ratio} is invalid: expected three fractions > 0 (train, val, "
                          "test) that sum to 1, e.g. [0.8, 0.1, 0.1]")
    return ratio


def parse_csv_name(table: dict[str, Any], where: str) -> str:
    """``csv``: the labels file, relative to the folder."""
    name = get_value(table, "csv", where, str, "labels.csv")
    if not name or Path(name).is_absolute() or ".." in PurePosixPath(name.replace("\\", "/")).parts:
        raise ConfigError(f"{where}: csv = {name!r} is invalid: expected a file name inside the folder, e.g. "
                          "'labels.csv'")
    return name


class Digest:
    """sha256 over named byte strings, independent of the order they were added in."""

    def __init__(self) -> None:
        self._parts: list[tuple[str, str]] = []

    def add(self, name: str, data: bytes) -> None:
        """Add the sha256 of ``data`` under ``name``."""
        self._parts.append((name, hashlib.sha256(data).hexdigest()))

    def hexdigest(self) -> str:
        """The sha256 over every (name, sha256) pair, sorted by name, with the digest version."""
        total = hashlib.sha256(f"mednf-userdata-v{DIGEST_VERSION}\n".encode())
        for name, part in sorted(self._parts):
            total.update(f"{name}\0{part}\n".encode())
        return total.hexdigest()


def read_bytes(path: Path, what: str, fix: str) -> bytes:
    """The bytes of ``path``, or one SourceError line."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise SourceError(f"{path} does not exist ({what}); {fix}") from None
    except OSError as err:
        raise SourceError(f"{path} cannot be read ({err.strerror or err}); check its permissions") from None


@dataclass
class LabelTable:
    """The rows of a folder's labels CSV: one file per row, in the CSV's order."""

    csv_path: Path
    raw: bytes  # the CSV's bytes (part of the digest)
    files: list[str]  # [N] paths relative to the folder, as written
    labels: list[str]  # [N] label cells
    splits: list[str] | None  # [N] split cells, None without a split column
    lines: list[int]  # [N] line number of each row in the CSV (for messages)


def csv_rows(text: str, path: Path) -> list[tuple[int, list[str]]]:
    """The non-blank rows of a CSV text with their 1-based line numbers (SourceError naming ``path`` if the
    quoting is broken)."""
    try:
        rows = list(csv.reader(io.StringIO(text)))
    except csv.Error as err:
        raise SourceError(f"{path} is not a readable CSV ({err}); fix its quoting") from None
    return [(n, r) for n, r in enumerate(rows, start=1) if any(c.strip() for c in r)]


def read_label_csv(folder: Path, csv_name: str, suffixes: Sequence[str], what: str) -> LabelTable:
    """Read and check the labels CSV of ``folder`` (``path,label[,split]`` with a header)."""
    if not folder.is_dir():
        problem = "is not a folder" if folder.exists() else "does not exist"
        raise SourceError(f"{folder} {problem}: expected a folder of {what} and {csv_name}; fix [source] path")
    path = folder / csv_name
    if not path.is_file():
        empty = not any(folder.iterdir())
        raise SourceError(f"{folder} is empty: expected {what} and {csv_name} (columns path,label[,split])"
                          if empty else f"{path} does not exist: expected a CSV with columns path,label[,split] "
                          f"naming the {what} of {folder}; write it, or set [source] csv")
    raw = read_bytes(path, "the labels CSV", "write it")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SourceError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    rows = csv_rows(text, path)
    if not rows:
        raise SourceError(f"{path} is empty: expected a header path,label[,split] and one row per file")
    header = [c.strip().lower() for c in rows[0][1]]
    for column in ("path", "label"):
        if column not in header:
            raise SourceError(f"{path}: the header {rows[0][1]} has no column {column!r}: expected a first line "
                              "such as path,label,split; add it")
    col = {name: header.index(name) for name in ("path", "label", "split") if name in header}
    files, labels, splits, lines = [], [], [], []
    seen: dict[str, int] = {}
    for line, row in rows[1:]:
        if len(row) != len(header):
            raise SourceError(f"{path} line {line} has {len(row)} columns, the header {len(header)}; fix that row")
        file = row[col["path"]].strip()
        parts = PurePosixPath(file.replace("\\", "/"))
        if not file or parts.is_absolute() or ".." in parts.parts or Path(file).is_absolute():
            raise SourceError(f"{path} line {line}: path {file!r} is invalid: expected a path relative to {folder} "
                              "(no absolute paths, no ..)")
        if not file.lower().endswith(tuple(suffixes)):
            raise SourceError(f"{path} line {line}: {file!r} is not one of {', '.join(suffixes)}; list only "
                              f"{what} files")
        if parts.as_posix() in seen:
            raise SourceError(f"{path} line {line}: {file!r} is listed twice (also on line {seen[parts.as_posix()]}); "
                              "list each file once")
        seen[parts.as_posix()] = line
        files.append(parts.as_posix())
        labels.append(row[col["label"]].strip())
        splits.append(row[col["split"]].strip() if "split" in col else "")
        lines.append(line)
    if not files:
        raise SourceError(f"{path} lists no files: expected one row per file after the header")
    return LabelTable(path, raw, files, labels, splits if "split" in col else None, lines)


def warn_unlisted(folder: Path, table: LabelTable, suffixes: Sequence[str], warn: Warn) -> None:
    """One warning when the folder holds files of this kind that the CSV does not list (they are not used)."""
    listed = set(table.files)
    unlisted = [p for p in folder.rglob("*") if p.is_file() and p.name.lower().endswith(tuple(suffixes))
                and p.relative_to(folder).as_posix() not in listed]
    if unlisted:
        warn(f"{len(unlisted)} file(s) in {folder} are not listed in {table.csv_path.name} and are not used "
             f"(e.g. {unlisted[0].relative_to(folder).as_posix()})")


def label_rows(cells: Sequence[str], spec: BuilderSpec, origin: str, where: Callable[[int], str]) -> np.ndarray:
    """Label cells → ``[N, L]`` int64: class ids (L = 1) or 0/1 flags per name (multi-label, L = names).

    A cell is a name of ``[labels] names`` or an integer id; ids outside ``0..n-1`` of a single-label task
    are left for :func:`mednf.sources.read.check_labels`, which names ``origin`` and the values found.
    """
    names = spec.labels.names
    multi = spec.labels.task == "multi-label"
    out = np.zeros((len(cells), len(names) if multi else 1), dtype=np.int64)
    for i, cell in enumerate(cells):
        parts = [p.strip() for p in cell.split(";") if p.strip()] if multi else [cell]
        if not multi and not cell:
            raise SourceError(f"{where(i)}: the label is empty: expected one of the {len(names)} names of "
                              f"{spec.path or spec.name} [labels] or a class id 0..{len(names) - 1}")
        for part in parts:
            value = _label_id(part, names)
            if value is None:
                raise SourceError(f"{where(i)}: label {part!r} is not one of the {len(names)} names of "
                                  f"{spec.path or spec.name} [labels] ({', '.join(names[:8])}"
                                  f"{', …' if len(names) > 8 else ''}) nor a class id{did_you_mean(part, names)}")
            if multi:
                if not 0 <= value < len(names):
                    raise SourceError(f"{where(i)}: label id {value} is outside the {len(names)} label names of "
                                      f"{spec.name} (ids 0..{len(names) - 1}); fix {origin} or [labels] names")
                out[i, value] = 1
            else:
                out[i, 0] = value
    return out


def _label_id(text: str, names: Sequence[str]) -> int | None:
    if text in names:
        return names.index(text)
    try:
        return int(text)
    except ValueError:
        pass
    try:
        number = float(text)
    except ValueError:
        return None
    return int(number) if number.is_integer() else None


def split_of(cells: list[str] | None, count: int, spec: BuilderSpec, ratio: Sequence[float], origin: str,
             where: Callable[[int], str]) -> tuple[np.ndarray, dict[str, Any]]:
    """Which split each of ``count`` samples is in (``[N]`` int64: index into SPLITS) and how that was
    decided (for the manifest): the split cells, or a seeded split by ``ratio`` when ``cells`` is None."""
    if cells is not None:
        index = np.empty(len(cells), dtype=np.int64)
        for i, cell in enumerate(cells):
            name = canonical_split(cell)  # "validation" (the Hugging Face name) is "val"
            if name not in SPLITS:
                raise SourceError(f"{where(i)}: split {cell!r} is invalid: expected one of train, val (or "
                                  f"validation), test{did_you_mean(cell.lower(), SPLITS)}")
            index[i] = SPLITS.index(name)
        how: dict[str, Any] = {"split": "column"}
    else:
        index = ratio_split(count, ratio, spec.seed)
        how = {"split": "ratio", "split_ratio": list(ratio), "split_seed": spec.seed}
    for s, split in enumerate(SPLITS):
        if not (index == s).any():
            fix = "give it rows in the split column" if cells is not None else "add files or change split_ratio"
            raise SourceError(f"{origin}: the {split} split is empty ({len(index)} samples in all); {fix}")
    return index, how


def ratio_split(count: int, ratio: Sequence[float], seed: int) -> np.ndarray:
    """``[count]`` split indices: val and test get ``round(ratio · count)`` samples, train the rest, chosen
    by ``default_rng(seed).permutation``."""
    n_val, n_test = (math.floor(r * count + 0.5) for r in ratio[1:])
    n_train = max(0, count - n_val - n_test)
    order = np.random.default_rng(seed).permutation(count)
    index = np.empty(count, dtype=np.int64)
    index[order[:n_train]] = 0
    index[order[n_train:n_train + n_val]] = 1
    index[order[n_train + n_val:]] = 2
    return index


def make_splits(images: np.ndarray, labels: np.ndarray, split: np.ndarray) -> dict[str, SplitData]:
    """``images [N, C, *spatial]``, ``labels [N, L]`` and ``split [N]`` → the three splits, each in the
    order of the input; ``source_index`` is each sample's row in the input (its CSV row / file entry, 0-based),
    so ``index.parquet`` says where every latent came from."""
    out = {}
    for s, name in enumerate(SPLITS):
        rows = np.flatnonzero(split == s)
        out[name] = SplitData(images[rows], labels[rows], rows.astype(np.int64))
    return out


def all_rows(splits: dict[str, SplitData]) -> SplitData:
    """The three splits of :func:`make_splits` back as one collection indexed by ``source_index``."""
    parts = list(splits.values())
    count = sum(len(p.source_index) for p in parts)
    images = np.empty((count, *parts[0].images.shape[1:]), parts[0].images.dtype)
    labels = np.empty((count, *parts[0].labels.shape[1:]), parts[0].labels.dtype)
    for part in parts:
        images[part.source_index], labels[part.source_index] = part.images, part.labels
    return SplitData(images, labels, np.arange(count, dtype=np.int64))


def describe(kind: str, spec: BuilderSpec, path: Path, files: int, digest: str, how: dict[str, Any],
             **extra: Any) -> dict[str, Any]:
    """The manifest ``source`` record of a user's files: where, how many, the digest, the split, the rules."""
    return {"kind": kind, "file": str(path), "path": str(path), "files": files, "sha256": digest, **how,
            "seed": spec.seed, **extra, "license": spec.source.license}
