"""The CLI's lazy command table and its commands agree: every entry loads, and its one-line summary (shown by
``mednf --help`` without importing the command) is the first sentence of the command's own help."""

from __future__ import annotations

import importlib

import click
import pytest
from click.testing import CliRunner

from mednf.cli import COMMANDS, main


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_summary_is_the_commands_first_sentence(name):
    entry = COMMANDS[name]
    command = getattr(importlib.import_module(entry.module), entry.function)
    help_text = " ".join((command.help or "").split())
    assert help_text.startswith(" ".join(entry.summary.split())), f"{name}: {entry.summary!r} vs {help_text[:120]!r}"


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_option_has_help(name):
    entry = COMMANDS[name]
    command = getattr(importlib.import_module(entry.module), entry.function)
    bare = [p.opts for p in command.params if isinstance(p, click.Option) and not p.help]
    assert not bare, f"mednf {name}: options without help text: {bare}"


def test_the_command_list_fits_an_80_column_terminal():
    result = CliRunner().invoke(main, ["--help"], terminal_width=80)
    listed = result.output.split("Commands:")[1].splitlines()
    assert len([line for line in listed if line.strip()]) == len(COMMANDS)
    assert not [line for line in listed if line.rstrip().endswith("...")], result.output
