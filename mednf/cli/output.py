"""``--json`` and ``--quiet``, the same on every command that prints a result.

- default: lines for a person on standard output, progress bars on standard error;
- ``--json``: one JSON document on standard output (the command's result, written when it is done) and no
  progress bars, so that ``mednf … --json | jq`` reads it; notes go to standard error;
- ``--quiet``: nothing on standard output and no progress bars; errors still print their one line.

Each command builds its result as plain data and hands it to :meth:`Printer.result`; its text lines go
through :meth:`Printer.line`, which prints them only in the default mode.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from mednf.errors import ConfigError


@dataclass(frozen=True)
class Printer:
    """Where a command's output goes: ``mode`` is ``"text"``, ``"json"`` or ``"quiet"``."""

    mode: str = "text"

    @property
    def progress(self) -> bool:
        """Whether progress bars are shown (only for a person reading text)."""
        return self.mode == "text"

    def line(self, text: str) -> None:
        """A line of the text result (printed in the default mode only)."""
        if self.mode == "text":
            click.echo(text)

    def note(self, text: str) -> None:
        """A remark beside the result (on standard error; not with ``--quiet``)."""
        if self.mode != "quiet":
            click.echo(text, err=True)

    def result(self, data: Any) -> None:
        """The command's result as JSON (printed with ``--json`` only; ``data``: JSON-ready values)."""
        if self.mode == "json":
            click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def printing_options(command: Callable[..., Any]) -> Callable[..., Any]:
    """``--json`` and ``--quiet`` for ``command``, which receives them as one ``printer`` (:class:`Printer`)."""

    @functools.wraps(command)
    def run(*args: Any, as_json: bool = False, quiet: bool = False, **kwargs: Any) -> Any:
        if as_json and quiet:
            raise ConfigError("--json and --quiet were both given: expected one of them; drop one")
        return command(*args, printer=Printer("json" if as_json else "quiet" if quiet else "text"), **kwargs)

    run = click.option("--quiet", "-q", is_flag=True, help="Print nothing but errors; no progress bars.")(run)
    return click.option("--json", "as_json", is_flag=True,
                        help="Print the result as one JSON document (no progress bars).")(run)
