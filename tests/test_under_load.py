"""What keeps a command fast beside other jobs: the thread count taken from the cores other processes leave
free (:mod:`mednf.openmp`). Speed itself is measured in ``benchmarks/under_load.py``, not here."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from click.testing import CliRunner

from mednf.cli import main
from mednf.openmp import cpu_count, free_cores


@pytest.fixture
def spinner():
    """One other process that keeps one core busy."""
    if cpu_count() < 2:
        pytest.skip("one core: nothing to leave free")
    process = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield process
    finally:
        process.kill()
        process.wait()


def test_free_cores_leaves_out_the_cores_other_processes_hold(spinner):
    import time

    time.sleep(0.3)  # the spinner running
    assert 1 <= free_cores(0.3) < cpu_count()


def test_a_command_without_threads_takes_the_free_cores(spinner, phantom_dir, tmp_path):
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(main, ["decode", str(phantom_dir), "--indices", "0:2", "--out",
                                           str(tmp_path / "x.npy")], env={"OMP_NUM_THREADS": None})
        assert result.exit_code == 0, result.output
        assert torch.get_num_threads() < cpu_count()
        result = CliRunner().invoke(main, ["decode", str(phantom_dir), "--indices", "0:2", "--out",
                                           str(tmp_path / "y.npy"), "--threads", str(cpu_count())],
                                    env={"OMP_NUM_THREADS": None})
        assert result.exit_code == 0 and torch.get_num_threads() == cpu_count()  # --threads wins
    finally:
        torch.set_num_threads(before)
