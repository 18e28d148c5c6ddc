"""The CLI's lazy command table and its commands agree: every entry loads, and its one-line summary (shown by
``mednf --help`` without importing the command) is the first sentence of the command's own help."""

from __future__ import annotations

import importlib

import pytest

from mednf.cli import COMMANDS


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_the_summary_is_the_commands_first_sentence(name):
    entry = COMMANDS[name]
    command = getattr(importlib.import_module(entry.module), entry.function)
    help_text = " ".join((command.help or "").split())
    assert help_text.startswith(" ".join(entry.summary.split())), f"{name}: {entry.summary!r} vs {help_text[:120]!r}"
