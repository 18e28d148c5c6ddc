"""Typed values of a builder file's tables: one-line ConfigErrors naming the file, key, value and the fix.

Shared by :mod:`mednf.sources.spec` (every section) and the kinds that read their own ``[source]`` keys
(:mod:`mednf.sources.userdata`), so every builder-file value is checked the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from mednf.errors import ConfigError, did_you_mean

TYPE_NAMES = {dict: "a table", list: "an array", str: "a string", int: "an integer", bool: "true or false"}


def get_value(table: dict[str, Any], key: str, where: str, kind: type, default: Any = ...) -> Any:
    """``table[key]`` checked to be of type ``kind`` (a bool is never an int), or ``default`` when absent."""
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: key {key!r} is missing; add it to the builder file")
        return default
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} = {value!r} is invalid: expected {TYPE_NAMES.get(kind, kind.__name__)}; "
                          "fix the builder file")
    return value


def get_choice(table: dict[str, Any], key: str, where: str, choices: Sequence[str], default: str) -> str:
    """A string key that must be one of ``choices``."""
    value = get_value(table, key, where, str, default)
    if value not in choices:
        raise ConfigError(f"{where}: {key} = {value!r} is invalid: expected one of "
                          f"{', '.join(repr(c) for c in choices)}{did_you_mean(value, choices)}")
    return value


def get_numbers(table: dict[str, Any], key: str, where: str, length: int, default: Sequence[float]) -> list[float]:
    """An array of ``length`` finite numbers (ints or floats, never bools), as floats."""
    value = get_value(table, key, where, list, list(default))
    if len(value) != length or not all(isinstance(v, (int, float)) and not isinstance(v, bool)
                                       and math.isfinite(v) for v in value):
        example = ", ".join(str(v) for v in default)
        raise ConfigError(f"{where}: {key} = {value!r} is invalid: expected an array of {length} finite numbers, "
                          f"e.g. [{example}]; fix the builder file")
    return [float(v) for v in value]
