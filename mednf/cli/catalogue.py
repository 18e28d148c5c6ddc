"""``mednf list`` and ``mednf presets``: what can be built here, and with which engine presets.

Light on purpose (builder files, the registry and the preset files; no torch), so both answer at once.
"""

from __future__ import annotations

from pathlib import Path

import click

from mednf.cli.errors import GuardedCommand
from mednf.cli.options import CACHE_FOLDER, root_option
from mednf.engine.presets import get_preset, preset_description, preset_names
from mednf.remote.catalogue import availability, cached_names
from mednf.sources.kinds import kind_of
from mednf.sources.spec import builder_names, load_builder


@click.command(name="list", cls=GuardedCommand)
@root_option(CACHE_FOLDER)
def list_builders(root: Path | None) -> None:
    """List the builders and where each stands here.

    Modality, size, channels, task and split counts of each, and whether it is built (where, test PSNR),
    downloadable (a registered published copy) or buildable only."""
    names = builder_names()
    rows = [(load_builder(name), availability(name, root)) for name in names]  # a bad registry fails before output
    click.echo(f"{'name':13s} {'modality':26s} {'size':>7s} {'ch':>3s} {'task':12s} {'train':>7s} {'val':>6s} "
               f"{'test':>6s}  preset")
    for s, where in rows:
        size = "×".join([str(s.source.size)] * s.source.dims)
        tag = "" if s.paper else " (embedded)" if kind_of(s).embedded else " (extra)"
        click.echo(f"{s.name:13s} {s.modality[:26]:26s} {size:>7s} {s.source.channels:>3d} {s.labels.task:12s} "
                   f"{s.splits['train']:>7d} {s.splits['val']:>6d} {s.splits['test']:>6d}  {s.preset}{tag}")
        click.echo(f"{'':13s} → {where.describe()}")
    shipped = {n.lower() for n in names}
    others = [n for n in cached_names(root) if n.lower() not in shipped]
    if others:
        click.echo("in the cache from other builder files:")
        for name in others:
            click.echo(f"{name:13s} → {availability(name, root).describe()}")


@click.command(cls=GuardedCommand)
def presets() -> None:
    """List the engine presets.

    The paper's configurations and mednf's CPU ones."""
    for name in preset_names():
        f = get_preset(name).field
        click.echo(
            f"{name:16s} K={f.num_layers:<3d} L={f.hidden_dim:<4d} P={f.latent_dim:<6d} "
            f"ω {f.omegas[0]:g}→{f.omegas[-1]:g}  {preset_description(name)}"
        )
