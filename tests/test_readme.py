"""Every fenced Python and shell example of README.md runs as written, on a small dataset.

What runs: every ``python`` and ``bash`` block, in the README's order, in one temporary working folder (later
blocks use what earlier ones wrote, as a reader following the README would), with ``$MEDNF_HOME`` pointing at
a sandbox that already holds a small PhantomNF (the session's ``phantom_dir``: preset ``tiny``, 32×32, 20
samples per split, built once per test session). Python blocks run in this process, each in a fresh
namespace; shell blocks run with ``bash -e`` and ``mednf`` / ``python`` on ``PATH`` as this interpreter.
Nothing in a block is changed.

What only parses: a block right after ``<!-- readme-test: syntax-only (why) -->`` (needs a GPU, the network,
an install, or is the test command itself): Python is compiled, shell is checked by ``bash -n``, and every
``mednf <command> …`` it names (also ``-m mednf.cli``) must be a command whose options and arguments click
accepts (parsed, never run). Every block gets these checks, runnable or not, and no shell block may hold a
usage synopsis (``[--x a|b]``) instead of a real command. ``toml`` blocks must parse.
"""

from __future__ import annotations

import ast
import os
import re
import resource
import shlex
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
from conftest import report

from mednf.cli import main

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = re.compile(r"<!-- readme-test: syntax-only \((?P<why>[^)]+)\) -->")
SHELLS = ("bash", "sh", "shell")


@dataclass(frozen=True)
class Block:
    """One fenced block of the README."""

    line: int  # of its opening fence, 1-based
    lang: str
    code: str
    syntax_only: str | None  # why it only parses (the marker's reason), or None: it runs

    def __str__(self) -> str:
        return f"README.md:{self.line} ({self.lang})"


def readme_blocks(text: str) -> list[Block]:
    """The fenced blocks of ``text``, each with the syntax-only marker on the line before it (if any)."""
    blocks, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        fence = re.match(r"```(\w*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        marker = MARKER.fullmatch(before.strip())
        blocks.append(Block(i + 1, fence.group(1), "\n".join(lines[i + 1:end]) + "\n",
                            marker.group("why") if marker else None))
        i = end + 1
    return blocks


BLOCKS = readme_blocks(README.read_text(encoding="utf-8"))
EXAMPLES = [b for b in BLOCKS if b.lang == "python" or b.lang in SHELLS]


# ------------------------------------------------------------------------------------------------ parsing

def mednf_commands(code: str) -> list[list[str]]:
    """The argument lists of every ``mednf …`` (or ``… -m mednf.cli …``) command in a shell block."""
    commands = []
    for line in code.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        words, segment = [], []
        for token in [*lexer, ";"]:
            if token and set(token) <= set(";&|"):
                words.append(segment)
                segment = []
            else:
                segment.append(token)
        for segment in words:
            if segment[:1] == ["mednf"]:
                commands.append(segment[1:])
            elif "mednf.cli" in segment and segment[segment.index("mednf.cli") - 1] == "-m":
                commands.append(segment[segment.index("mednf.cli") + 1:])
    return commands


def check_mednf_arguments(args: list[str]) -> None:
    """``mednf ARGS`` names a command and click accepts its options and arguments (nothing runs)."""
    assert args, "`mednf` without a command"
    name, rest = args[0], args[1:]
    command = main.get_command(click.Context(main), name)
    assert command is not None, f"`mednf {name}` is no mednf command (expected one of {main.list_commands(None)})"
    try:
        command.make_context(name, list(rest))
    except click.ClickException as err:
        raise AssertionError(f"`mednf {shlex.join(args)}` does not parse: {err.format_message()}") from None


def synopsis_words(code: str) -> list[str]:
    """Words of a shell block that are usage placeholders, not shell: ``[--x …]`` or ``a|b`` alternatives."""
    found = []
    for line in code.replace("\\\n", " ").splitlines():
        for word in shlex.split(line, comments=True):
            if word.startswith("[") or ("|" in word and word != "|" and not word.startswith(("'", '"'))):
                found.append(word)
    return found


def test_the_readme_examples_are_found_and_every_marker_belongs_to_one():
    text = README.read_text(encoding="utf-8")
    markers = [n for n, line in enumerate(text.splitlines(), 1) if "readme-test" in line]
    assert len(markers) == sum(b.syntax_only is not None for b in BLOCKS)  # each marker sits right before a block
    assert all(MARKER.fullmatch(text.splitlines()[n - 1].strip()) for n in markers), "a malformed marker"
    assert {b.lang for b in BLOCKS} <= {"python", "bash", "toml"}, "a block whose language the test does not run"
    runnable = [b for b in EXAMPLES if b.syntax_only is None]
    assert len(runnable) >= 10 and len(EXAMPLES) - len(runnable) <= 6


@pytest.mark.parametrize("block", EXAMPLES, ids=str)
def test_every_example_parses_and_names_real_commands(block):
    if block.lang == "python":
        ast.parse(block.code, filename=str(block))
        compile(block.code, str(block), "exec")
        return
    result = subprocess.run(["bash", "-n"], input=block.code, capture_output=True, text=True, check=False)
    assert result.returncode == 0, f"{block}: {result.stderr}"
    assert synopsis_words(block.code) == [], f"{block}: a usage synopsis, not a command one can paste"
    for args in mednf_commands(block.code):
        check_mednf_arguments(args)


def test_the_toml_examples_parse():
    for block in (b for b in BLOCKS if b.lang == "toml"):
        tomllib.loads(block.code)


def test_the_command_check_sees_a_wrong_option():
    """The parse check is a real one: a misspelt option or command is caught."""
    assert mednf_commands("x && mednf info A # c\ntorchrun -m mednf.cli build b --gpu 0") == [
        ["info", "A"], ["build", "b", "--gpu", "0"]]
    with pytest.raises(AssertionError, match="does not parse"):
        check_mednf_arguments(["decode", "A", "--indexes", "0:3"])
    with pytest.raises(AssertionError, match="is no mednf command"):
        check_mednf_arguments(["evaluate", "A"])
    assert synopsis_words("mednf eval A [--split test|all]  # a|b in a comment is fine") == ["[--split", "test|all]"]


# ------------------------------------------------------------------------------------------------ running

@dataclass(frozen=True)
class Sandbox:
    """Where the examples run: ``work`` (the current folder), ``home`` ($MEDNF_HOME) and the environment."""

    work: Path
    home: Path
    env: dict[str, str]


@pytest.fixture(scope="module")
def sandbox(tmp_path_factory, phantom_dir) -> Sandbox:
    root = tmp_path_factory.mktemp("readme")
    home, work, tools = root / "home", root / "work", root / "bin"
    shutil.copytree(phantom_dir, home / "PhantomNF")  # what `mednf build phantomnf` leaves in $MEDNF_HOME
    for folder in (work, tools):
        folder.mkdir()
    for name, command in (("mednf", f'"{sys.executable}" -m mednf.cli'), ("python", f'"{sys.executable}"')):
        script = tools / name
        script.write_text(f'#!/bin/sh\nexec {command} "$@"\n')
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "MEDNF_HOME": str(home), "PATH": f"{tools}{os.pathsep}{os.environ['PATH']}",
           "MPLBACKEND": "Agg"}
    return Sandbox(work, home, env)


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) != 0


def run_shell(block: Block, sandbox: Sandbox) -> None:
    """``bash -e`` on the block in the working folder; what it left running in the background is stopped."""
    out, err = sandbox.work.parent / "stdout.txt", sandbox.work.parent / "stderr.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(["bash", "-e", "-c", block.code], cwd=sandbox.work, env=sandbox.env,
                                   stdout=stdout, stderr=stderr, start_new_session=True)
        try:
            code = process.wait(timeout=300)
        finally:
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    assert code == 0, f"{block} failed (exit {code}):\n{out.read_text()}\n{err.read_text()[-3000:]}"


def run_python(block: Block, sandbox: Sandbox, monkeypatch) -> None:
    """The block in this process, in a fresh namespace, from the working folder."""
    monkeypatch.chdir(sandbox.work)
    monkeypatch.setenv("MEDNF_HOME", str(sandbox.home))
    try:
        exec(compile(block.code, str(block), "exec"), {"__name__": "__readme__"})  # noqa: S102 — the README's own code
    except Exception as err:
        raise AssertionError(f"{block} failed: {type(err).__name__}: {err}") from err


def test_every_runnable_example_runs_in_order(sandbox, monkeypatch):
    seconds = {}
    for block in EXAMPLES:
        if block.syntax_only is not None:
            continue
        if "http.server 8000" in block.code and not _port_free(8000):
            seconds[str(block)] = None  # someone else serves on 8000 here: the example cannot be run as written
            continue
        start, cpu = time.perf_counter(), _cpu_seconds()
        if block.lang == "python":
            run_python(block, sandbox, monkeypatch)
        else:
            run_shell(block, sandbox)
        seconds[str(block)] = (time.perf_counter() - start, _cpu_seconds() - cpu)
    assert (sandbox.work / "grid.png").is_file() and (sandbox.work / "hub" / "PhantomNF" / "mednf.json").is_file()
    assert (sandbox.work / "runs" / "trial" / "mednf.json").is_file()
    report("README examples (line: wall / CPU seconds): " + ", ".join(
        f"{k.split(' ')[0].split(':')[1]}: {v[0]:.1f} / {v[1]:.1f}" if v is not None
        else f"{k} not run (port 8000 busy)" for k, v in seconds.items()))


def _cpu_seconds() -> float:
    """CPU seconds of this process and of its finished children (the shell blocks)."""
    me, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + children.ru_utime + children.ru_stime
