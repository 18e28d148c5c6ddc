"""benchmarks/gpu_check.py, the one-call GPU check: its ``--dry-run`` (the same code path on the CPU with a tiny
config) writes every part's numbers and passes the exactness checks; without CUDA it refuses in one line; an
absent BreastMNIST file is a skip with a note on the GPU and fabricated images in the dry run."""

from __future__ import annotations

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
from conftest import SHARED_MEDMNIST, load_script, report

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"
PRECISIONS = ("fp32", "tf32", "bf16")


def _script() -> ModuleType:
    """benchmarks/gpu_check.py imported as a module (benchmarks/ is not a package)."""
    return load_script(SCRIPT, "mednf_gpu_check")


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
    # a generous time budget so that a busy machine does not turn a precision or an arm into a skip
    proc = _run("--dry-run", "--out", str(out), "--medmnist-root", str(SHARED_MEDMNIST), "--time-budget", "90")
    wall = time.perf_counter() - start
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    results = json.loads((out / "gpu_check.json").read_text(encoding="utf-8"))
    report(f"gpu_check --dry-run: {wall:.1f} s wall ({results['total_seconds']:.1f} s inside the script)")
    markdown = (out / "gpu_check.md").read_text(encoding="utf-8")
    assert markdown.startswith("# mednf GPU check (dry run)") and "could not be rendered" not in markdown
    assert results["dry_run"] is True and results["exit_code"] == 0 and results["complete"] is True
    env = results["environment"]
    assert env["torch"] == torch.__version__ and env["device"] == "cpu" and env["device_name"] and env["date"]
    assert set(env["engine_environment"]) == {"MEDNF_COMPILE", "MEDNF_FIT_KERNEL", "MEDNF_MALLOC"}
    arms_environment = {"eager": {"MEDNF_COMPILE": "off", "MEDNF_FIT_KERNEL": "eager"},
                        "compiled": {"MEDNF_COMPILE": "on", "MEDNF_FIT_KERNEL": None}}

    parts = results["parts"]
    assert list(parts) == ["exactness", "memory_budget", "determinism", "engine", "roofline", "decode"]
    for name, part in parts.items():
        assert part["status"] == "ok", (name, part)
        assert _number(part["seconds"])

    checks = parts["exactness"]["checks"]
    assert set(checks) == {"meta_gradient", "micro_batch", "fit_batch_independence", "cpu_gpu", "paper_cpu_gpu"}
    for name, check in checks.items():
        assert check["status"] == "ok" and check["passed"] is True, (name, check)
        assert _number(check["value"]) and check["value"] <= check["threshold"]
    assert checks["meta_gradient"]["value"] <= 1e-6 and checks["micro_batch"]["value"] <= 1e-6
    assert _number(checks["cpu_gpu"]["psnr_cpu"]) and _number(checks["cpu_gpu"]["psnr_device"])
    paper = checks["paper_cpu_gpu"]  # the run config in float64, CPU vs CPU here
    assert paper["threshold"] == 1e-9 and paper["dtype"] == "float64" and paper["batch"] == 2
    assert _number(paper["meta_gradient"]) and _number(paper["latents"]) and paper["fit_steps"] == 3

    config = results["config"]
    B = config["meta"]["batch_size"]
    memory = parts["memory_budget"]  # the planner had to split B under the budget
    assert memory["split"] is True and 1 <= memory["micro_batch"] < B and memory["parts"] > 1
    assert memory["plan"]["budget_bytes"] == int(memory["budget_mib"] * 2**20)
    assert memory["budget_mib"] < memory["unsplit_estimated_peak_mib"] * 1.2
    assert [r["micro_batch"] for r in memory["runs"].values()] == [memory["micro_batch"], B]
    for run in memory["runs"].values():
        assert _number(run["peak_allocated_mib"]) and run["peak_reserved_mib"] is None  # no reserved figure on a CPU
        assert _number(run["estimated_peak_mib"]) and _number(run["seconds"])
    assert memory["check"]["passed"] and memory["check"]["compared"].startswith("meta-gradient")
    assert memory["check"]["value"] <= 1e-3 and _number(memory["check"]["update"])
    assert isinstance(memory["within_budget"], bool)

    determinism = parts["determinism"]  # one thread on a CPU: the two runs are the same to the byte
    assert determinism["identical"] is True and determinism["meta_iterations"] == 5
    for what in ("theta", "latents"):
        assert determinism[what]["identical"] and determinism[what]["differing_values"] == 0
        assert determinism[what]["max_abs_diff"] == 0.0 and determinism[what]["numel"] > 0
    assert determinism["deterministic_algorithms"] is False  # recorded, not forced

    engine = parts["engine"]
    assert engine["flop_model"] == "benchmarks/engine.py"  # the FLOP model is imported, not the fallback copy
    assert engine["arms"] == arms_environment
    assert set(engine["precisions"]) == set(PRECISIONS)
    for index, (precision, bench) in enumerate(engine["precisions"].items()):
        assert bench["status"] == "ok", (precision, bench)
        assert bench["precision"]["requested"] == precision and _number(bench["gemm_peak"]["tflops"])
        assert _number(bench["test_theta0"]["psnr_mean"])
        arms = bench["arms"]
        assert list(arms) == ["eager", "compiled"]
        if index > 0:  # the dry run compiles for the first precision only
            assert arms.pop("compiled")["status"] == "skipped"
        for arm, result in arms.items():
            assert result["status"] == "ok" and result["environment"] == arms_environment[arm], (precision, arm, result)
            # the engine's self-checks of the compiled meta-gradient and fit kernel, in the compiled arm only
            assert (result["compile_report"] is None) == (result["fit"]["compile_report"] is None) == (arm == "eager")
            meta, fit = result["meta"], result["fit"]
            assert meta["iterations"] == meta["planned_iterations"] == 4 and not meta["truncated"]
            assert meta["micro_batch"] == B == bench["plan"]["micro_batch"]  # B fits whole
            for value in (meta["s_per_iter"], meta["first_s"], meta["peak_allocated_mib"], meta["estimated_peak_mib"],
                          meta["tflops"], meta["fraction_of_peak"], fit["images_per_s"], fit["peak_allocated_mib"],
                          fit["estimated_peak_mib"], fit["tflops"], fit["fraction_of_peak"]):
                assert _number(value) and value > 0, (precision, arm, result)
            assert fit["batch_size"] == fit["signals"] == fit["planned_batch"] == bench["plan"]["fit_batch"]
            assert fit["steps"] == 20 == config["fit"]["steps"] and "out_of_memory" not in fit
            assert _number(result["test_psnr_mean"]) and result["test"]["images"] == bench["test_theta0"]["images"]
    # tf32 runs as fp32 on a CPU: the same θ₀ and the same batches give the same numbers
    fp32, tf32 = (engine["precisions"][p] for p in ("fp32", "tf32"))
    assert fp32["test_theta0"] == {**tf32["test_theta0"], "seconds": fp32["test_theta0"]["seconds"]}
    assert fp32["arms"]["eager"]["meta"]["train_psnr_last"] == tf32["arms"]["eager"]["meta"]["train_psnr_last"]
    assert "fp32 eager: s/meta-iter" in markdown and "fp32 compiled: test PSNR" in markdown

    roofline = parts["roofline"]
    assert set(roofline["gemms"]) == set(PRECISIONS)
    for shapes in roofline["gemms"].values():
        assert list(shapes) == ["meta_context", "meta_full_grid", "fit"]
        for gemm in shapes.values():
            assert gemm["status"] == "ok" and _number(gemm["tflops"]) and gemm["tflops"] > 0, gemm
            assert gemm["shape"][1:] == [config["field"]["hidden_dim"]] * 2
    assert _number(roofline["copy"]["read_write_gb_per_s"]) and roofline["copy"]["read_write_gb_per_s"] > 0
    for what in ("meta_iteration", "fit_step"):
        profile = roofline["profile"][what]
        assert profile["events"].startswith("CPU ops") and profile["count"] > 0 and profile["top"]
        assert _number(profile["busy_s"]) and _number(profile["wall_s"]) and 0 <= profile["idle_share"] <= 1

    decode = parts["decode"]
    assert _number(decode["images_per_s"]) and decode["images_per_s"] > 0
    assert decode["output_shape"] == [decode["batch"], 1, decode["size"], decode["size"]]
    real = (SHARED_MEDMNIST / "breastmnist_64.npz").is_file()
    assert engine["precisions"]["fp32"]["test_theta0"]["images"] == (156 if real else 16)


def test_the_arms_set_their_environment_and_restore_it(monkeypatch):
    gpu_check = _script()
    monkeypatch.setenv("MEDNF_COMPILE", "auto")
    monkeypatch.delenv("MEDNF_FIT_KERNEL", raising=False)
    with gpu_check.arm_environment("eager"):
        assert os.environ["MEDNF_COMPILE"] == "off" and os.environ["MEDNF_FIT_KERNEL"] == "eager"
    assert os.environ["MEDNF_COMPILE"] == "auto" and "MEDNF_FIT_KERNEL" not in os.environ
    monkeypatch.delenv("MEDNF_COMPILE")
    monkeypatch.setenv("MEDNF_FIT_KERNEL", "eager")
    with pytest.raises(RuntimeError), gpu_check.arm_environment("compiled"):
        assert os.environ["MEDNF_COMPILE"] == "on" and "MEDNF_FIT_KERNEL" not in os.environ
        raise RuntimeError
    assert "MEDNF_COMPILE" not in os.environ and os.environ["MEDNF_FIT_KERNEL"] == "eager"
    assert gpu_check.compile_report(object()) is None
    assert gpu_check.compile_report(type("Learner", (), {"compile_report": {"used": "eager"}})()) == {"used": "eager"}
    report = type("Report", (), {"to_dict": lambda self: {"used": "default"}})()
    assert gpu_check.compile_report(type("Fit", (), {"compile_report": report})()) == {"used": "default"}


def test_status_and_profile_helpers():
    gpu_check = _script()
    assert gpu_check._union_us([(0, 2), (1, 3), (5, 6), (5.5, 5.7)]) == 4
    assert gpu_check.worst_status({"a": {"status": "ok"}, "b": {"arms": {"x": {"status": "error"}}}}) == "error"
    assert gpu_check.worst_status({"a": {"status": "error"}, "b": {"check": {"status": "failed"}}}) == "failed"
    assert gpu_check.worst_status({"a": {"status": "ok", "compile_report": {"status": "error"}}}) == "ok"
    batches = gpu_check.batch_order(10, 4, 5)
    assert [len(b) for b in batches] == [4] * 5 and all(len(set(b.tolist())) == 4 for b in batches[:2])
    assert sorted(torch.cat(batches[:2] + [batches[2][:2]]).tolist()) == list(range(10))  # a whole epoch first


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
