"""benchmarks/gpu_check.py, the one-call GPU check: its ``--dry-run`` (the same code path on the CPU with a tiny
config) writes every part's numbers and passes the exactness checks; without CUDA it refuses in one line; an
absent BreastMNIST file is a skip with a note on the GPU and fabricated images in the dry run."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType

import pytest
import torch
from conftest import SHARED_MEDMNIST, report

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
PRECISIONS = ("fp32", "tf32", "bf16")


def _script() -> ModuleType:
    """benchmarks/gpu_check.py imported as a module (benchmarks/ is not a package)."""
    spec = importlib.util.spec_from_file_location("mednf_gpu_check", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "OUT"}  # --out is explicit; $OUT must not matter
    return subprocess.run([sys.executable, str(SCRIPT), *args], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def test_dry_run_writes_every_part_and_passes_the_exactness_checks(tmp_path):
    out = tmp_path / "results"
    start = time.perf_counter()
    # the real BreastMNIST file when it is there (read and area-downsampled to 8²), fabricated images otherwise;
    # a generous time budget so that a busy machine does not turn part 4 into a skip
    proc = _run("--dry-run", "--out", str(out), "--medmnist-root", str(SHARED_MEDMNIST), "--time-budget", "90")
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    report(f"gpu_check --dry-run: {wall:.1f} s wall ({results['total_seconds']:.1f} s inside the script)")
    assert (out / "gpu_check.md").read_text(encoding="utf-8").startswith("# mednf GPU check (dry run)")
    assert results["dry_run"] is True and results["exit_code"] == 0
    env = results["environment"]
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["device_name"] and env["date"]

    parts = results["parts"]
    assert list(parts) == ["exactness", "engine", "decode", "breastmnist"]
    for name, part in parts.items():
        assert part["status"] == "ok", (name, part)
        assert _number(part["seconds"])

    checks = parts["exactness"]["checks"]
    assert set(checks) == {"meta_gradient", "micro_batch", "fit_batch_independence", "cpu_gpu"}
    for name, check in checks.items():
        assert check["status"] == "ok" and check["passed"] is True, (name, check)
        assert _number(check["value"]) and check["value"] <= check["threshold"]
    assert checks["meta_gradient"]["value"] <= 1e-6 and checks["micro_batch"]["value"] <= 1e-6
    assert _number(checks["cpu_gpu"]["psnr_cpu"]) and _number(checks["cpu_gpu"]["psnr_device"])

    engine = parts["engine"]
    assert engine["flop_model"] == "benchmarks/engine.py"  # the FLOP model is imported, not the fallback copy
    assert set(engine["precisions"]) == set(PRECISIONS)
    for precision, bench in engine["precisions"].items():
        assert bench["status"] == "ok", (precision, bench)
        assert bench["precision"]["requested"] == precision
        meta, fit, gemm = bench["meta"], bench["fit"], bench["gemm_peak"]
        for value in (meta["s_per_iter"], meta["peak_mib"], meta["tflops"], meta["planned_peak_mib"],
                      fit["images_per_s"], fit["peak_mib"], fit["tflops"], gemm["tflops"],
                      meta["fraction_of_peak"], fit["fraction_of_peak"]):
            assert _number(value) and value > 0, (precision, bench)
        assert meta["planned_micro_batch"] == engine["config"]["meta"]["batch_size"]  # B fits whole
        assert fit["steps"] == 20 == engine["config"]["fit"]["steps"]

    decode = parts["decode"]
    assert _number(decode["images_per_s"]) and decode["images_per_s"] > 0
    assert decode["output_shape"] == [decode["batch"], 1, decode["size"], decode["size"]]

    breast = parts["breastmnist"]
    assert breast["meta"]["iterations"] >= 1
    assert _number(breast["test_psnr_mean"]) and _number(breast["test_theta0"]["psnr_mean"])
    expected_test = 156 if (SHARED_MEDMNIST / "breastmnist_64.npz").is_file() else 16
    assert breast["test_images"] == breast["test"]["images"] == expected_test


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_refuses_in_one_line(tmp_path):
    proc = _run("--out", str(tmp_path / "results"), timeout=60)
    assert proc.returncode == 3
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no CUDA device" in lines[0] and "--dry-run" in lines[0]
    assert not (tmp_path / "results").exists()


def test_absent_breastmnist_is_a_skip_on_the_gpu_and_fabricated_in_the_dry_run(tmp_path):
    gpu_check = _script()
    note = gpu_check.breastmnist_data(tmp_path, 64, fabricate=False)
    assert isinstance(note, str) and note.startswith("skipped:") and str(tmp_path / "breastmnist_64.npz") in note
    train, test, source = gpu_check.breastmnist_data(tmp_path, 8, fabricate=True)
    assert train.dtype == test.dtype == torch.uint8 and train.shape[1:] == test.shape[1:] == (1, 8, 8)
    assert source.startswith("fabricated")
