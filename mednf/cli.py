"""The ``mednf`` command line (click). User mistakes print one line and exit non-zero, no traceback."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import click

from mednf.config import ConfigError


def _friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Turn configuration errors into a one-line message and exit status 2."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConfigError as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)

    return wrapper


@click.group()
@click.version_option(package_name="mednf")
def main() -> None:
    """mednf: medical datasets as neural fields (MedFuncta)."""


@main.command()
@click.option("--steps", default=300, show_default=True, type=click.IntRange(min=1), help="Meta-iterations.")
@click.option("--size", default=32, show_default=True, type=click.IntRange(min=4), help="Phantom side length.")
@click.option("--seed", default=0, show_default=True, type=int)
@_friendly
def demo(steps: int, size: int, seed: int) -> None:
    """Meta-learn and fit on generated phantoms (CPU, no download, ~1 minute)."""
    from mednf.demo import run_demo

    run_demo(steps=steps, size=size, seed=seed, log=click.echo)


@main.command()
@_friendly
def presets() -> None:
    """List the engine presets (the paper's configurations and mednf's CPU ones)."""
    from mednf.presets import get_preset, preset_description, preset_names

    for name in preset_names():
        f = get_preset(name).field
        click.echo(
            f"{name:16s} K={f.num_layers:<3d} L={f.hidden_dim:<4d} P={f.latent_dim:<6d} "
            f"ω {f.omegas[0]:g}→{f.omegas[-1]:g}  {preset_description(name)}"
        )
