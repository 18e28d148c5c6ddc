"""`mednf build --continue-to N`: a finished build's meta-training continued, against one uninterrupted run."""

from __future__ import annotations

import json
import math
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from conftest import TINY
from safetensors.torch import load_file

import mednf
from mednf.building.curves import read_training
from mednf.building.pipeline import BuildOptions, build
from mednf.cli import main
from mednf.errors import BuildError, ConfigError

BASE = {"preset": "tiny", "size": 32, "max_samples": 20, "progress": False,
        "build_overrides": {"block_rows": 8, "val_every": 5, "val_samples": 6}}


def _build(out, steps, schedule="constant", **extra):
    meta = {"steps": steps, "lr_schedule": schedule, "meta_lr": 3e-3}
    return build("phantomnf", BuildOptions(out=out, overrides={"meta": meta}, **BASE, **extra))


def _latents(out):
    group = zarr.open_group(str(out / "latents.zarr"), mode="r")
    return {s: group[s][:] for s in ("train", "val", "test")}


def test_a_constant_schedule_continued_equals_one_uninterrupted_run(tmp_path):
    short, long = tmp_path / "short" / "PhantomNF", tmp_path / "long" / "PhantomNF"
    _build(short, 10)
    before = load_file(short / "model.safetensors")
    build("phantomnf", BuildOptions(out=short, continue_to=20, progress=False))
    _build(long, 20)
    theta, reference = load_file(short / "model.safetensors"), load_file(long / "model.safetensors")
    for name, value in reference.items():
        np.testing.assert_array_equal(theta[name].numpy(), value.numpy())
    assert any(not np.array_equal(before[k].numpy(), theta[k].numpy()) for k in before)
    for split, ref in _latents(long).items():
        np.testing.assert_allclose(_latents(short)[split], ref, rtol=1e-5, atol=1e-6)
    rows, ref_rows = read_training(short / "training.csv"), read_training(long / "training.csv")
    assert [(r["kind"], r["iteration"], r["loss"]) for r in rows] == [(r["kind"], r["iteration"], r["loss"])
                                                                      for r in ref_rows]
    manifest = json.loads((short / "mednf.json").read_text())["meta_training"]
    assert manifest["steps"] == 20 and manifest["schedule"] == [{"from": 1, "length": 10}, {"from": 11, "length": 20}]
    assert [h["step"] for h in manifest["history"]] == [5, 10, 15, 20]
    assert sorted(p.name for p in short.parent.iterdir()) == [".PhantomNF.lock", "PhantomNF"]  # nothing left over
    assert (short / ".continue" / "meta-last.safetensors").is_file()
    assert mednf.load(short, "test").latents.shape == (20, 32)


def test_a_cosine_schedule_is_replanned_as_documented(tmp_path):
    out = tmp_path / "PhantomNF"
    _build(out, 10, "cosine")
    build("phantomnf", BuildOptions(out=out, continue_to=25, progress=False))
    lrs = {int(r["iteration"]): float(r["lr"]) for r in read_training(out / "training.csv") if r["kind"] == "train"}
    assert sorted(lrs) == list(range(1, 26))
    for t, lr in lrs.items():  # iteration t runs at the lr of the schedule planned for 10, then for 25 steps
        length = 10 if t <= 10 else 25
        assert lr == pytest.approx(3e-3 * 0.5 * (1 + math.cos(math.pi * (t - 1) / length)),
                                   rel=5e-6)  # 6 significant digits in the CSV


def test_bad_continuations_are_one_line_errors(tmp_path, phantom_dir):
    out = tmp_path / "PhantomNF"
    _build(out, 10)
    with pytest.raises(BuildError, match="--continue-to 10 is invalid: PhantomNF has finished 10 meta-iterations"):
        build("phantomnf", BuildOptions(out=out, continue_to=10, progress=False))
    with pytest.raises(ConfigError, match="with its own settings, but --preset, meta.steps was given"):
        build("phantomnf", BuildOptions(out=out, continue_to=30, preset="tiny", overrides={"meta": {"steps": 5}}))
    with pytest.raises(BuildError, match="needs a finished build in .*which holds no dataset"):
        build("phantomnf", BuildOptions(out=tmp_path / "nothing", continue_to=30))
    unfinished = tmp_path / "unfinished"
    (unfinished / ".partial").mkdir(parents=True)
    with pytest.raises(BuildError, match="holds an unfinished build"):
        build("phantomnf", BuildOptions(out=unfinished, continue_to=30))
    imported = tmp_path / "imported"
    shutil.copytree(phantom_dir, imported)
    manifest = json.loads((imported / "mednf.json").read_text())
    (imported / "mednf.json").write_text(json.dumps(manifest | {"origin": {"kind": "official-release"}}))
    with pytest.raises(BuildError, match="was imported \\(official-release\\).*no meta-training checkpoint"):
        build("phantomnf", BuildOptions(out=imported, continue_to=30))
    shutil.rmtree(out / ".continue")
    result = CliRunner().invoke(main, ["build", "phantomnf", "--out", str(out), "--continue-to", "30"])
    assert result.exit_code == 1 and "meta-last.safetensors is missing" in result.output
    assert "Traceback" not in result.output and (out / "mednf.json").is_file()


def test_a_dataset_of_an_older_phantom_generator_is_neither_complete_nor_continued(tmp_path, phantom_dir):
    """Built from phantoms this mednf no longer draws: a rerun and --continue-to say so (and --restart), and
    leave nothing behind."""
    old = tmp_path / "PhantomNF"
    shutil.copytree(phantom_dir, old)
    manifest = json.loads((old / "mednf.json").read_text())
    manifest["source"]["generator"] = 2
    (old / "mednf.json").write_text(json.dumps(manifest))
    for options in (BuildOptions(out=old, **TINY), BuildOptions(out=old, continue_to=30, progress=False)):
        with pytest.raises(BuildError, match="drawn by generator version 2, this mednf draws version 3.*--restart"):
            build("phantomnf", options)
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.endswith(".lock")) == ["PhantomNF"]


def test_a_killed_continuation_leaves_the_old_dataset_and_resumes(tmp_path):
    out = tmp_path / "PhantomNF"
    _build(out, 10)
    old = (out / "mednf.json").read_bytes()
    cmd = [sys.executable, "-m", "mednf.cli", "build", "phantomnf", "--out", str(out), "--continue-to", "400",
           "--quiet", "--set", "build.checkpoint_every=5"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    scratch = tmp_path / ".PhantomNF.continue" / ".partial" / "training.csv"
    deadline = time.monotonic() + 300
    while not (scratch.is_file() and len(scratch.read_text().splitlines()) > 30):  # continued past iteration 20
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert (out / "mednf.json").read_bytes() == old  # the finished dataset is untouched
    assert mednf.load(out, "test").manifest.meta_training["steps"] == 10
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, check=False)
    assert result.returncode == 0, result.stderr
    assert "resuming meta-training at iteration" in result.stderr
    rows = read_training(out / "training.csv")
    assert [int(r["iteration"]) for r in rows if r["kind"] == "train"] == list(range(1, 401))
    assert not (tmp_path / ".PhantomNF.continue").exists()


def test_a_continuation_killed_around_the_swap_is_finished_not_redone(tmp_path, monkeypatch):
    import os

    from mednf.building import continuation

    out = tmp_path / "PhantomNF"
    _build(out, 6)
    real_replace, calls = os.replace, []

    def dies_between_the_renames(src, dst):
        calls.append(dst)
        real_replace(src, dst)
        if str(dst).endswith(".replaced"):
            raise KeyboardInterrupt  # the process is gone after the first rename
    monkeypatch.setattr(continuation.os, "replace", dies_between_the_renames)
    with pytest.raises(KeyboardInterrupt):
        build("phantomnf", BuildOptions(out=out, continue_to=12, progress=False))
    monkeypatch.setattr(continuation.os, "replace", real_replace)
    assert not out.exists() and (tmp_path / ".PhantomNF.continue" / "mednf.json").is_file()
    mednf.build("phantomnf", out=out, continue_to=12, progress=False)  # finishes the swap: no work redone
    assert json.loads((out / "mednf.json").read_text())["meta_training"]["steps"] == 12
    assert sorted(p.name for p in tmp_path.iterdir()) == [".PhantomNF.lock", "PhantomNF"]


def test_a_continuation_killed_before_the_swap_is_swapped_in_and_another_target_starts_over(tmp_path, monkeypatch):
    from mednf.building import continuation, pipeline

    out = tmp_path / "PhantomNF"
    _build(out, 6)

    def killed(scratch, target):
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline, "swap_in", killed)
    with pytest.raises(KeyboardInterrupt):  # complete in the scratch folder, not yet swapped
        build("phantomnf", BuildOptions(out=out, continue_to=12, progress=False))
    monkeypatch.undo()
    before = len((tmp_path / ".PhantomNF.continue" / "build.log").read_text())
    build("phantomnf", BuildOptions(out=out, continue_to=12, progress=False))
    rerun = (out / "build.log").read_text()[before:]  # the continuation's log became the dataset's
    assert "is already complete" in rerun and "resuming meta-training" not in rerun
    assert json.loads((out / "mednf.json").read_text())["meta_training"]["steps"] == 12
    # a continuation killed on its way to 20, then asked for 16: the old scratch is discarded, not refused
    monkeypatch.setattr(pipeline, "swap_in", killed)
    with pytest.raises(KeyboardInterrupt):
        build("phantomnf", BuildOptions(out=out, continue_to=20, progress=False))
    monkeypatch.undo()
    assert continuation._scratch_target(tmp_path / ".PhantomNF.continue") == 20
    build("phantomnf", BuildOptions(out=out, continue_to=16, progress=False))
    assert json.loads((out / "mednf.json").read_text())["meta_training"]["steps"] == 16
    assert not (tmp_path / ".PhantomNF.continue").exists()


# ------------------------------------------------------------------------------- every source kind continues

def test_a_build_of_your_own_images_continues_and_other_images_are_refused_without_leftovers(tmp_path):
    """Where the files were read is no part of the source's identity, for every kind: a build of a folder of
    PNGs continues (it used to be refused every time, on its recorded ``path``). Files changed since are
    refused with the kind's own fix (no MedMNIST flags), and the refused attempt leaves no scratch folder."""
    from test_sources_custom import png_folder, write_builder

    png_folder(tmp_path)
    path = write_builder(tmp_path, "images", size=16, path="imgs", split_ratio=[0.5, 0.25, 0.25])
    out = build(str(path), BuildOptions(out=tmp_path / "out", progress=False))
    build(str(path), BuildOptions(out=out, continue_to=4, progress=False))
    assert mednf.load(out, "test").manifest.meta_training["steps"] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "imgs", "mine.toml", "out"]
    first = tmp_path / "imgs" / "im00.png"
    first.write_bytes((tmp_path / "imgs" / "im01.png").read_bytes())  # other pixels under the same name
    for _ in range(2):  # every failed attempt cleans up after itself
        with pytest.raises(BuildError) as err:
            build(str(path), BuildOptions(out=out, continue_to=6, progress=False))
        message = str(err.value)
        differ = message.split("was built from (")[1].split("); ")[0]
        assert differ.startswith("sha256: ") and "path:" not in differ and "file:" not in differ
        assert "restore them as they were, or rebuild Mine with --restart" in message
        assert "--medmnist-root" not in message and "--source-npz" not in message
        assert sorted(p.name for p in tmp_path.iterdir()) == [".out.lock", "imgs", "mine.toml", "out"]
    assert mednf.load(out, "test").manifest.meta_training["steps"] == 4  # the dataset as it was


def test_a_medmnist_build_continues_from_the_file_it_was_built_from_without_medmnist_root(tmp_path, monkeypatch):
    """The recorded source is reused by every command that rereads it: ``--continue-to`` finds the npz where
    the build read it (``source.path``) as ``decode`` and ``eval`` do, with no --medmnist-root and no download."""
    from conftest import SHARED_MEDMNIST

    if not (SHARED_MEDMNIST / "breastmnist_64.npz").is_file():
        pytest.skip(f"real MedMNIST file {SHARED_MEDMNIST / 'breastmnist_64.npz'} is absent")
    root = tmp_path / "mine"
    root.mkdir()
    shutil.copyfile(SHARED_MEDMNIST / "breastmnist_64.npz", root / "breastmnist_64.npz")
    out = tmp_path / "BreastNF"
    options = {"preset": "tiny", "max_samples": 12, "progress": False,
               "build_overrides": {"block_rows": 8, "val_every": 5, "val_samples": 4}}
    build("breastnf", BuildOptions(out=out, medmnist_root=root, overrides={"meta": {"steps": 5}}, **options))
    monkeypatch.setenv("MEDNF_OFFLINE", "1")  # a download attempt would be an error
    monkeypatch.delenv("MEDMNIST_ROOT", raising=False)
    build("breastnf", BuildOptions(out=out, continue_to=8, progress=False))
    continued = mednf.load(out, "test")
    assert continued.manifest.meta_training["steps"] == 8 and len(continued) == 12
    assert continued.manifest.source["path"] == str(root / "breastmnist_64.npz")
    (root / "breastmnist_64.npz").unlink()  # gone from where it was read: the kind's fix, nothing left over
    with pytest.raises(Exception, match="breastmnist_64.npz"):
        build("breastnf", BuildOptions(out=out, continue_to=10, progress=False))
    assert sorted(p.name for p in tmp_path.iterdir()) == [".BreastNF.lock", "BreastNF", "mine"]


def test_python_build_errors_name_keywords_and_the_cli_names_flags(tmp_path):
    """mednf.build's messages say restart=True / out= / continue_to=N, the command's say --restart / --out."""
    out = tmp_path / "PhantomNF"
    _build(out, 4)
    with pytest.raises(BuildError) as err:
        mednf.build("phantomnf", out=out, preset="tiny", size=32, max_samples=20, steps=6, progress=False)
    assert "pass restart=True to rebuild it, or choose another out=" in str(err.value) and "--" not in str(err.value)
    with pytest.raises(BuildError) as err:
        mednf.build("phantomnf", out=out, continue_to=4, progress=False)
    assert str(err.value).startswith("continue_to=4 is invalid: PhantomNF has finished 4 meta-iterations")
    with pytest.raises(ConfigError) as err:
        mednf.build("phantomnf", out=out, continue_to=9, preset="tiny", restart=True)
    assert "but preset=, restart=True was given; drop it, or build anew with restart=True" in str(err.value)
    imported = tmp_path / "imported"
    shutil.copytree(out, imported)
    manifest = json.loads((imported / "mednf.json").read_text())
    (imported / "mednf.json").write_text(json.dumps(manifest | {"origin": {"kind": "official-release"}}))
    with pytest.raises(BuildError, match=r"; build it with `mednf.build\('NAME', steps=9\)` instead"):
        mednf.build("phantomnf", out=imported, continue_to=9)
    result = CliRunner().invoke(main, ["build", "phantomnf", "--out", str(out), "--preset", "tiny", "--size", "32",
                                       "--max-samples", "20", "--steps", "6"])
    assert result.exit_code == 1 and "pass --restart to rebuild it, or choose another --out" in result.output
    with pytest.raises(ConfigError) as err:  # the source kinds' messages too, their class kept
        mednf.build("phantomnf", out=tmp_path / "other", source_npz="x.npz", progress=False)
    assert "source_npz='x.npz' is invalid for PhantomNF" in str(err.value) and "drop source_npz=" in str(err.value)
    result = CliRunner().invoke(main, ["build", "phantomnf", "--out", str(tmp_path / "other"), "--source-npz", "x.npz"])
    assert result.exit_code == 2 and "--source-npz x.npz is invalid for PhantomNF" in result.output


def test_a_build_that_fails_before_writing_anything_leaves_no_folder(tmp_path, capsys):
    """Nothing but build.log written: the folder goes, and the last line says so (the log's lines were on
    the console); a failure after the build began (its .partial exists) keeps the folder to resume."""
    from test_sources_custom import png_folder, write_builder

    png_folder(tmp_path, count=12)
    path = write_builder(tmp_path, "images", size=16, path="imgs", splits=(5, 3, 3), split_ratio=[0.5, 0.25, 0.25])
    with pytest.raises(Exception, match="has split counts"):
        build(str(path), BuildOptions(out=tmp_path / "out", progress=False))
    assert not (tmp_path / "out").exists()
    assert "removed " + str(tmp_path / "out") + ": the build failed before writing anything" in capsys.readouterr().err
