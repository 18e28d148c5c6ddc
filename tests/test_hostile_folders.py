"""Where mednf may write: a dataset folder is mednf's alone, exports never replace someone else's files, and no
lock or temporary file is written through a link. Every case checks that no byte of the user's files changed."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from mednf.errors import BuildError, ConfigError
from mednf.format.layout import MANIFEST
from mednf.io.files import SCRATCH_MARK, atomic_write_bytes, temporary_name
from mednf.io.lock import dataset_lock
from mednf.tasks import export
from mednf.tasks.evaluate import write_report
from mednf.tasks.export import export_hf, export_zenodo


def _digests(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


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
    assert _hidden(tmp_path) == [".PhantomNF.lock"]  # no scratch or old copy left, only the export's lock


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
    assert _hidden(tmp_path) == [".PhantomNF.lock"]


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
    (tmp_path / ".out.export-4242").symlink_to(victim)  # where the export would make its scratch folder
    with pytest.raises(BuildError, match="is in the way and is not a folder mednf made"):
        export_hf(phantom_dir, tmp_path / "out")
    assert not any(victim.iterdir()) and not (tmp_path / "out").exists()
    assert (tmp_path / ".out.export-4242").is_symlink()  # refused, left as it is


def test_an_eval_report_is_never_written_through_a_planted_link(phantom_dir, tmp_path):
    from mednf.tasks.evaluate import evaluate

    victim = tmp_path / "victim.json"
    victim.write_text("precious")
    out = tmp_path / "report"
    out.mkdir()
    (out / "summary.json").symlink_to(victim)
    write_report(evaluate(phantom_dir, ["test"]), out)
    assert victim.read_text() == "precious" and not (out / "summary.json").is_symlink()


# ------------------------------------------------------------------ mednf marks what it creates
# Each case below was a data-loss bug: a folder or file of the user's taken for mednf's by its name alone.


def _snapshot(folder: Path) -> dict[str, str | int]:
    """Every entry under ``folder``: a file's sha256, a folder's permission bits, a link's target."""
    found: dict[str, str | int] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        found[rel] = (f"-> {os.readlink(p)}" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
                      if p.is_file() else p.stat().st_mode & 0o7777)
    return found


def _cli(*args: str):
    from click.testing import CliRunner

    from mednf.cli import main

    return CliRunner().invoke(main, list(args))


def _one_line_error(result, status: int, *fragments: str) -> str:
    """The single ``error:`` line of a refused command (no traceback), checked for its exit status and words."""
    lines = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == status and len(lines) == 1 and "Traceback" not in result.output, result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def offline_registry(tmp_path, monkeypatch) -> None:
    """A registry naming PhantomNF's Zenodo record, on a server that cannot be reached: every download fails."""
    registry = tmp_path / "reg.toml"
    registry.write_text('[PhantomNF]\nzenodo_record = "1"\n')
    monkeypatch.setenv("MEDNF_REGISTRY", str(registry))
    monkeypatch.setenv("MEDNF_ZENODO_URL", "http://127.0.0.1:9")


def _dead_pid() -> int:
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True)
    return int(done.stdout)


def test_a_download_never_sweeps_a_users_folders_named_like_its_scratch(tmp_path, offline_registry):
    """Finding 1: ``.<Name>.<word>-<digits>/`` and ``.downloads/<Name>-<digits>/`` of the user's (no mark of
    mednf's, their "pid" dead) survive a download; only a marked scratch folder of a dead process goes."""
    root = tmp_path / "R"
    (root / ".PhantomNF.backup-99999").mkdir(parents=True)
    (root / ".PhantomNF.backup-99999" / "important.txt").write_text("keep")
    (root / ".downloads" / "PhantomNF-99998").mkdir(parents=True)
    (root / ".downloads" / "PhantomNF-99998" / "draft.txt").write_text("mine too")
    before = _snapshot(root)
    killed = root / f".PhantomNF.download-{_dead_pid()}"  # what a killed download leaves: marked, pid dead
    killed.mkdir()
    (killed / SCRATCH_MARK).write_text(json.dumps({"pid": int(killed.name.rsplit("-", 1)[1])}))
    _one_line_error(_cli("download", "PhantomNF", "--root", str(root)), 1)
    assert not killed.exists()
    after = _snapshot(root)
    assert {k: v for k, v in after.items() if k in before} == before
    assert sorted(p.name for p in root.iterdir()) == [".PhantomNF.backup-99999", ".PhantomNF.lock", ".downloads"]
    assert sorted(p.name for p in (root / ".downloads").iterdir()) == ["PhantomNF-99998"]


@pytest.fixture
def finished(phantom_dir, tmp_path) -> Path:
    """A finished build (with its checkpoints in ``.continue/``) that the test may change."""
    out = tmp_path / "C"
    shutil.copytree(phantom_dir, out)
    return out


def test_a_continuation_never_takes_a_users_folder_at_its_scratch_name(finished, tmp_path):
    """Finding 1: the user's ``<parent>/.<out>.continue/`` is neither deleted nor built in; the dataset stays."""
    mine = tmp_path / ".C.continue"
    mine.mkdir()
    (mine / "notes.txt").write_text("mine")
    before, dataset = _snapshot(mine), _snapshot(finished)
    result = _cli("build", "phantomnf", "--out", str(finished), "--continue-to", "30", "--quiet")
    _one_line_error(result, 1, str(mine), "not a build folder of mednf's", "move it away")
    assert _snapshot(mine) == before and _snapshot(finished) == dataset
    assert sorted(p.name for p in tmp_path.iterdir()) == [".C.continue", ".C.lock", "C"]


def test_a_continuation_refused_for_a_planted_link_leaves_no_staging_folder(finished, tmp_path):
    """Finding 1: a link planted at the scratch name is refused before anything is made: nothing is written
    where it points and no ``.C.continue.staging-<pid>/`` is left behind."""
    victim = tmp_path / "victim"
    victim.mkdir()
    (tmp_path / ".C.continue").symlink_to(victim)
    dataset = _snapshot(finished)
    _one_line_error(_cli("build", "phantomnf", "--out", str(finished), "--continue-to", "30", "--quiet"), 1,
                    "not a build folder of mednf's")
    assert list(victim.iterdir()) == [] and _snapshot(finished) == dataset
    assert sorted(p.name for p in tmp_path.iterdir()) == [".C.continue", ".C.lock", "C", "victim"]


def test_a_failed_staging_of_a_continuation_is_removed(finished, tmp_path, monkeypatch):
    """Whatever stops the seeding of a continuation's scratch folder, its staging folder goes with it."""
    from mednf.building import continuation

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(continuation, "save_tensors", broken)
    with pytest.raises(OSError):
        mednf_build(finished, continue_to=30)
    assert sorted(p.name for p in tmp_path.iterdir()) == [".C.lock", "C"]


def mednf_build(out: Path, **options) -> Path:
    from mednf.building.pipeline import BuildOptions, build

    return build("phantomnf", BuildOptions(out=out, progress=False, **options))


def test_cache_rm_never_sweeps_a_users_folder_named_like_a_removal(phantom_dir, tmp_path):
    """Finding 1: ``mednf cache rm`` sweeps only the marked removal folders of dead processes."""
    cache = tmp_path / "cache"
    shutil.copytree(phantom_dir, cache / "PhantomNF")
    (cache / ".PhantomNF.removing-1").mkdir()
    (cache / ".PhantomNF.removing-1" / "keep.txt").write_text("mine")
    before = _snapshot(cache / ".PhantomNF.removing-1")
    result = _cli("cache", "rm", "PhantomNF", "--root", str(cache), "--quiet")
    assert result.exit_code == 0, result.output
    assert not (cache / "PhantomNF").exists() and _snapshot(cache / ".PhantomNF.removing-1") == before
    assert sorted(p.name for p in cache.iterdir()) == [".PhantomNF.lock", ".PhantomNF.removing-1"]


def test_an_hf_export_never_adopts_a_users_hf_style_folder(phantom_dir, tmp_path):
    """Finding 2: Parquet shards and a card without the export's own manifest are the user's: refused, and
    nothing in the folder (its permissions included) changes."""
    hf = tmp_path / "hf"
    (hf / "data").mkdir(parents=True)
    (hf / "README.md").write_text("mine")
    (hf / "data" / "x.parquet").write_bytes(b"")
    hf.chmod(0o755)
    before = _snapshot(tmp_path)
    result = _cli("export", str(phantom_dir), "--format", "hf", "--out", str(hf))
    _one_line_error(result, 2, "already holds README.md, data", "not a Hugging Face export of PhantomNF")
    assert _snapshot(tmp_path) == {**before, ".hf.lock": hashlib.sha256(b"").hexdigest()}
    assert hf.stat().st_mode & 0o7777 == 0o755


def test_an_hf_export_keeps_the_permissions_of_the_folder_it_fills(phantom_dir, tmp_path):
    """An empty folder given to an HF export keeps its permissions, and a new one gets the usual ones (not the
    0700 of a private temporary folder)."""
    given = tmp_path / "given"
    given.mkdir()
    given.chmod(0o750)
    export_hf(phantom_dir, given)
    assert given.stat().st_mode & 0o7777 == 0o750 and (given / MANIFEST).is_file()
    fresh = export_hf(phantom_dir, tmp_path / "fresh")
    umask = os.umask(0)
    os.umask(umask)
    assert fresh.stat().st_mode & 0o7777 == 0o777 & ~umask
    assert _hidden(tmp_path) == [".fresh.lock", ".given.lock"]  # the exports' locks; no scratch left


def test_a_zenodo_export_never_overwrites_a_users_files_by_name(phantom_dir, tmp_path):
    """Finding 3: a ``<Name>.tar`` and a ``SHA256SUMS`` of the user's are not an earlier export."""
    pub = tmp_path / "pub"
    pub.mkdir()
    (pub / "PhantomNF.tar").write_text("mine")
    (pub / "SHA256SUMS").write_text("x")
    before = _snapshot(pub)
    result = _cli("export", str(phantom_dir), "--format", "zenodo", "--out", str(pub))
    _one_line_error(result, 2, "already holds PhantomNF.tar, SHA256SUMS", "not a Zenodo export of PhantomNF")
    assert _snapshot(pub) == before


def test_a_zenodo_export_replaces_only_its_own_marked_export(phantom_dir, tmp_path):
    """A Zenodo export marks its folder; exporting again replaces it, and another dataset's mark is refused."""
    from mednf.io.files import OWNER_MARK

    pub = tmp_path / "pub"
    export_zenodo(phantom_dir, pub)
    first = _digests(pub)
    assert sorted(first) == [OWNER_MARK, "PhantomNF.tar", "SHA256SUMS", "registry-entry.toml"]
    export_zenodo(phantom_dir, pub)
    assert _digests(pub) == first
    (pub / OWNER_MARK).write_text(json.dumps({"kind": "zenodo-export", "name": "OtherNF"}))
    before = _digests(pub)
    with pytest.raises(ConfigError, match="holds a Zenodo export of OtherNF, not a Zenodo export of PhantomNF"):
        export_zenodo(phantom_dir, pub)
    assert _digests(pub) == before


def test_a_build_log_never_makes_a_folder_a_build_folder(tmp_path):
    """Finding 4: a ``build.log`` (with a card and a training log, or alone) is not a build of mednf's: the
    build is refused before it writes or removes anything."""
    proj = tmp_path / "proj"
    proj.mkdir()
    for name in ("README.md", "training.csv", "build.log"):
        (proj / name).write_text(f"my {name}")
    before = _snapshot(proj)
    result = _cli("build", "phantomnf", "--preset", "tiny", "--max-samples", "16", "--quiet", "--out", str(proj))
    _one_line_error(result, 2, "already holds README.md, build.log, training.csv", "not a MedNF build")
    assert _snapshot(proj) == before
    logs, empty = tmp_path / "logs", tmp_path / "EMPTY"
    logs.mkdir()
    empty.mkdir()
    (logs / "build.log").write_text("my log")
    result = _cli("build", "breastnf", "--preset", "tiny", "--no-download", "--medmnist-root", str(empty),
                  "--out", str(logs))
    _one_line_error(result, 2, "already holds build.log")
    assert "removed" not in result.output and _snapshot(logs) == {"build.log": hashlib.sha256(b"my log").hexdigest()}


def test_a_failed_build_removes_only_what_it_made(tmp_path):
    """A build that fails before writing anything removes a folder it created, and leaves an empty folder it
    was given empty (it is the user's)."""
    empty, given = tmp_path / "EMPTY", tmp_path / "given"
    empty.mkdir()
    given.mkdir()
    for out in (tmp_path / "new", given):
        result = _cli("build", "breastnf", "--preset", "tiny", "--no-download", "--medmnist-root", str(empty),
                      "--out", str(out))
        assert result.exit_code == 1 and "removed" in result.output, result.output
    assert not (tmp_path / "new").exists() and given.is_dir() and list(given.iterdir()) == []


@pytest.mark.parametrize("hidden", [".draft.part", ".notes.tmp"])
def test_a_build_never_takes_a_users_hidden_files_for_its_temporaries(finished, tmp_path, hidden):
    """Finding 5: only ``.<name>.<pid>.tmp`` / ``.part`` are mednf's temporaries; a user's hidden ``.draft.part``
    makes a folder not empty (refused, kept), in a new folder as in a finished build's."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / hidden).write_text("draft")
    (finished / hidden).write_text("draft")
    before = _snapshot(tmp_path)
    for out in (mine, finished):
        result = _cli("build", "phantomnf", "--preset", "tiny", "--max-samples", "16", "--quiet", "--out", str(out))
        _one_line_error(result, 2, f"already holds {hidden}")
    assert {k: v for k, v in _snapshot(tmp_path).items() if not k.endswith(".lock")} == before


EXPORT = [sys.executable, "-m", "mednf.cli", "export", "{ds}", "--format", "hf", "--out", "{out}", "--quiet"]


def test_an_export_into_a_folder_another_export_writes_is_refused_at_once(phantom_dir, tmp_path):
    """Finding 6: the export takes the lock of ``--out`` (role ``export``); a second one is refused at once with
    one line naming the holder, and writes nothing."""
    import subprocess

    out = tmp_path / "hubX"
    with dataset_lock(out, "export"):
        done = subprocess.run([part.format(ds=phantom_dir, out=out) for part in EXPORT], capture_output=True,
                              text=True, timeout=300, check=False)
    assert done.returncode == 1, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "being written by another process (export, pid" in lines[0], done.stderr
    assert str(os.getpid()) in lines[0] and not out.exists()


def test_two_exports_into_one_folder_at_once_never_lose_one_silently(phantom_dir, tmp_path):
    """Finding 6, with two real processes: one is refused (exit 1, one line) or both finish one after the other;
    either way the folder holds one whole export and nothing else is left."""
    import subprocess

    out = tmp_path / "hubX"
    command = [part.format(ds=phantom_dir, out=out) for part in EXPORT]
    procs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [(p.wait(300), p.communicate()[1]) for p in procs]
    assert sorted(rc for rc, _ in results) in ([0, 0], [0, 1]), results
    for rc, err in results:
        if rc == 1:
            assert len(err.strip().splitlines()) == 1 and "being written by another process (export" in err, err
    reference = export_hf(phantom_dir, tmp_path / "reference")
    assert _digests(out) == _digests(reference)
    assert _hidden(tmp_path) == [".hubX.lock", ".reference.lock"]


@pytest.mark.parametrize("inner", ["", "sub"])
def test_a_download_into_a_dataset_folder_is_refused(phantom_dir, tmp_path, offline_registry, inner):
    """Finding 7: ``--root`` that is (or lies inside) a dataset folder is refused as build and import-official
    refuse it; the dataset is unchanged."""
    dataset = tmp_path / "D"
    shutil.copytree(phantom_dir, dataset)
    before = _snapshot(dataset)
    root = dataset / inner if inner else dataset
    _one_line_error(_cli("download", "PhantomNF", "--root", str(root)), 2, "inside the dataset")
    assert _snapshot(dataset) == before


def test_cache_rm_of_a_damaged_folder_needs_force_and_says_what_it_holds(tmp_path):
    """Finding 8: a ``mednf.json`` that does not read beside other files may be anyone's: ``cache rm`` without
    --force refuses, naming what is there; nothing changes."""
    cache = tmp_path / "cache"
    (cache / "j").mkdir(parents=True)
    (cache / "j" / "mednf.json").write_text("{not json")
    (cache / "j" / "thesis.tex").write_text("mine")
    (cache / "j" / "figures").mkdir()
    before = _snapshot(cache)
    _one_line_error(_cli("cache", "rm", "j", "--root", str(cache)), 1,
                    "mednf.json that does not read", "beside 2 other entries (figures, thesis.tex)", "--force")
    assert _snapshot(cache) == before
    assert _cli("cache", "rm", "j", "--root", str(cache), "--force", "--quiet").exit_code == 0
    assert not (cache / "j").exists()
