"""A click group that imports a command's module only when the command is used (click's "lazy loading
subcommands" pattern), and lists every command from a table without importing any."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any, NamedTuple

import click

from mednf.cli.errors import GuardedGroup


class LazyCommand(NamedTuple):
    """Where a command is defined, and the summary ``mednf --help`` shows for it."""

    module: str  # e.g. "mednf.cli.views"
    function: str  # the click command object in that module
    summary: str  # the first sentence of its help; the group help shortens it to the terminal's width

    def load(self) -> click.Command:
        """Import the module and return the command."""
        command = getattr(importlib.import_module(self.module), self.function)
        if not isinstance(command, click.Command):
            raise TypeError(f"{self.module}.{self.function} is not a click command")
        return command


class _CommandTable(dict[str, click.Command]):
    """``group.commands``: a command of the lazy table is imported the first time it is looked up by name
    (``group.commands["decode"]`` works like on any click group)."""

    def __init__(self, lazy: Mapping[str, LazyCommand]) -> None:
        super().__init__()
        self._lazy = lazy

    def __missing__(self, name: str) -> click.Command:
        if name not in self._lazy:
            raise KeyError(name)
        command = self[name] = self._lazy[name].load()
        return command


class LazyGroup(GuardedGroup):
    """A :class:`GuardedGroup` whose commands come from ``lazy`` (name → :class:`LazyCommand`)."""

    def __init__(self, *args: Any, lazy: Mapping[str, LazyCommand], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy)
        table = _CommandTable(self.lazy)
        table.update(self.commands)
        self.commands = table

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, sorted, without importing any."""
        return sorted({*self.commands, *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name`` (its module imported now if it was not yet), or None if there is none."""
        try:
            return self.commands[cmd_name]
        except KeyError:
            return None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The "Commands" section from the table's summaries, shortened as click shortens a help text (a command
        added with ``add_command`` shows its own)."""
        listed = {name: click.Command(name, help=self.lazy[name].summary) if name in self.lazy else self.commands[name]
                  for name in self.list_commands(ctx)}
        shown = {name: command for name, command in listed.items() if not command.hidden}
        if not shown:
            return
        limit = formatter.width - 6 - max(map(len, shown))
        with formatter.section("Commands"):
            formatter.write_dl([(name, command.get_short_help_str(limit)) for name, command in shown.items()])
