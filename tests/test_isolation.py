"""The test run keeps away from the user's caches: HOME and every cache variable point into the session's
sandbox (tests/conftest.py), in this process and in the subprocesses that tests start, the libraries that
read them at import saw the sandbox, and the sandbox is removed when the session ends."""

from __future__ import annotations

import json
import os
import pwd
import subprocess
import sys
import tempfile
from pathlib import Path

from conftest import CACHE_VARIABLES, SANDBOX, SHARED_MEDMNIST

from mednf.format.layout import mednf_home
from mednf.sources.medmnist import medmnist_root
from mednf.tasks.export import export_hf

REAL_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)
PROBE = """import json, os, datasets.config as d, huggingface_hub.constants as h
from mednf.format.layout import mednf_home
from mednf.sources.medmnist import medmnist_root
print(json.dumps([str(p) for p in (d.HF_DATASETS_CACHE, h.HF_HUB_CACHE, h.HF_HOME, mednf_home(), medmnist_root(),
                  os.path.expanduser("~"), os.environ.get("XDG_CACHE_HOME"))]))"""


def inside(path: str | Path) -> bool:
    return Path(path).resolve().is_relative_to(SANDBOX)


def test_every_cache_points_into_the_sandbox():
    import datasets.config
    import huggingface_hub.constants

    assert SANDBOX.is_dir() and SANDBOX.parent == Path(tempfile.gettempdir()).resolve()
    assert not REAL_HOME.resolve().is_relative_to(SANDBOX)
    for name in CACHE_VARIABLES:
        assert inside(os.environ[name]), f"{name}={os.environ[name]}"
    assert "MEDMNIST_ROOT" not in os.environ
    assert inside(Path.home()) and inside(Path("~/.medmnist").expanduser()) and inside(medmnist_root())
    assert inside(mednf_home())
    # read at import: proves the sandbox was in place before anything imported them
    assert inside(datasets.config.HF_DATASETS_CACHE) and inside(datasets.config.HF_CACHE_HOME)
    assert inside(huggingface_hub.constants.HF_HUB_CACHE) and inside(huggingface_hub.constants.HF_HOME)
    # the real data beside the checkout is found from __file__, not from HOME
    assert SHARED_MEDMNIST == Path(__file__).resolve().parents[2] / "shared/data/medmnist" or \
        "MEDNF_TEST_MEDMNIST" in os.environ
    assert not inside(SHARED_MEDMNIST)


def test_a_subprocess_inherits_the_sandbox():
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    paths = json.loads(result.stdout.strip().splitlines()[-1])
    assert all(inside(p) for p in paths), paths


def _tree_state(folder: Path) -> dict[str, int]:
    """Every path under ``folder`` with its mtime (ns); empty if the folder is absent."""
    if not folder.exists():
        return {}
    return {str(p): p.lstat().st_mtime_ns for p in [folder, *folder.rglob("*")]}


def test_load_dataset_of_an_export_caches_in_the_sandbox(phantom_dir, tmp_path):
    import datasets

    real = REAL_HOME / ".cache" / "huggingface"
    before = _tree_state(real)
    cache = Path(os.environ["HF_DATASETS_CACHE"])
    loaded = datasets.load_dataset(str(export_hf(phantom_dir, tmp_path / "PhantomNF")))
    files = [Path(f["filename"]) for split in loaded.values() for f in split.cache_files]
    assert len(files) == 3 and all(f.is_file() and f.resolve().is_relative_to(cache.resolve()) for f in files), files
    assert _tree_state(real) == before  # nothing created, removed or rewritten in the user's HF cache


def test_the_sandbox_is_removed_when_the_session_ends(tmp_path):
    # a nested pytest session, with its temporary folder in tmp_path, runs the first test of this file
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    test = f"{Path(__file__).resolve()}::test_every_cache_points_into_the_sandbox"
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", test], env=env,
                            capture_output=True, text=True, timeout=300, check=False, cwd=tmp_path)
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout[-3000:] + result.stderr[-3000:]
    assert not list(tmp_path.glob("mednf-tests-*"))
