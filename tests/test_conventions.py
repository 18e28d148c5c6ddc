"""The command line's conventions: exit status 2 for a wrong command line and 1 for a failure, ``--json`` and
``--quiet`` on every command that prints a result, closed sets checked by click, and ``mednf cache``."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from mednf.cli import COMMANDS, main
from mednf.io.files import SCRATCH_MARK
from mednf.io.lock import dataset_lock
from mednf.tasks.cache import cache_entries, remove_dataset


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(main, list(args), env=env)


def error(result, status: int) -> str:
    """The one error line of a failed command, which must exit with ``status`` and print no traceback."""
    assert result.exit_code == status, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith(("error: ", "Error: "))]
    assert len(lines) == 1, result.output
    return lines[0]


# ------------------------------------------------------------------------------------------ exit status


@pytest.mark.parametrize("args", [
    ["decode"],  # click: a missing argument
    ["list", "--no-such-option"],  # click: an unknown option
    ["build", "phantomnf", "--precision", "fp16"],  # click.Choice
    ["build", "phantomnf", "--threads", "-3"],  # mednf's check of a value (ConfigError)
    ["download"],  # neither a name nor --all
    ["info", "x", "--json", "--quiet"],  # two options that exclude each other
])
def test_a_wrong_command_line_exits_with_status_2(args):
    error(invoke(*args), 2)


def test_a_failure_of_a_right_command_line_exits_with_status_1(tmp_path, phantom_dir):
    assert "is not in" in error(invoke("info", "NoSuchNF", "--root", str(tmp_path)), 1)
    damaged = tmp_path / "PhantomNF"
    shutil.copytree(phantom_dir, damaged)
    (damaged / "model.safetensors").write_bytes(b"damaged")
    error(invoke("decode", str(damaged), "--out", str(tmp_path / "x.npy")), 1)


def test_a_missing_extra_exits_with_status_1_and_names_it(phantom_dir, tmp_path):
    """scikit-learn blocked in a fresh interpreter: `mednf classify` names the extra that installs it."""
    code = ("import sys; sys.modules['sklearn'] = None\n"
            "from mednf.cli import main; main(['classify', sys.argv[1], '--model', 'knn', '--features', 'latents'])")
    result = subprocess.run([sys.executable, "-c", code, str(phantom_dir)], capture_output=True, text=True,
                            check=False)
    assert result.returncode == 1, result.stderr
    assert 'pip install "mednf[tasks]"' in result.stderr and "Traceback" not in result.stderr


def test_the_precision_is_a_closed_set_in_the_help():
    assert "[fp32|tf32|bf16]" in invoke("build", "--help").output


# ------------------------------------------------------------------------------------------ --json / --quiet


def test_every_command_that_prints_a_result_has_json_and_quiet():
    without = {"presets": False}  # every command below takes both
    for name in COMMANDS:
        command = main.commands[name]
        subcommands = getattr(command, "commands", {name: command})
        for sub in subcommands.values():
            options = {opt for param in sub.params for opt in getattr(param, "opts", [])}
            assert {"--json", "--quiet"} <= options or without.get(name), (name, sub.name, options)


def test_json_output_is_one_document_and_quiet_prints_nothing(phantom_dir, tmp_path):
    images = tmp_path / "images.npz"
    np.savez(images, images=np.random.default_rng(0).random((2, 32, 32), dtype=np.float32))
    cases = {
        "list": ([], list),
        "presets": ([], dict),
        "info": ([str(phantom_dir)], dict),
        "decode": ([str(phantom_dir), "--indices", "0:2", "--out", str(tmp_path / "d.npy")], dict),
        "encode": ([str(phantom_dir), str(images), "--out", str(tmp_path / "e.npz")], dict),
        "classify": ([str(phantom_dir), "--model", "knn", "--features", "latents"], dict),
    }
    for name, (args, kind) in cases.items():
        result = invoke(name, *args, "--json")
        assert result.exit_code == 0, (name, result.output)
        assert isinstance(json.loads(result.stdout), kind), name
        quiet = invoke(name, *args, "--quiet")
        assert quiet.exit_code == 0 and quiet.stdout == "", (name, quiet.output)
    decoded = json.loads(invoke("decode", str(phantom_dir), "--indices", "0:2", "--out", str(tmp_path / "d.npy"),
                                "--json").stdout)
    assert decoded["shape"] == [2, 1, 32, 32] and decoded["indices"] == [0, 1]
    summary = json.loads(invoke("info", str(phantom_dir), "--json").stdout)
    assert summary["name"] == "PhantomNF" and summary["splits"]["test"]["count"] == 20


def test_classify_writes_its_report_file_with_out(phantom_dir, tmp_path):
    report = tmp_path / "c.json"
    result = invoke("classify", str(phantom_dir), "--model", "knn", "--features", "latents", "--out", str(report),
                    "--quiet")
    assert result.exit_code == 0 and result.stdout == ""
    assert json.loads(report.read_text())["results"]


# ------------------------------------------------------------------------------------------ mednf cache


@pytest.fixture
def cache(tmp_path, phantom_dir) -> Path:
    """A cache with a complete dataset, an unfinished build, a damaged copy, a folder that is not mednf's and
    remote-read bookkeeping."""
    home = tmp_path / "cache"
    shutil.copytree(phantom_dir, home / "PhantomNF")
    (home / "ChestNF" / ".partial").mkdir(parents=True)
    (home / "ChestNF" / ".partial" / "build.json").write_text("{}")  # an unfinished build's recorded identity
    (home / "ChestNF" / ".partial" / "checkpoint.safetensors").write_bytes(b"x" * 998)
    (home / "DermaNF").mkdir()
    (home / "DermaNF" / "mednf.json").write_text("{")
    (home / "photos").mkdir()
    (home / "photos" / "cat.jpg").write_bytes(b"y" * 10)
    (home / ".remote" / "ab").mkdir(parents=True)
    (home / ".remote" / "ab" / ("ab" + "0" * 62)).write_bytes(b"z" * 100)
    (home / "Look").mkdir()  # an empty .partial/ alone does not make a folder mednf's
    (home / "Look" / ".partial").mkdir()
    (home / "Look" / "data.csv").write_text("mine")
    (home / ".verified").mkdir()  # a user's folder under a bookkeeping name
    (home / ".verified" / "notes.txt").write_text("mine")
    return home


def test_cache_list_names_every_folder_with_its_state_and_size(cache):
    entries = {e.name: e for e in cache_entries(cache)}
    assert {n: e.state for n, e in entries.items()} == {
        "ChestNF": "unfinished", "DermaNF": "damaged", "PhantomNF": "built", "photos": "foreign",
        "Look": "foreign", ".remote": "bookkeeping", ".verified": "foreign"}
    assert entries["ChestNF"].size_bytes == 1000 and entries[".remote"].size_bytes == 100
    assert entries["PhantomNF"].complete and not entries["ChestNF"].complete
    listed = json.loads(invoke("cache", "list", "--root", str(cache), "--json").stdout)
    assert listed["total_bytes"] == sum(e.size_bytes for e in entries.values())
    assert [e["name"] for e in listed["entries"]] == ["ChestNF", "DermaNF", "Look", "PhantomNF", "photos", ".remote",
                                                      ".verified"]
    text = invoke("cache", "list", "--root", str(cache)).output
    assert "unfinished" in text and "foreign" in text and "total" in text


def test_cache_rm_keeps_unfinished_builds_and_foreign_folders(cache):
    assert "--force" in error(invoke("cache", "rm", "chestnf", "--root", str(cache)), 1)
    assert (cache / "ChestNF" / ".partial" / "checkpoint.safetensors").is_file()
    for name in ("photos", "Look", ".verified"):  # not mednf's: never deleted, --force or not
        assert "is not mednf's" in error(invoke("cache", "rm", name, "--root", str(cache), "--force"), 1)
    assert (cache / "photos" / "cat.jpg").read_bytes() == b"y" * 10
    assert (cache / "Look" / "data.csv").read_text() == (cache / ".verified" / "notes.txt").read_text() == "mine"
    assert "not in the cache" in error(invoke("cache", "rm", "NoSuchNF", "--root", str(cache)), 1)
    removed = json.loads(invoke("cache", "rm", "chestnf", "--root", str(cache), "--force", "--json").stdout)
    assert removed["state"] == "unfinished" and removed["freed_bytes"] == 1000
    line = error(invoke("cache", "rm", "DermaNF", "--root", str(cache)), 1)  # damaged: whose files are those?
    assert "mednf.json that does not read" in line and "--force" in line
    assert (cache / "DermaNF" / "mednf.json").read_text() == "{"
    assert invoke("cache", "rm", "DermaNF", "--root", str(cache), "--force", "--quiet").exit_code == 0
    for name in ("PhantomNF", ".remote"):
        assert invoke("cache", "rm", name, "--root", str(cache), "--quiet").exit_code == 0
    assert sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")) == [".verified", "Look", "photos"]


def test_cache_rm_never_removes_a_dataset_a_live_process_writes(cache):
    with dataset_lock(cache / "ChestNF", "build"):
        line = error(invoke("cache", "rm", "ChestNF", "--root", str(cache), "--force"), 1)
    assert "build" in line and str(os.getpid()) in line
    assert (cache / "ChestNF" / ".partial").is_dir()


def test_an_interrupted_removal_is_swept_by_the_next(cache):
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    left = cache / f".PhantomNF.removing-{gone.stdout.strip()}"  # what a removal killed mid-way leaves
    shutil.copytree(cache / "PhantomNF", left / "PhantomNF")
    (left / SCRATCH_MARK).write_text(json.dumps({"pid": int(gone.stdout)}))
    assert "PhantomNF" not in {e.name for e in cache_entries(cache) if e.name.startswith(".")}  # hidden, not listed
    remove_dataset("PhantomNF", cache)
    assert not left.exists() and not (cache / "PhantomNF").exists()


def test_cache_rm_of_a_dataset_holding_a_file_of_someone_else_names_it_and_needs_force(cache):
    (cache / "PhantomNF" / "thesis.tex").write_text("mine")
    (cache / "PhantomNF" / "latents.zarr" / ".notes").write_text("mine too")
    line = error(invoke("cache", "rm", "PhantomNF", "--root", str(cache)), 1)
    assert "2 file(s) its manifest does not list (latents.zarr/.notes, thesis.tex)" in line and "--force" in line
    assert (cache / "PhantomNF" / "thesis.tex").read_text() == "mine"
    assert invoke("cache", "rm", "PhantomNF", "--root", str(cache), "--force", "--quiet").exit_code == 0
    assert not (cache / "PhantomNF").exists()
