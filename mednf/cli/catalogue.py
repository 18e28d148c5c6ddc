"""``mednf list`` and ``mednf presets``: what can be built here, and with which engine presets.

Light on purpose (builder files, the registry and the preset files; no torch), so both answer at once.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from mednf.cli.errors import GuardedCommand
from mednf.cli.options import CACHE_FOLDER, root_option
from mednf.cli.output import Printer, printing_options
from mednf.engine.presets import get_preset, preset_description, preset_measured, preset_names, recipe_of
from mednf.remote.catalogue import Availability, availability, cached_names
from mednf.sources.kinds import kind_of
from mednf.sources.spec import builder_names, load_builder


@click.command(name="list", cls=GuardedCommand)
@root_option(CACHE_FOLDER)
@printing_options
def list_builders(root: Path | None, printer: Printer) -> None:
    """List the builders and where each stands here.

    Modality, size, channels, task and split counts of each, and whether it is built (where, test PSNR),
    downloadable (a registered published copy) or buildable only."""
    names = builder_names()
    rows = [(load_builder(name), availability(name, root)) for name in names]  # a bad registry fails before output
    printer.line(f"{'name':13s} {'modality':26s} {'size':>7s} {'ch':>3s} {'task':12s} {'train':>7s} {'val':>6s} "
                 f"{'test':>6s}  preset")
    for s, where in rows:
        size = "×".join([str(s.source.size)] * s.source.dims)
        tag = "" if s.paper else " (embedded)" if kind_of(s).embedded else " (extra)"
        printer.line(f"{s.name:13s} {s.modality[:26]:26s} {size:>7s} {s.source.channels:>3d} {s.labels.task:12s} "
                     f"{s.splits['train']:>7d} {s.splits['val']:>6d} {s.splits['test']:>6d}  {s.preset}{tag}")
        printer.line(f"{'':13s} → {where.describe()}")
    shipped = {n.lower() for n in names}
    others = [n for n in cached_names(root) if n.lower() not in shipped]
    printer.result([{"name": s.name, "modality": s.modality, "size": s.source.size, "dims": s.source.dims,
                     "channels": s.source.channels, "task": s.labels.task, "splits": dict(s.splits),
                     "preset": s.preset, "paper": s.paper, **_where(where)} for s, where in rows]
                   + [{"name": name, **_where(availability(name, root))} for name in others])
    if others:
        printer.line("in the cache from other builder files:")
        for name in others:
            printer.line(f"{name:13s} → {availability(name, root).describe()}")


def _where(where: Availability) -> dict[str, Any]:
    """An :class:`Availability` as JSON-ready values."""
    return {"state": where.state, "path": str(where.path) if where.path else None, "test_psnr": where.test_psnr,
            "published": list(where.published)}


@click.command(cls=GuardedCommand)
@printing_options
def presets(printer: Printer) -> None:
    """List the engine presets.

    The paper's configurations (their meta-training as long as the paper's: 250,000 iterations), mednf's
    recipes (a paper preset with measured changes: what they change and what that gave is in their description
    and in every card built with one) and mednf's CPU ones."""
    printer.result({name: {"description": preset_description(name),
                           **({"recipe_of": recipe_of(name), "measured": preset_measured(name)} if recipe_of(name)
                              else {}),
                           **get_preset(name).to_dict()}
                    for name in preset_names()})
    for name in preset_names():
        cfg = get_preset(name)
        f = cfg.field
        printer.line(
              f"{name:16s} K={f.num_layers:<3d} L={f.hidden_dim:<4d} P={f.latent_dim:<6d} "
              f"ω {f.omegas[0]:g}→{f.omegas[-1]:g}  {cfg.meta.steps:>7,} it  {preset_description(name)}"
          )
