"""benchmarks/gpu/: the GPU run's preparation (prepare.sh, wheels.py, wheels.txt) and its command (run.sh).

Always, with no network: every third-party module mednf imports is on the GPU machine's image, in the wheels
that travel (wheels.txt), or an optional extra; the pinned wheels' own dependencies are covered the same way;
the GPU check's engine path imports with the packages the image lacks blocked, and whatever fails on the build
path names a carried wheel. With the folders that ``benchmarks/gpu/prepare.sh --rehearsal`` fills (never
committed): ``run.sh --dry-run`` goes through preflight, build and check from the checkout on PYTHONPATH.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
from conftest import load_script, report
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from mednf.optional import EXTRAS

REPO = Path(__file__).resolve().parents[1]
GPU = REPO / "benchmarks" / "gpu"
# what the GPU image lacks (benchmarks/gpu/image-packages.txt does not list them): blocked in the import checks
ABSENT = ("zarr", "numcodecs", "datasets", "medmnist", "donfig", "google_crc32c", "dill", "multiprocess")
# the build command's path (the GPU check's own mednf imports are read from benchmarks/gpu_check.py)
BUILD_PATH = ("mednf", "mednf.building.api", "mednf.building.pipeline", "mednf.format.writer", "mednf.format.reader",
              "mednf.sources.read", "mednf.cli", "mednf.cli.build", "mednf.loading", "mednf.dataset")


def _wheels() -> ModuleType:
    """benchmarks/gpu/wheels.py imported as a module (benchmarks/ is not a package)."""
    return load_script(GPU / "wheels.py", "mednf_gpu_wheels")


def _check_imports() -> tuple[str, ...]:
    """The mednf modules benchmarks/gpu_check.py imports."""
    tree = ast.parse((REPO / "benchmarks" / "gpu_check.py").read_text(encoding="utf-8"))
    names = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    return tuple(sorted(n for n in names if n.startswith("mednf")))


def _third_party_imports() -> dict[str, list[str]]:
    """Top-level module → the mednf files that import it (at the top or inside a function), not the standard
    library's nor mednf's own."""
    found: dict[str, list[str]] = {}
    for path in sorted((REPO / "mednf").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top != "mednf" and top not in sys.stdlib_module_names:
                    found.setdefault(top, []).append(path.relative_to(REPO).as_posix())
    return found


def test_every_import_of_mednf_is_on_the_gpu_image_or_carried():
    wheels = _wheels()
    image, pins = wheels.image_packages(), wheels.pinned()
    assert {"zarr", "numcodecs"} <= set(pins), pins  # the dataset writer's format
    assert not set(pins) & image, "a carried wheel duplicates a package the image has"
    # mednf's required dependencies: the image has them or they travel
    missing = [str(r) for r in wheels.mednf_requirements() if canonicalize_name(r.name) not in image | set(pins)]
    assert not missing, f"pyproject.toml requires {missing}: neither on the GPU image nor in benchmarks/gpu/wheels.txt"
    # every module mednf imports, lazily too: its distribution is on the image or carried, or it is an extra
    dists = importlib.metadata.packages_distributions()
    uncovered = {}
    for module, files in _third_party_imports().items():
        names = {canonicalize_name(d) for d in dists.get(module, [module])}
        if names & (image | set(pins)) or EXTRAS.get(module):
            continue
        uncovered[module] = sorted(set(files))
    assert not uncovered, f"imported by mednf, not on the GPU image, not in wheels.txt, not an extra: {uncovered}"


def test_the_carried_wheels_needs_are_carried_or_on_the_image():
    """wheels.txt is closed under the Requires-Dist of each pinned package (read here from the installed copy's
    metadata, the same version; prepare.sh checks the downloaded wheels themselves)."""
    wheels = _wheels()
    image, pins, env = wheels.image_packages(), wheels.pinned(), wheels.target_environment("3.12")
    checked = []
    for name, version in pins.items():
        try:
            dist = importlib.metadata.distribution(name)
        except importlib.metadata.PackageNotFoundError:
            continue
        if dist.version != version:
            continue
        reqs = [Requirement(text) for text in dist.requires or []]
        unmet = [str(r) for r in wheels.needed(reqs, image, env) if canonicalize_name(r.name) not in pins]
        assert not unmet, f"{name}=={version} needs {unmet}: not on the GPU image and not in wheels.txt"
        checked.append(name)
    assert "zarr" in checked, "zarr==… of wheels.txt is not the version installed here: update the pin"
    report(f"gpu wheels: {len(pins)} pinned, closure checked for {', '.join(checked)}")


def test_compare_names_every_difference():
    wheels = _wheels()
    found = {"zarr": "3.1.6", "new": "1.0", "numcodecs": "0.17"}
    lines = wheels.compare(found, {"zarr": "3.1.6", "numcodecs": "0.16.6", "old": "2"})
    assert lines == ["needed but not in wheels.txt: new==1.0", "in wheels.txt but not needed: old==2",
                     "version differs: wheels.txt numcodecs==0.16.6, resolved 0.17"]


def test_the_gpu_path_imports_with_the_absent_packages_blocked():
    engine_path = _check_imports()
    assert "mednf.engine.fit" in engine_path and "mednf.engine.meta" in engine_path
    code = f"""
import importlib, json, sys
for name in {ABSENT!r}:
    sys.modules[name] = None  # what the GPU image lacks: an import of it raises ImportError
failed = {{}}
for name in {engine_path + BUILD_PATH!r}:
    try:
        importlib.import_module(name)
    except ImportError as err:
        failed[name] = [err.name, str(err)]
spec = importlib.util.spec_from_file_location("gpu_check", {str(REPO / "benchmarks" / "gpu_check.py")!r})
module = importlib.util.module_from_spec(spec)
sys.modules["gpu_check"] = module
try:
    spec.loader.exec_module(module)
except ImportError as err:
    failed["benchmarks/gpu_check.py"] = [err.name, str(err)]
print(json.dumps(failed))
"""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    engine = {k: v for k, v in failed.items() if k in engine_path or k == "benchmarks/gpu_check.py"}
    assert not engine, f"the GPU check's imports need a package the GPU image lacks: {engine}"
    pins = _wheels().pinned()
    for name, (module, message) in failed.items():  # the build path may need a blocked package only if it travels
        assert not (module or "").startswith("mednf"), f"{name}: {message} (update BUILD_PATH in this test)"
        top = (module or "").split(".")[0]
        assert top in ABSENT and canonicalize_name(top) in pins, f"{name} needs {top}, which does not travel: {message}"


def _rehearsal_python() -> str:
    return os.environ.get("MEDNF_GPU_REHEARSAL_PYTHON") or sys.executable


def _prepared() -> str | None:
    """Why the rehearsal cannot run, or None."""
    python = _rehearsal_python()
    version = subprocess.run([python, "-c", "import sys; print(f'{sys.version_info[0]}{sys.version_info[1]}')"],
                             capture_output=True, text=True, check=True).stdout.strip()
    wheels = REPO / f".whl-cp{version}"
    if not list(wheels.glob("*.whl")):
        return f"{wheels.name}/ is absent: run benchmarks/gpu/prepare.sh --rehearsal (needs network; never committed)"
    if not (REPO / ".gpudata" / "medmnist" / "breastmnist_64.npz").is_file():
        return ".gpudata/ is absent: run benchmarks/gpu/prepare.sh (never committed)"
    return None


@pytest.mark.skipif(_prepared() is not None, reason=str(_prepared()))
def test_run_sh_dry_run_goes_through_every_step_from_the_checkout(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("OUT", "PYTHONPATH")}
    env.update(PYTHON=_rehearsal_python(), TMPDIR=str(tmp_path))
    proc = subprocess.run(["bash", str(GPU / "run.sh"), "--dry-run", "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=400, check=False)
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log[-6000:]
    for line in ("ok    mednf from the checkout: " + str(REPO / "mednf"), "ok    carried zarr: " + str(tmp_path),
                 "ok    carried numcodecs: " + str(tmp_path), "build: ok (exit 0)", "decode: ok (exit 0)",
                 "eval: ok (exit 0)", "check exit 0"):
        assert line in log, (line, log[-4000:])
    assert "FAIL" not in log
    assert sorted(p.name for p in out.iterdir()) == ["build.json", "build.log", "decode.png", "environment.txt",
                                                     "eval.png", "gpu_check.json", "gpu_check.md", "run.log",
                                                     "training.png"]
    build = json.loads((out / "build.json").read_text(encoding="utf-8"))
    assert build["status"] == "ok" and build["manifest"] and "latents.zarr/zarr.json" in build["files"]
    # what the build wrote, used through the CLI: decoded beside its inputs, and evaluated split by split
    assert build["decode"]["status"] == "ok" and build["decode"]["result"]["inputs_shown"] is True
    splits = build["eval"]["result"]["splits"]
    assert build["eval"]["status"] == "ok" and set(splits) == {"train", "val", "test"}
    for split, summary in splits.items():  # the latents as loaded decode to what the build measured
        assert abs(summary["psnr_mean"] - build["manifest"]["splits"][split]["psnr_mean"]) < 1e-3, (split, summary)
    check = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    assert check["complete"] and check["exit_code"] == 0
    assert all(part["status"] == "ok" for part in check["parts"].values())
    assert check["parts"]["engine"]["images"].endswith(".gpudata/medmnist/breastmnist_64.npz")
    assert not list(tmp_path.glob("mednf-gpu.*")), "run.sh left its scratch folder"
    report(f"run.sh --dry-run with {_rehearsal_python()}: {log.splitlines()[-1]}")
