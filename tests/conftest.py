"""Shared fixtures: where the real MedMNIST files are (../shared/data/medmnist beside the checkout)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

SHARED_MEDMNIST = Path(os.environ.get("MEDNF_TEST_MEDMNIST", Path(__file__).resolve().parents[2] / "shared/data/medmnist"))


MEASURED: list[str] = []


def report(line: str) -> None:
    """Record a measured number; all of them are printed at the end of the test run."""
    print(line)
    MEASURED.append(line)


def pytest_terminal_summary(terminalreporter) -> None:
    if MEASURED:
        terminalreporter.section("numbers measured by the tests")
        for line in MEASURED:
            terminalreporter.write_line(line)


def load_npz(name: str) -> dict[str, np.ndarray]:
    """Arrays of a real MedMNIST file, or skip the test with the reason."""
    path = SHARED_MEDMNIST / name
    if not path.is_file():
        pytest.skip(f"real MedMNIST file {path} is absent (set MEDNF_TEST_MEDMNIST to its folder)")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


# PhantomNF with the `tiny` preset at 32², 20 samples per split, blocks of 8 rows: seconds to build.
TINY = {"preset": "tiny", "size": 32, "max_samples": 20, "progress": False,
        "build_overrides": {"block_rows": 8, "val_every": 10, "val_samples": 6}}


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A real dataset built by `mednf build` once per test session (read-only for the tests)."""
    from mednf.build.pipeline import BuildOptions, build

    out = tmp_path_factory.mktemp("built") / "PhantomNF"
    build("phantomnf", BuildOptions(out=out, **TINY))
    return out
