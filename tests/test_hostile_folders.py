"""Where mednf may write: a dataset folder is mednf's alone, exports never replace someone else's files, and no
lock or temporary file is written through a link. Every case checks that no byte of the user's files changed."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from mednf.errors import BuildError, ConfigError
from mednf.format.layout import MANIFEST
from mednf.io.files import atomic_write_bytes, temporary_name
from mednf.io.lock import dataset_lock
from mednf.tasks import export
from mednf.tasks.evaluate import write_report
from mednf.tasks.export import export_hf, export_zenodo


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_an_hf_export_never_replaces_another_datasets_folder(phantom_dir, tmp_path):
    other = tmp_path / "Other"
    shutil.copytree(phantom_dir, other)  # a whole dataset
    before = _digests(other)
    with pytest.raises(ConfigError, match="inside the dataset"):
        export_hf(phantom_dir, other)
    assert _digests(other) == before


def test_an_hf_export_never_replaces_another_export(phantom_dir, tmp_path):
    out = tmp_path / "Exported"
    export_hf(phantom_dir, out)
    manifest = out / MANIFEST
    manifest.write_text(manifest.read_text().replace('"name": "PhantomNF"', '"name": "OtherNF"', 1))
    before = _digests(out)
    with pytest.raises(ConfigError, match="holds the export of OtherNF"):
        export_hf(phantom_dir, out)
    assert _digests(out) == before


@pytest.mark.parametrize("fmt", ["hf", "zenodo"])
def test_an_export_refuses_a_folder_with_other_files(phantom_dir, tmp_path, fmt):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("my notes")
    with pytest.raises(ConfigError, match="already holds notes.txt"):
        (export_hf if fmt == "hf" else export_zenodo)(phantom_dir, out)
    assert _digests(out) == {"notes.txt": hashlib.sha256(b"my notes").hexdigest()}


def test_an_export_again_replaces_its_own_earlier_export(phantom_dir, tmp_path):
    out = tmp_path / "PhantomNF"
    export_hf(phantom_dir, out)
    first = _digests(out)
    export_hf(phantom_dir, out)
    assert _digests(out) == first
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no scratch or old copy left


def test_an_interrupted_export_leaves_the_earlier_one_whole(phantom_dir, tmp_path, monkeypatch):
    out = tmp_path / "PhantomNF"
    export_hf(phantom_dir, out)
    before = _digests(out)
    real = export._write_hf_export

    def interrupted(files, folder):
        real(files, folder)
        raise KeyboardInterrupt  # after every file of the new export was written, before it is swapped in

    monkeypatch.setattr(export, "_write_hf_export", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_hf(phantom_dir, out)
    assert _digests(out) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_reports_are_never_written_into_a_dataset(phantom_dir, tmp_path):
    root = tmp_path / "PhantomNF"
    shutil.copytree(phantom_dir, root)
    before = _digests(root)
    with pytest.raises(ConfigError, match="inside the dataset"):
        write_report(None, root / "ev")  # refused before the report is looked at
    assert _digests(root) == before


def test_the_lock_is_never_written_through_a_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (tmp_path / ".X.lock").symlink_to(victim)
    with pytest.raises(BuildError, match="symbolic link"), dataset_lock(tmp_path / "X", "build"):
        pass
    assert victim.read_text() == "precious"


def test_a_temporary_file_is_never_written_through_a_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    target = tmp_path / "out.json"
    temporary_name(target).symlink_to(victim)  # planted where the writer would put its temporary file
    atomic_write_bytes(target, b"{}")
    assert target.read_bytes() == b"{}" and victim.read_text() == "precious"
    assert not os.path.lexists(temporary_name(target))


@pytest.mark.parametrize("command", [
    ["decode", "{ds}", "--out", "{ds}/grid.npy"],
    ["decode", "{ds}", "--out", "{ds}/latents.zarr/grid.png"],
    ["eval", "{ds}", "--out", "{ds}/ev"],
    ["eval", "{ds}", "--plot", "{ds}/err.png"],
])
def test_cli_outputs_are_never_written_into_a_dataset(phantom_dir, tmp_path, command):
    from click.testing import CliRunner

    from mednf.cli import main

    root = tmp_path / "PhantomNF"
    shutil.copytree(phantom_dir, root)
    before = _digests(root)
    result = CliRunner().invoke(main, [part.format(ds=root) for part in command])
    assert result.exit_code == 2 and "inside the dataset" in result.output and "Traceback" not in result.output
    assert _digests(root) == before


def test_a_stray_file_in_a_dataset_is_named_with_its_fix(phantom_dir, tmp_path):
    import mednf
    from mednf.errors import FormatError

    root = tmp_path / "PhantomNF"
    shutil.copytree(phantom_dir, root)
    (root / "g.npy").write_bytes(b"stray")
    with pytest.raises(FormatError, match="does not list: g.npy; move or delete them"):
        mednf.load(root, "test")


def test_a_build_never_adopts_files_already_in_its_folder(tmp_path):
    from click.testing import CliRunner

    from mednf.cli import main

    out = tmp_path / "U"
    (out / "sub").mkdir(parents=True)
    (out / "notes.txt").write_text("mine")
    (out / "sub" / "data.csv").write_text("a,b\n")
    before = _digests(out)
    result = CliRunner().invoke(main, ["build", "phantomnf", "--preset", "tiny", "--max-samples", "16", "--quiet",
                                       "--out", str(out)])
    assert result.exit_code == 2 and "already holds notes.txt, sub" in result.output
    assert _digests(out) == before and sorted(p.name for p in out.iterdir()) == ["notes.txt", "sub"]


def test_a_build_is_never_written_inside_a_dataset(phantom_dir, tmp_path):
    from click.testing import CliRunner

    from mednf.cli import main

    root = tmp_path / "PhantomNF"
    shutil.copytree(phantom_dir, root)
    before = _digests(root)
    result = CliRunner().invoke(main, ["build", "phantomnf", "--preset", "tiny", "--max-samples", "16", "--quiet",
                                       "--out", str(root / "inner")])
    assert result.exit_code == 2 and "inside the dataset" in result.output
    assert _digests(root) == before


def test_an_export_never_takes_a_folder_for_its_own_by_names(phantom_dir, tmp_path):
    """A folder whose entries merely have an export's names (a dataset called data/, a README.md, a lone
    SHA256SUMS) is not an earlier export: refused, and nothing in it changes (the dataset inside survives)."""
    parent = tmp_path / "p2"
    shutil.copytree(phantom_dir, parent / "data")
    (parent / "README.md").write_text("mine")
    before = _digests(parent)
    with pytest.raises(ConfigError):
        export_hf(parent / "data", parent)
    with pytest.raises(ConfigError):
        export_hf(phantom_dir, parent)
    assert _digests(parent) == before
    lone = tmp_path / "p7"
    lone.mkdir()
    (lone / "SHA256SUMS").write_text("mine")
    with pytest.raises(ConfigError, match="already holds SHA256SUMS"):
        export_zenodo(phantom_dir, lone)
    assert (lone / "SHA256SUMS").read_text() == "mine"


def test_a_build_never_takes_a_folder_for_its_own_by_names(tmp_path):
    from click.testing import CliRunner

    from mednf.cli import main

    out = tmp_path / "p3"
    out.mkdir()
    (out / "README.md").write_text("mine")
    result = CliRunner().invoke(main, ["build", "phantomnf", "--preset", "tiny", "--max-samples", "16", "--quiet",
                                       "--out", str(out)])
    assert result.exit_code == 2 and "already holds README.md" in result.output
    assert (out / "README.md").read_text() == "mine"


def test_an_export_refuses_a_linked_folder_and_a_foreign_registry_entry(phantom_dir, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    with pytest.raises(ConfigError, match="symbolic link"):
        export_hf(phantom_dir, tmp_path / "link")
    (tmp_path / "p8.registry-entry.toml").write_text("mine")
    with pytest.raises(ConfigError, match="not the registry entry"):
        export_hf(phantom_dir, tmp_path / "p8")
    assert (tmp_path / "p8.registry-entry.toml").read_text() == "mine"
    assert not (tmp_path / "p8").exists()


def test_the_hf_scratch_folder_is_never_a_planted_link(phantom_dir, tmp_path, monkeypatch):
    victim = tmp_path / "victim"
    victim.mkdir()
    monkeypatch.setattr(os, "getpid", lambda: 4242)
    (tmp_path / ".out.export-4242.tmp").symlink_to(victim)
    export_hf(phantom_dir, tmp_path / "out")
    assert not any(victim.iterdir()) and (tmp_path / "out" / MANIFEST).is_file()


def test_an_eval_report_is_never_written_through_a_planted_link(phantom_dir, tmp_path):
    from mednf.tasks.evaluate import evaluate

    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    out = tmp_path / "report"
    out.mkdir()
    (out / "summary.json").symlink_to(victim)
    write_report(evaluate(phantom_dir, ["test"]), out)
    assert victim.read_text() == "precious" and not (out / "summary.json").is_symlink()
