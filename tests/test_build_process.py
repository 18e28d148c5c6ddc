"""`mednf build` as a user runs it: subprocesses killed with SIGKILL and resumed, two builds racing for
one directory, torchrun with two gloo processes, and bad input at the command line."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import zarr
from click.testing import CliRunner
from safetensors.torch import load_file

from mednf.building.curves import read_training
from mednf.cli import main
from mednf.format.reader import verify_dataset
from mednf.format.tensors import load_tensors

# PhantomNF at 32², tiny network, small splits: a build takes seconds; blocks of 8 rows.
ARGS = ["--preset", "tiny", "--size", "32", "--max-samples", "40", "--quiet",
        "--set", "build.block_rows=8", "--set", "build.val_every=50", "--set", "build.checkpoint_every=5"]
MEDNF = [sys.executable, "-m", "mednf.cli"]


def run_build(out: Path, *extra: str, steps: int = 200, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([*MEDNF, "build", "phantomnf", "--out", str(out), "--steps", str(steps), *ARGS, *extra],
                          capture_output=True, text=True, timeout=600, check=False, **kwargs)


def start_build(out: Path, steps: int = 200, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*MEDNF, "build", "phantomnf", "--out", str(out), "--steps", str(steps), *ARGS, *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(predicate, proc: subprocess.Popen, timeout: float = 300.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"build ended before the kill point: {proc.communicate()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("kill point not reached in time")
        time.sleep(0.05)


def latents(out: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(str(out / "latents.zarr"), mode="r")
    return {split: group[split][:] for split in ("train", "val", "test")}


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The same build, never interrupted."""
    out = tmp_path_factory.mktemp("ref") / "PhantomNF"
    result = run_build(out)
    assert result.returncode == 0, result.stderr
    return out


def test_sigkill_during_meta_training_and_fitting_then_resume(reference, tmp_path):
    out = tmp_path / "PhantomNF"
    proc = start_build(out)
    wait_for(lambda: (out / ".partial" / "meta-last.safetensors").is_file(), proc)  # a checkpoint exists
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "mednf.json").exists()
    _, metadata = load_tensors(out / ".partial" / "meta-last.safetensors")
    assert metadata["iteration"] < 200  # killed in the middle of meta-training

    # settings that change how the work is split or saved, not its result, do not make it another build
    proc = start_build(out, 200, "--set", "build.checkpoint_every=7", "--set", "fit.batch_size=3",
                       "--memory-budget", "6GB")
    blocks = out / ".partial" / "blocks"
    wait_for(lambda: blocks.is_dir() and len(list(blocks.glob("*.npz"))) >= 2, proc)  # fitting has begun
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "mednf.json").exists()

    first_resume = proc.stderr.read() if proc.stderr else ""
    assert "resuming meta-training at iteration" in first_resume
    result = run_build(out)  # the same command again
    assert result.returncode == 0, result.stderr
    assert "meta-training finished in an earlier run" in result.stderr  # meta-training had finished before the 2nd kill
    assert "were already done, resuming" in result.stderr
    manifest = verify_dataset(out).to_json()
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 40, "val": 40, "test": 40}
    # exactly the uninterrupted build: same θ, same latents row for row (no duplicate, gap or shift)
    ref_theta, theta = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    for name, value in ref_theta.items():
        np.testing.assert_allclose(theta[name].numpy(), value.numpy(), rtol=1e-5, atol=1e-6)
    for split, ref in latents(reference).items():
        np.testing.assert_allclose(latents(out)[split], ref, rtol=1e-4, atol=1e-5)
    # training.csv: every iteration once, after two kills, with the uninterrupted run's numbers
    rows, ref_rows = read_training(out / "training.csv"), read_training(reference / "training.csv")
    assert [int(r["iteration"]) for r in rows if r["kind"] == "train"] == list(range(1, 201))
    assert [int(r["iteration"]) for r in rows if r["kind"] == "val"] == [50, 100, 150, 200]
    assert [(r["kind"], r["iteration"]) for r in rows] == [(r["kind"], r["iteration"]) for r in ref_rows]
    for column in ("loss", "train_psnr", "val_psnr"):
        got = [float(r[column]) for r in rows if r[column]]
        np.testing.assert_allclose(got, [float(r[column]) for r in ref_rows if r[column]], rtol=1e-4)


def test_second_build_into_a_running_directory_is_refused(tmp_path):
    out = tmp_path / "PhantomNF"
    proc = start_build(out, steps=100000)
    try:
        wait_for(lambda: (out / "build.log").is_file(), proc)
        result = run_build(out, steps=100000)
        assert result.returncode == 1
        assert result.stderr.strip().splitlines()[-1].startswith("error: ") and "another process" in result.stderr
        assert f"pid {proc.pid}" in result.stderr
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "mednf.json").exists()


@pytest.mark.skipif(shutil.which("torchrun") is None, reason="torchrun is not on PATH")
def test_torchrun_two_gloo_processes_equal_one_process(reference, tmp_path):
    out = tmp_path / "PhantomNF"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = ["torchrun", "--standalone", "--nproc_per_node", "2", "-m", "mednf.cli", "build", "phantomnf",
           "--out", str(out), "--steps", "200", *ARGS]
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    manifest = verify_dataset(out).to_json()
    assert manifest["world_size"] == 2
    assert {s: v["count"] for s, v in manifest["splits"].items()} == {"train": 40, "val": 40, "test": 40}
    # gradients are summed over ranks in another order than one process sums them: equal up to rounding
    ref_theta, theta = load_file(reference / "model.safetensors"), load_file(out / "model.safetensors")
    worst = max(float((theta[k] - v).abs().max() / (v.abs().max() + 1e-12)) for k, v in ref_theta.items())
    assert worst < 1e-3
    ref_manifest = verify_dataset(reference).to_json()
    for split in ("train", "val", "test"):
        assert manifest["splits"][split]["psnr_mean"] == pytest.approx(ref_manifest["splits"][split]["psnr_mean"],
                                                                        abs=0.02)


def _cli(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.output


@pytest.mark.parametrize("args, expected", [
    (["build", "chestnff"], "did you mean 'ChestNF'"),
    (["build", "phantomnf", "--steps", "-3"], "steps = -3 is invalid"),
    (["build", "phantomnf", "--gpu", "3"], "--gpu 3 was given but CUDA is not available"),
    (["build", "phantomnf", "--set", "meta.inner_steps"], "expected SECTION.KEY=VALUE"),
    (["build", "phantomnf", "--set", "build.blocks=3"], "build settings \\['blocks'\\] are unknown"),
    (["build", "phantomnf", "--max-samples", "0"], "--max-samples 0 is invalid"),
    (["build", "phantomnf", "--size", "100", "--preset", "nope"], "preset = 'nope' is unknown"),
])
def test_bad_command_line_is_one_line_and_nonzero(tmp_path, args, expected):
    import re

    code, output = _cli(*args, "--out", str(tmp_path / "out"))
    assert code == 2 and output.count("\n") == 1 and output.startswith("error: ")
    assert re.search(expected, output), output
    assert not (tmp_path / "out" / "mednf.json").exists()


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    code, output = _cli("build", "phantomnf", "--out", str(blocker / "sub"))
    assert code == 1 and "is not writable" in output and output.count("\n") == 1


@pytest.mark.parametrize("kind", ["wrong-md5", "corrupt", "missing-keys", "wrong-shape", "nan"])
def test_bad_source_files_from_the_cli(tmp_path, kind):
    from test_sources import make_npz

    root = tmp_path / "root"
    root.mkdir()
    bodies = {
        "wrong-md5": ("root", make_npz(counts=(546, 78, 156))),
        "corrupt": ("npz", make_npz()[:300]),
        "missing-keys": ("npz", make_npz(test_labels=None)),
        "wrong-shape": ("npz", make_npz(size=28)),
        "nan": ("npz", make_npz(val_images=np.full((3, 64, 64), np.nan, np.float32))),
    }
    where, body = bodies[kind]
    args = ["build", "breastnf", "--out", str(tmp_path / "out"), "--preset", "tiny", "--no-download", "--quiet"]
    if where == "root":
        (root / "breastmnist_64.npz").write_bytes(body)
        args += ["--medmnist-root", str(root)]
    else:
        (tmp_path / "x.npz").write_bytes(body)
        args += ["--source-npz", str(tmp_path / "x.npz")]
    code, output = _cli(*args)
    lines = [line for line in output.splitlines() if line.startswith("error: ")]
    assert code == 1 and len(lines) == 1, output
    assert not (tmp_path / "out" / "mednf.json").exists()


def test_a_resumed_build_records_the_exact_gradient_norms(tmp_path):
    """The baseline check of a build killed during meta-training and resumed uses the exact meta-gradient norms
    (kept in the checkpoint), not the 6 digits of training.csv: the same bytes as an uninterrupted run."""
    from mednf.engine.baselines import diagnose_no_learning

    out = tmp_path / "PhantomNF"
    proc = start_build(out, 60)
    wait_for(lambda: (out / ".partial" / "meta-last.safetensors").is_file(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = run_build(out, steps=60)
    assert result.returncode == 0, result.stderr
    check = verify_dataset(out).meta_training.baseline_check
    _, last = load_tensors(out / ".continue" / "meta-last.safetensors")
    assert len(last["grad_norms"]) == 60
    exact = diagnose_no_learning(last["grad_norms"], None).as_dict()
    assert (check["grad_norm_early"], check["grad_norm_late"]) == (exact["grad_norm_early"], exact["grad_norm_late"])


def test_a_resume_runs_with_the_threads_the_build_began_with(tmp_path):
    """Another thread count changes the last bits of torch's reductions: a build begun with one thread and resumed
    with two still gives the bytes of an uninterrupted one-thread build."""
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: no other thread count to resume with")
    reference = tmp_path / "ref" / "PhantomNF"
    assert run_build(reference, "--threads", "1", steps=30).returncode == 0
    out = tmp_path / "PhantomNF"
    proc = start_build(out, 30, "--threads", "1")
    wait_for(lambda: (out / ".partial" / "meta-last.safetensors").is_file(), proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    result = run_build(out, "--threads", "2", steps=30)
    assert result.returncode == 0, result.stderr
    for split, rows in latents(out).items():
        np.testing.assert_array_equal(rows, latents(reference)[split])
    assert "resuming with the 1 CPU thread(s) this build began with, not 2" in result.stderr
