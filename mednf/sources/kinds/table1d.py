"""``[source] kind = "table1d"``: 1D signals (``dims = 1``, ``size`` = signal length, e.g. 187 for the
MIT-BIH heartbeats) from one CSV, NPY or NPZ file (``[source] path``).

Read with the standard ``csv`` module and NumPy (``np.load(allow_pickle=False)``): a table of numbers
needs nothing more. Signals are not resampled: their length must equal ``size``.

- **CSV**: one row per signal, one column per time step. A first row that is not all numbers is a header
  (column names); without one, columns are numbered. ``label_column``: ``"last"`` (default: the last
  column, as in the Kaggle MIT-BIH files), ``"none"`` (every label 0), or a header name. With a header, a
  column named ``split`` (train / val / test) gives the splits. Gives ``channels = 1``.
- **NPY**: a numeric array ``[N, L]`` (``label_column = "last"`` takes its last column, ``"none"`` no
  labels) or ``[N, C, L]`` (``label_column = "none"``).
- **NPZ**: array ``signals`` ``[N, L]`` or ``[N, C, L]``; ``label_column`` ``"last"`` (last column of a 2D
  ``signals``), ``"none"``, or the name of another array: ``[N]`` class ids or ``[N, names]`` 0/1 flags
  (multi-label); an optional array ``split`` of the strings train / val / test.

Labels are names of ``[labels] names`` or class ids (multi-label CSV cells: ``;``-separated). Without a
split column, a seeded split by ``split_ratio`` (:mod:`mednf.sources.userdata`). ``normalise``:
``"minmax-global"`` (default: (x − min) / (max − min) with the min and max over every value of the file,
recorded in the manifest), ``"minmax-signal"`` (each signal on its own), or ``"none"`` (values must lie
in [0, 1]). NaN / inf are refused. Images are float32 ``[N, C, L]``.
"""

from __future__ import annotations

import io
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mednf.errors import ConfigError, SourceError
from mednf.sources.base import SourceData, Warn, no_warnings
from mednf.sources.kinds.userfiles import UserDataKind
from mednf.sources.userdata import (
    Digest,
    csv_rows,
    describe,
    label_rows,
    make_splits,
    parse_split_ratio,
    read_bytes,
    split_of,
)
from mednf.sources.values import get_choice, get_value

if TYPE_CHECKING:
    from mednf.sources.spec import BuilderSpec, SourceSpec

SUFFIXES = (".csv", ".npy", ".npz")
NORMALISE = ("minmax-global", "minmax-signal", "none")


@dataclass
class Table:
    """What a file holds, before the checks."""

    signals: np.ndarray  # [N, C, L] float64
    labels: list[str] | np.ndarray | None  # CSV cells, an array's labels, or None (no label column)
    splits: list[str] | None  # [N] split names, None without a split column
    where: Callable[[int], str]  # signal i → "file line k" for messages


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _looks_like_header(cells: list[str], label_column: str) -> bool:
    """Whether a first row names columns: a named label column needs a header; otherwise the row is a header
    when a *signal* cell is not a number (a label name in the last cell is data, not a header)."""
    cells = [c.strip() for c in cells]
    if label_column not in ("last", "none"):
        return label_column in cells or "split" in cells
    data = cells[:-1] if label_column == "last" else cells
    return "split" in cells or not all(_is_number(c) for c in data)


def read_csv(raw: bytes, path: Path, label_column: str, *, multi_label: bool = False) -> Table:
    """A CSV's signals, labels and splits (see the module docstring); one line naming the cell
    at fault otherwise."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        raise SourceError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save it as UTF-8") from None
    fast = None if multi_label else _numbers_only(text, path, label_column)  # multi-label cells: "0;2"
    return fast or _read_rows(text, path, label_column)


def _numbers_only(text: str, path: Path, label_column: str) -> Table | None:
    """The fast path (C parser, ~6x faster on the 87k MIT-BIH beats): a CSV of plain numbers without a split
    column; None when it is anything else (:func:`_read_rows` then reads it and names any bad cell)."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    cells = [c.strip() for c in first.split(",")]
    header = _looks_like_header(cells, label_column)
    if header and "split" in cells or label_column not in ("last", "none", *(cells if header else ())):
        return None
    try:
        values = np.loadtxt(io.StringIO(text), delimiter=",", skiprows=1 if header and text.startswith(first) else 0,
                            ndmin=2, dtype=np.float64, comments=None)
    except ValueError:
        return None
    if values.shape[1] != len(cells):
        return None
    label_at = {"last": values.shape[1] - 1, "none": None}.get(label_column)
    if label_at is None and label_column != "none":
        label_at = cells.index(label_column)
    keep = [j for j in range(values.shape[1]) if j != label_at]
    labels = values[:, label_at] if label_at is not None else None
    return Table(values[:, keep][:, None], labels, None, lambda i: f"{path} data row {i + 1}")


def _read_rows(text: str, path: Path, label_column: str) -> Table:
    numbered = csv_rows(text, path)
    if not numbered:
        raise SourceError(f"{path} is empty: expected one row of numbers per signal")
    has_header = _looks_like_header(numbered[0][1], label_column)
    names = [c.strip() for c in numbered[0][1]] if has_header else [str(i) for i in range(len(numbered[0][1]))]
    body = numbered[1:] if has_header else numbered
    if not body:
        raise SourceError(f"{path} has a header but no rows: expected one row of numbers per signal")
    width = len(names)
    for line, row in body:
        if len(row) != width:
            raise SourceError(f"{path} line {line} has {len(row)} columns, expected {width}; every row needs the "
                              "same number of values")
    if label_column == "last":
        label_at: int | None = width - 1
    elif label_column == "none":
        label_at = None
    elif has_header and label_column in names:
        label_at = names.index(label_column)
    else:
        found = f"its columns are {names[:6]}{' …' if width > 6 else ''}" if has_header else "it has no header"
        raise SourceError(f"{path} has no column {label_column!r} ({found}); set [source] label_column to a column "
                          "name, 'last' or 'none'")
    split_at = names.index("split") if has_header and "split" in names and label_at != names.index("split") else None
    numeric = [j for j in range(width) if j not in (label_at, split_at)]
    cells = np.array([[row[j].strip() for j in numeric] for _, row in body])  # [N, L] str
    try:
        signals = cells.astype(np.float64)
    except ValueError:
        i, j = next((i, j) for i, j in np.ndindex(cells.shape) if not _is_number(cells[i, j]))
        raise SourceError(f"{path} line {body[i][0]}, column {names[numeric[j]]!r}: {str(cells[i, j])!r} is not a "
                          "number; every signal value must be numeric") from None
    labels = [row[label_at].strip() for _, row in body] if label_at is not None else None
    splits = [row[split_at].strip() for _, row in body] if split_at is not None else None
    return Table(signals[:, None], labels, splits, lambda i: f"{path} line {body[i][0]}")


def read_array(raw: bytes, path: Path, label_column: str) -> Table:
    """An NPY or NPZ file's signals, labels and splits (see the module docstring)."""
    try:
        loaded = np.load(io.BytesIO(raw), allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise SourceError(f"{path} is not a readable {path.suffix} file ({str(err) or type(err).__name__}); write it "
                          "again with numpy.save / numpy.savez") from None
    labels: np.ndarray | None = None
    splits = None
    if isinstance(loaded, np.ndarray):
        signals = loaded
        if label_column not in ("last", "none"):
            raise SourceError(f"{path} is an .npy array without named columns: set [source] label_column = 'last' "
                              "or 'none' (or use an .npz with a labels array)")
    else:
        with loaded:
            try:
                if "signals" not in loaded.files:
                    raise SourceError(f"{path} has no array 'signals' (it has {sorted(loaded.files)}): expected "
                                      "signals [N, L] or [N, C, L]; rename it")
                signals = loaded["signals"]
                if label_column not in ("last", "none"):
                    if label_column not in loaded.files:
                        raise SourceError(f"{path} has no array {label_column!r} (it has {sorted(loaded.files)}); set "
                                          "[source] label_column to one of them, 'last' or 'none'")
                    labels = loaded[label_column]
                if "split" in loaded.files:
                    splits = [str(s) for s in loaded["split"].tolist()]
            except ValueError as err:  # object arrays need pickle: refused
                raise SourceError(f"{path}: an array cannot be read without pickle ({err}); store plain numeric "
                                  "arrays and a string array for split") from None
            except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
                raise SourceError(f"{path} is damaged ({err}); write it again") from None
    if not (np.issubdtype(signals.dtype, np.integer) or np.issubdtype(signals.dtype, np.floating)):
        raise SourceError(f"{path}: signals have dtype {signals.dtype}: expected numbers; convert them")
    if signals.ndim not in (2, 3) or len(signals) == 0:
        raise SourceError(f"{path}: signals have shape {signals.shape}: expected [N, L] or [N, C, L] with N ≥ 1")
    signals = signals.astype(np.float64)
    if label_column == "last":
        if signals.ndim != 2:
            raise SourceError(f"{path}: label_column = 'last' needs signals [N, L + 1], found {signals.shape}; set "
                              "label_column = 'none' or to the name of a labels array")
        labels, signals = signals[:, -1], signals[:, :-1]
    if labels is not None and len(labels) != len(signals):
        raise SourceError(f"{path}: {len(labels)} labels for {len(signals)} signals; one label (row) per signal")
    if splits is not None and len(splits) != len(signals):
        raise SourceError(f"{path}: {len(splits)} split entries for {len(signals)} signals; one per signal")
    return Table(signals if signals.ndim == 3 else signals[:, None], labels, splits,
                 lambda i: f"{path} signal {i}")


def numeric_labels(values: np.ndarray, spec: BuilderSpec, path: Path) -> np.ndarray:
    """An array's labels → ``[N, L]`` int64 (integral values only; the range is checked by check_labels)."""
    values = np.asarray(values)
    if not (np.issubdtype(values.dtype, np.integer) or np.issubdtype(values.dtype, np.floating)):
        raise SourceError(f"{path}: labels have dtype {values.dtype}: expected integer class ids; convert them")
    integral = np.isfinite(values).all() and (values == np.round(values)).all()
    if np.issubdtype(values.dtype, np.floating) and not integral:
        raise SourceError(f"{path}: labels hold non-integer values (e.g. {values[values != np.round(values)][:1]}): "
                          "expected class ids; check label_column")
    values = values.astype(np.int64)
    return values.reshape(len(values), -1)


class Table1DKind(UserDataKind):
    """1D signals from one table file (see the module docstring)."""

    name = "table1d"
    what = "signals"
    source_keys = ("path", "label_column", "normalise", "split_ratio")

    def parse_options(self, table: dict[str, Any], where: str) -> dict[str, Any]:
        """``label_column``, ``normalise`` and ``split_ratio``."""
        label_column = get_value(table, "label_column", where, str, "last")
        if not label_column:
            raise ConfigError(f"{where}: label_column = '' is invalid: expected 'last', 'none' or a column name")
        return {"label_column": label_column,
                "normalise": get_choice(table, "normalise", where, NORMALISE, "minmax-global"),
                "split_ratio": parse_split_ratio(table, where)}

    def check_source(self, source: SourceSpec, where: str) -> None:
        """1D signals from a .csv, .npy or .npz file."""
        if source.dims != 1:
            raise ConfigError(f"{where}: dims = {source.dims} is invalid for kind 'table1d': expected dims = 1 (size "
                              "= the signal length)")
        if not source.path.lower().endswith(SUFFIXES):
            raise ConfigError(f"{where}: path = {source.path!r} is invalid for kind 'table1d': expected a .csv, .npy "
                              "or .npz file")

    def read(self, spec: BuilderSpec, warn: Warn = no_warnings) -> SourceData:
        """Every signal of the file, checked, normalised, labelled and split, with the description."""
        src, opts = spec.source, spec.source.options
        path = Path(src.path)
        raw = read_bytes(path, "the [source] path of the signals", "fix [source] path")
        if path.suffix.lower() == ".csv":
            table = read_csv(raw, path, opts["label_column"], multi_label=spec.labels.task == "multi-label")
        else:
            table = read_array(raw, path, opts["label_column"])
        signals = table.signals  # [N, C, L]
        n, channels, length = signals.shape
        if channels != src.channels:
            raise SourceError(f"{path} holds signals of {channels} channel(s), but [source] channels = {src.channels}; "
                              f"set channels = {channels}")
        if length != src.size:
            raise SourceError(f"{path} holds signals of length {length}, but [source] size = {src.size} (1D signals "
                              f"are not resampled); set size = {length}")
        bad = ~np.isfinite(signals)
        if bad.any():
            i = int(np.flatnonzero(bad.any(axis=(1, 2)))[0])
            raise SourceError(f"{table.where(i)}: {int(bad.sum())} NaN/inf values in the file (the first in this "
                              "signal); fill or drop them")
        signals, extra = self._normalise(signals, opts["normalise"], path)
        if table.labels is None:
            labels = np.zeros((n, spec.labels.num_classes if spec.labels.task == "multi-label" else 1), np.int64)
        elif isinstance(table.labels, list):
            labels = label_rows(table.labels, spec, str(path), table.where)
        else:
            labels = numeric_labels(table.labels, spec, path)
        split, how = split_of(table.splits, n, spec, opts["split_ratio"], str(path), table.where)
        digest = Digest()
        digest.add(f"file:{path.name}", raw)
        description = describe(self.name, spec, path, 1, digest.hexdigest(), how, signals=n, length=length,
                               label_column=opts["label_column"], normalise=opts["normalise"], **extra)
        return SourceData(make_splits(signals.astype(np.float32), labels, split), description, origin=str(path))

    @staticmethod
    def _normalise(signals: np.ndarray, rule: str, path: Path) -> tuple[np.ndarray, dict[str, Any]]:
        """``[N, C, L]`` → values in [0, 1] by ``rule``, and what to record about it."""
        if rule == "none":
            lo, hi = float(signals.min()), float(signals.max())
            if lo < 0 or hi > 1:
                raise SourceError(f"{path} has values in [{lo:g}, {hi:g}], but normalise = 'none' needs [0, 1]; set "
                                  "[source] normalise = 'minmax-global'")
            return signals, {}
        axes = None if rule == "minmax-global" else (1, 2)
        lo = signals.min(axis=axes, keepdims=True)
        span = signals.max(axis=axes, keepdims=True) - lo
        out = np.where(span > 0, (signals - lo) / np.where(span > 0, span, 1.0), 0.0)  # a constant signal → 0
        extra = {"normalise_range": [float(lo.min()), float((lo + span).max())]} if axes is None else {}
        return out, extra
