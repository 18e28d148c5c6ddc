"""What a build on one of mednf's recipes (a preset with ``recipe_of`` in ``engine.toml``, e.g. ``2d-64-fast``)
changes against the paper's preset it is made from, for the manifest's ``meta_training.recipe``, the build log
and the card. The changes are read from the build's own engine config, so a user's overrides on top of the
recipe are listed too."""

from __future__ import annotations

from typing import Any

from mednf.building.identity import differences, engine_identity
from mednf.engine.config import EngineConfig
from mednf.engine.presets import get_preset, preset_measured, recipe_of

NOT_RECIPE = ("field.out_dims", "field.precision")  # set by the data and the device, not by the recipe


def recipe_record(preset: str, cfg: EngineConfig) -> dict[str, Any] | None:
    """``{"preset", "paper_preset", "changes": ["meta.meta_lr: 3e-06 → 3e-05", …], "measured"}`` for a build
    with ``cfg`` on recipe ``preset``; None for any other preset."""
    paper = recipe_of(preset)
    if paper is None:
        return None
    reference = get_preset(paper).replace(field={"out_dims": cfg.field.out_dims})
    changes = [line for line in differences(engine_identity(reference), engine_identity(cfg))
               if not line.startswith(NOT_RECIPE)]
    return {"preset": preset, "paper_preset": paper, "changes": changes,
            "measured": preset_measured(preset) or None}
