"""Named engine configurations shipped with mednf (``engine.toml`` beside this file).

The paper's configurations live in data, not in code branches: ``get_preset("2d-64")`` returns an
:class:`~mednf.engine.config.EngineConfig`; ``preset_names()`` lists them. Channels (``out_dims``) follow the
data, so callers override ``field.out_dims`` for RGB sets: ``get_preset("2d-64").replace(field={"out_dims": 3})``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
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


_ABOUT = ("description", "paper", "recipe_of", "measured")  # keys of engine.toml that describe a preset


def get_preset(name: str) -> EngineConfig:
    """The named preset as a validated :class:`EngineConfig`."""
    entry = {k: v for k, v in _entry(name).items() if k not in _ABOUT}
    return EngineConfig.from_dict(entry)


PAPER_STEPS = 250_000  # the paper's meta-training length (Table 2), the paper presets' meta.steps


def is_paper_preset(name: str) -> bool:
    """Whether ``name`` is one of the paper's configurations (``paper = true`` in ``engine.toml``)."""
    return name in _table() and bool(_table()[name].get("paper", False))


def shorter_than_paper(preset: str, steps: int) -> str:
    """A note when a paper preset runs a shorter meta-training than the paper's, with what that cost in the
    paper's own tables ("" otherwise): for the build log and the dataset card."""
    if not is_paper_preset(preset) or steps >= PAPER_STEPS:
        return ""
    return (f"meta.steps = {steps:,} is shorter than the paper's {PAPER_STEPS:,} meta-iterations (MedFuncta Table 2) "
            f"for preset {preset}; the paper's Tables 5/6 show the cost of a shorter schedule (ChestMNIST 64²: "
            "35.6 dB after 100k iterations at B = 12, 40.7 dB after 250k at B = 24)")


def recipe_of(name: str) -> str | None:
    """The paper preset that mednf recipe ``name`` changes (``recipe_of`` in ``engine.toml``; None for the
    paper's own presets and mednf's CPU presets)."""
    if name not in _table():
        return None
    paper = _table()[name].get("recipe_of")
    return str(paper) if paper is not None else None


def preset_measured(name: str) -> str:
    """What a recipe was measured to give against its paper preset (``measured`` in ``engine.toml``; "")."""
    return str(_entry(name).get("measured", ""))


def recipe_note(record: Mapping[str, Any]) -> str:
    """One line of what a build's recipe changes against the paper and what that was measured to give (a
    manifest's ``meta_training.recipe``): for the build log and the dataset card."""
    changes = "; ".join(record["changes"]) or "nothing"
    measured = f". Measured: {record['measured']}" if record.get("measured") else ""
    return (f"preset {record['preset']} is mednf's recipe, not the paper's: against {record['paper_preset']} it "
            f"changes {changes}{measured}")
