"""``mednf cache list`` and ``mednf cache rm NAME``: what the dataset cache holds, and freeing its space."""

from __future__ import annotations

from pathlib import Path

import click

from mednf.cli.errors import GuardedCommand, GuardedGroup
from mednf.cli.options import CACHE_FOLDER, root_option
from mednf.cli.output import Printer, printing_options
from mednf.engine.memory import format_bytes
from mednf.format.layout import mednf_home
from mednf.tasks.cache import BOOKKEEPING, cache_entries, remove_dataset


@click.group(cls=GuardedGroup)
def cache() -> None:
    """List or remove the datasets in the cache ($MEDNF_HOME)."""


@cache.command(name="list", cls=GuardedCommand)
@root_option(CACHE_FOLDER)
@printing_options
def list_cache(root: Path | None, printer: Printer) -> None:
    """List the folders in the cache, their sizes and states.

    States: built, downloaded, imported (complete); unfinished (a build that a rerun resumes); damaged (its
    manifest does not parse); foreign (not mednf's, never removed by mednf); bookkeeping (mednf's own)."""
    entries = cache_entries(root)
    home = Path(root).expanduser() if root else mednf_home()
    printer.result({"cache": str(home), "total_bytes": sum(e.size_bytes for e in entries),
                    "entries": [{"name": e.name, "path": str(e.path), "state": e.state, "complete": e.complete,
                                 "size_bytes": e.size_bytes} for e in entries]})
    if not entries:
        printer.line(f"the cache {home} is empty")
        return
    printer.line(f"{'name':16s} {'state':12s} {'size':>10s}  path")
    for e in entries:
        note = f"  ({BOOKKEEPING[e.name]})" if e.state == "bookkeeping" else ""
        printer.line(f"{e.name:16s} {e.state:12s} {format_bytes(e.size_bytes):>10s}  {e.path}{note}")
    printer.line(f"{'total':16s} {'':12s} {format_bytes(sum(e.size_bytes for e in entries)):>10s}")


@cache.command(name="rm", cls=GuardedCommand)
@click.argument("name")
@click.option("--force", is_flag=True, help="Also delete an unfinished build (which a rerun would resume).")
@root_option(CACHE_FOLDER)
@printing_options
def remove(name: str, force: bool, root: Path | None, printer: Printer) -> None:
    """Remove the dataset NAME from the cache.

    A running build, download or import of it is never interrupted; an unfinished build needs --force;
    folders that are not mednf's are never deleted."""
    entry = remove_dataset(name, root, force=force)
    printer.line(f"removed {entry.path} ({entry.state}, {format_bytes(entry.size_bytes)} freed)")
    printer.result({"name": entry.name, "path": str(entry.path), "state": entry.state,
                    "freed_bytes": entry.size_bytes})
