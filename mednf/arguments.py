"""The checks of public arguments that the Python API and the CLI share: counts, sizes and indices.

Each check returns the value in its canonical form or raises one line naming the argument, the value and
what was expected. Floats are never indices or counts (``ds[1.7]`` is refused, not read as row 1), and bools
are never numbers.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from mednf.errors import ConfigError


class IndexTypeError(ConfigError, TypeError):
    """An index that is not an integer, a slice, a boolean mask or an array of integers."""


def _is_tensor(value: Any) -> bool:
    """A torch tensor. torch is not imported for this: a value can only be a tensor once torch is loaded, and this
    module stays light enough for commands that never need torch."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(value, torch.Tensor)


def is_int(value: Any) -> bool:
    """A Python or NumPy integer (or a 0-d integer tensor), never a bool."""
    if _is_tensor(value):
        return value.dim() == 0 and not value.is_floating_point() and not value.dtype.is_complex \
            and str(value.dtype) != "torch.bool"
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))


def positive_int(value: Any, name: str, fix: str = "") -> int:
    """``value`` as an int ≥ 1, else a one-line ConfigError (``fix`` appended after a semicolon)."""
    if not is_int(value) or int(value) < 1:
        raise ConfigError(f"{name} = {value!r} is invalid: expected a positive integer" + (f"; {fix}" if fix else ""))
    return int(value)


def optional_positive_int(value: Any, name: str, fix: str = "") -> int | None:
    """None, or :func:`positive_int`."""
    return None if value is None else positive_int(value, name, fix)


def side_lengths(size: Any, dims: int, name: str = "size") -> tuple[int, ...]:
    """One positive side length for every axis, or ``dims`` of them: ``[dims]`` ints."""
    sides = [size] * dims if is_int(size) else size
    if isinstance(sides, (str, bytes)) or not isinstance(sides, (Sequence, np.ndarray)) or len(sides) != dims \
            or not all(is_int(s) and int(s) >= 1 for s in sides):
        raise ConfigError(f"{name} = {size!r} is invalid: expected a positive integer side length or {dims} of them")
    return tuple(int(s) for s in sides)


def positions(index: Any, count: int, what: str | Callable[[], str]) -> np.ndarray | int:
    """Rows ``0..count-1`` selected by ``index`` (an int, a slice, a boolean mask ``[count]``, or integers,
    negative ones counting from the end): an int for an int, else ``[n]`` int64. ``what`` names the
    indexed thing in errors (e.g. ``"PhantomNF test"``; a function giving it is called only for an error)."""
    if type(index) is int and -count <= index < count:  # the common case of ds[i], kept to a few hundred ns
        return index % count
    if callable(what):
        what = what()
    if is_int(index):
        i = int(index)
        if not -count <= i < count:
            raise IndexError(f"index {i} is out of range for {what} with {count} samples")
        return i % count
    if isinstance(index, slice):
        return np.arange(count)[index]
    if isinstance(index, (list, tuple)) and index and all(type(i) is int for i in index) \
            and not all(-count <= i < count for i in index):  # Python ints beyond int64 included
        raise IndexError(f"indices out of range for {what} with {count} samples")
    array = np.asarray(index.cpu() if _is_tensor(index) else index)
    if array.ndim > 1:
        raise IndexTypeError(f"index of shape {array.shape} for {what} is invalid: expected one list of rows (1D), "
                             "a slice or a boolean mask; flatten it, or index rows one list at a time")
    if array.dtype == bool:
        if array.shape != (count,):
            raise IndexError(f"boolean mask of shape {array.shape} does not match {count} samples")
        return np.flatnonzero(array)
    if array.size and array.dtype.kind not in "iu":
        hint = "; round them first if they are meant as rows" if array.dtype.kind == "f" else ""
        raise IndexTypeError(f"index {_short(index)} of {what} is invalid: expected integers, a slice or a boolean "
                             f"mask, not {array.dtype} values{hint}")
    if array.size and (array.min() < -count or array.max() >= count):  # before a cast that could wrap uint64
        raise IndexError(f"indices out of range for {what} with {count} samples")
    array = array.astype(np.int64).reshape(-1)
    return array % count


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "…"


_UNSET: Any = object()


class Wording:
    """How messages name an option: as the caller gave it, a flag of the ``mednf`` command (``--restart``,
    ``--out DIR``) or a keyword of the Python call (``restart=True``, ``out=``). The CLI and the Python API
    pass their own (:data:`CLI`, :data:`PYTHON`) down to the code that writes the message."""

    def __init__(self, python: bool, renamed: dict[str, str] | None = None) -> None:
        """``python``: keywords instead of flags; ``renamed``: option → keyword where they differ."""
        self.python = python
        self.renamed = renamed or {}

    def option(self, name: str, value: Any = _UNSET) -> str:
        """Option ``name`` (snake_case), with ``value`` if given: ``--continue-to 10`` / ``continue_to=10``; a
        switch given ``True``: ``--restart`` / ``restart=True``; without a value ``--out`` / ``out=``."""
        if self.python:
            keyword = self.renamed.get(name, name)
            if value is _UNSET:
                return f"{keyword}="
            return f"{keyword}={str(value)!r}" if not isinstance(value, (bool, int, float)) else f"{keyword}={value}"
        flag = "--" + name.replace("_", "-")
        return flag if value is _UNSET or value is True else f"{flag} {value}"

    def label(self, name: str) -> str:
        """Option ``name`` before a value the message shows itself: ``--memory-budget`` / ``memory_budget =``."""
        return f"{self.renamed.get(name, name)} =" if self.python else "--" + name.replace("_", "-")

    def command(self, name: str, *args: str, **options: Any) -> str:
        """A call of command ``name`` (e.g. ``build``): ```mednf build NAME --steps 30``` / ```mednf.build("NAME",
        steps=30)```."""
        if self.python:
            given = [repr(a) for a in args] + [self.option(k, v) for k, v in options.items()]
            return f"`mednf.{name}({', '.join(given)})`"
        return f"`mednf {name} {' '.join([*args, *(self.option(k, v) for k, v in options.items())])}`"

    def __repr__(self) -> str:
        """``Wording(python=…)``."""
        return f"Wording(python={self.python})"


CLI = Wording(python=False)  # the mednf command's flags
PYTHON = Wording(python=True, renamed={"gpu": "device"})  # mednf.build's keywords
