"""Named engine configurations shipped with mednf (``engine.toml`` beside this file).

The paper's configurations live in data, not in code branches: ``get_preset("2d-64")`` returns an
:class:`~mednf.engine.config.EngineConfig`; ``preset_names()`` lists them. Channels (``out_dims``) follow the
data, so callers override ``field.out_dims`` for RGB sets: ``get_preset("2d-64").replace(field={"out_dims": 3})``.
"""

from __future__ import annotations

import tomllib
from functools import cache
from importlib import resources
from typing import Any

from mednf.engine.config import EngineConfig
from mednf.errors import ConfigError, did_you_mean


@cache
def _table() -> dict[str, dict[str, Any]]:
    text = resources.files(__package__).joinpath("engine.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def preset_names() -> list[str]:
    """The shipped presets' names, in ``engine.toml`` order."""
    return list(_table())


def preset_description(name: str) -> str:
    """The preset's one-line description ("" if it has none); ConfigError for an unknown name."""
    return str(_entry(name).get("description", ""))


def _entry(name: str) -> dict[str, Any]:
    table = _table()
    if name not in table:
        hint = did_you_mean(name, table)
        raise ConfigError(f"preset = {name!r} is unknown: expected one of {', '.join(table)}{hint}")
    return table[name]


def get_preset(name: str) -> EngineConfig:
    """The named preset as a validated :class:`EngineConfig`."""
    entry = {k: v for k, v in _entry(name).items() if k != "description"}
    return EngineConfig.from_dict(entry)
