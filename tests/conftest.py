"""Shared fixtures: where the real MedMNIST files are (../shared/data/medmnist beside the checkout), and a
sandbox that keeps the whole test run away from the user's caches.

At import (before any test module imports ``datasets`` or ``huggingface_hub``, which read their
environment at import) ``HOME`` and every cache variable are pointed into one temporary folder, removed
when the session ends; subprocesses started by the tests inherit it.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import site
import sys
import tempfile
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

SHARED_MEDMNIST = Path(os.environ.get("MEDNF_TEST_MEDMNIST",
                                      Path(__file__).resolve().parents[2] / "shared/data/medmnist"))


def _sandbox() -> Path:
    """Create the session's sandbox and point ``HOME`` and the caches into it (once per process)."""
    if os.environ.get("MEDNF_TEST_SANDBOX_PID") == str(os.getpid()):
        return Path(os.environ["MEDNF_TEST_SANDBOX"])
    early = sorted(m for m in ("datasets", "huggingface_hub", "medmnist") if m in sys.modules)
    if early:  # they have already read the real cache locations: isolation would be a lie
        raise RuntimeError(f"{early} were imported before tests/conftest.py could isolate the caches")
    root = Path(tempfile.mkdtemp(prefix="mednf-tests-")).resolve()
    home = root / "home"
    hf = home / ".cache" / "huggingface"
    for folder in (home, hf):
        folder.mkdir(parents=True, exist_ok=True)
    # subprocesses keep importing packages installed with `pip install --user` (found from HOME otherwise)
    os.environ.setdefault("PYTHONUSERBASE", site.getuserbase())
    os.environ.update({
        "MEDNF_TEST_SANDBOX": str(root), "MEDNF_TEST_SANDBOX_PID": str(os.getpid()),
        "HOME": str(home),  # ~/.medmnist (medmnist's default root, created by `import medmnist`), ~/.config, …
        "XDG_CACHE_HOME": str(home / ".cache"),
        "MEDNF_HOME": str(root / "mednf"),
        "HF_HOME": str(hf), "HF_DATASETS_CACHE": str(hf / "datasets"), "HF_HUB_CACHE": str(hf / "hub"),
        # the compiled fit kernel (else /tmp/torchinductor_$USER)
        "TORCHINDUCTOR_CACHE_DIR": str(root / "torchinductor"),
    })
    os.environ.pop("MEDMNIST_ROOT", None)  # → ~/.medmnist, i.e. inside the sandbox
    # torch's default thread count, stated: the commands run in-process would otherwise each pick the cores other
    # test processes leave free (mednf.openmp.free_cores), and change the thread count of the whole test run
    os.environ.setdefault("OMP_NUM_THREADS", str(len(os.sched_getaffinity(0))))
    return root


SANDBOX = _sandbox()
CACHE_VARIABLES = ("HOME", "XDG_CACHE_HOME", "MEDNF_HOME", "HF_HOME", "HF_DATASETS_CACHE", "HF_HUB_CACHE",
                   "TORCHINDUCTOR_CACHE_DIR")


def pytest_unconfigure(config) -> None:
    if os.environ.get("MEDNF_TEST_SANDBOX_PID") == str(os.getpid()):
        shutil.rmtree(SANDBOX, ignore_errors=True)


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


def load_script(path: Path, name: str) -> ModuleType:
    """A script of benchmarks/ imported as module ``name`` (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


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


@pytest.fixture(autouse=True)
def _quick_retries(monkeypatch) -> None:
    """Downloads retry after 10 ms instead of 1 s, 2 s, 4 s: the tests of flaky servers stay quick (those that
    test the waits set their own)."""
    from mednf.io import http

    monkeypatch.setattr(http, "RETRY_DELAY_S", 0.01)


@pytest.fixture(scope="session")
def phantom_dir(tmp_path_factory) -> Path:
    """A real dataset built by `mednf build` once per test session (read-only for the tests)."""
    from mednf.building.pipeline import BuildOptions, build

    out = tmp_path_factory.mktemp("built") / "PhantomNF"
    build("phantomnf", BuildOptions(out=out, **TINY))
    return out
