"""The memory planner: sizes parsed, plans that stay inside their budget (peaks measured in a fresh process),
refusals in one line before anything is allocated, and the budget kept out of a build's identity."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from click.testing import CliRunner
from conftest import TINY, report

from mednf.cli import main
from mednf.engine.memory import MemoryBudget, default_budget, format_bytes, memory_in_use, parse_memory, resolve_budget
from mednf.engine.planner import plan_memory
from mednf.engine.presets import get_preset
from mednf.errors import ConfigError

GiB = 2**30


def _error_line(result) -> str:
    """The one ``error:`` line of a failed command (exit 2, no traceback)."""
    assert result.exit_code == 2, (result.exit_code, result.output)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.mark.parametrize(("text", "expected"), [
    ("8GB", 8 * 10**9), ("8GiB", 8 * GiB), ("8G", 8 * GiB), ("6gb", 6 * 10**9), ("512MB", 512 * 10**6),
    ("1.5GiB", int(1.5 * GiB)), ("2e9", 2 * 10**9), (" 8 GB ", 8 * 10**9), (4096, 4096),
])
def test_sizes_parse(text, expected):
    assert parse_memory(text) == expected


@pytest.mark.parametrize("text", ["lots", "", "8XB", "GB", "0", "-1GB", "0.5", "nan", "1e400", True])
def test_bad_sizes_are_one_line_errors(text):
    with pytest.raises(ConfigError) as err:
        parse_memory(text)
    assert "\n" not in str(err.value) and "--memory-budget" in str(err.value) and "8GB" in str(err.value)


def test_default_budget_is_a_share_of_what_is_free():
    budget = default_budget("cpu")
    assert memory_in_use() < budget.bytes and "available" in budget.origin
    assert resolve_budget("3GiB").bytes == 3 * GiB and resolve_budget(budget) is budget


def test_micro_batch_is_the_largest_that_fits_balanced():
    cfg = get_preset("2d-64")  # B = 24
    plan = plan_memory(cfg, (64, 64), budget=MemoryBudget(8 * 10**9, "test"), in_use=300 * 2**20, small_parts=False)
    assert 1 <= plan.micro_batch < 24 and plan.parts * plan.micro_batch >= 24
    assert (plan.parts - 1) * plan.micro_batch < 24  # no empty part
    assert plan.meta_peak <= 8 * 10**9 and plan.fit_peak <= 8 * 10**9
    bigger = plan_memory(cfg, (64, 64), budget=MemoryBudget(16 * 10**9, "test"), in_use=300 * 2**20,
                         small_parts=False)
    assert bigger.micro_batch > plan.micro_batch
    whole = plan_memory(cfg, (64, 64), budget=MemoryBudget(2**50, "test"), in_use=0, small_parts=False)
    assert whole.micro_batch == 24 and whole.parts == 1
    report(f"planner, paper 2D config at B=24: budget 8 GB → micro-batch {plan.micro_batch} "
           f"(estimated peak {format_bytes(plan.meta_peak)}), 16 GB → {bigger.micro_batch}")


def test_on_the_cpu_parts_stay_small_enough_for_the_heap(monkeypatch):
    """[m, N, L] float32 ≤ 16 MiB: the paper 2D config (N·L·4 = 4 MiB per signal) runs in parts of 4 on the CPU
    whatever the budget; batches below 32 MiB (glibc's heap serves them) and signals above 16 MiB are not
    split; CUDA and MEDNF_MALLOC=keep are not capped."""
    from mednf.engine import planner

    huge = MemoryBudget(2**50, "test")
    cpu = plan_memory(get_preset("2d-64"), (64, 64), budget=huge, in_use=0)  # B = 24
    assert (cpu.micro_batch, cpu.parts, cpu.heap_capped) == (4, 6, True)
    assert cpu.micro_batch * 64 * 64 * 256 * 4 <= planner.HEAP_TENSOR_BYTES
    assert "small parts" in cpu.describe() and cpu.to_dict()["heap_capped"] is True
    eight = plan_memory(get_preset("2d-64").replace(meta={"batch_size": 8}), (64, 64), budget=huge, in_use=0)
    assert (eight.micro_batch, eight.parts) == (4, 2)
    small = plan_memory(get_preset("cpu-small"), (28, 28), budget=huge, in_use=0)
    assert small.parts == 1 and not small.heap_capped
    small_3d = plan_memory(get_preset("cpu-small-3d"), (28, 28, 28), budget=huge, in_use=0)  # B4: 22 MiB in all
    assert small_3d.parts == 1 and not small_3d.heap_capped
    big_3d = plan_memory(get_preset("3d-32"), (28, 28, 28), budget=huge, in_use=0)  # 21 MiB per signal
    assert big_3d.parts == 1 and not big_3d.heap_capped  # parts of one would not get below the cap
    tight = plan_memory(get_preset("2d-64"), (64, 64), budget=MemoryBudget(4 * 10**9, "test"), in_use=300 * 2**20)
    assert tight.micro_batch < 4 and not tight.heap_capped  # the budget binds first
    monkeypatch.setattr(planner, "keeps_memory", lambda: True)
    kept = plan_memory(get_preset("2d-64"), (64, 64), budget=huge, in_use=0)
    assert kept.parts == 1 and not kept.heap_capped


def test_refusal_names_estimate_budget_and_fix():
    with pytest.raises(ConfigError) as err:
        plan_memory(get_preset("2d-64"), (64, 64), budget=MemoryBudget(GiB, "--memory-budget 1GiB"), in_use=300 * 2**20)
    line = str(err.value)
    assert "\n" not in line
    for part in ("1.0 GiB (--memory-budget 1GiB)", "one meta-learning signal", "estimates a peak of", "per signal",
                 "smaller preset", "--batch-size", "--gpu", "--memory-budget"):
        assert part in line, (part, line)


# A fresh interpreter plans like a build (in_use = its own resident set), runs two planned meta-iterations,
# then fits as a build does (batch planned beside what meta-learning left), and reports its peak resident
# set (VmHWM) beside the budget.
_PROBE = textwrap.dedent("""
    import dataclasses, json, sys, torch
    from mednf.engine.config import EngineConfig
    from mednf.engine.fit import fit_latents
    from mednf.engine.meta import MetaLearner
    from mednf.engine.memory import MemoryBudget, peak_memory
    from mednf.engine.planner import fit_batch_now, plan_memory
    spec = json.loads(sys.argv[1])
    cfg = EngineConfig().replace(field=spec["field"], meta=spec["meta"], fit={"steps": 2, "grad_rescale": True})
    spatial = tuple(spec["spatial"])
    gen = torch.Generator().manual_seed(0)
    signals = torch.rand(cfg.meta.batch_size, 1, *spatial, generator=gen)
    plan = plan_memory(cfg, spatial, budget=MemoryBudget(spec["budget"], "test"), rows_out=16)
    learner = MetaLearner(cfg.field, cfg.meta, seed=0)
    for _ in range(2):
        learner.step(signals, micro_batch=plan.micro_batch)
    meta_peak = peak_memory()
    fit = dataclasses.replace(cfg.fit, batch_size=fit_batch_now(plan, cfg, spatial, "cpu"))
    fit_latents(learner.detached_params(), torch.rand(16, 1, *spatial, generator=gen), cfg.field, fit, with_ssim=True)
    print(json.dumps({"plan": plan.to_dict(), "meta_peak": meta_peak, "peak": peak_memory(),
                      "fit_batch": fit.batch_size}))
""")

_MEASURED = [
    # K6 L64 P128, 64², G3 γ .25, B12 (the cpu-small network at 64²)
    ({"field": {"num_layers": 6, "hidden_dim": 64, "latent_dim": 128, "omega_first": 30.0, "omega_last": None},
      "meta": {"inner_steps": 3, "context_ratio": 0.25, "batch_size": 12}, "spatial": [64, 64]}, 600),
    # a 3D field: K5 L96 P512 on 16³, G2 γ .5, B6
    ({"field": {"in_dims": 3, "num_layers": 5, "hidden_dim": 96, "latent_dim": 512},
      "meta": {"inner_steps": 2, "context_ratio": 0.5, "batch_size": 6}, "spatial": [16, 16, 16]}, 600),
]


@pytest.mark.parametrize(("spec", "budget_mib"), _MEASURED)
def test_planned_run_stays_inside_its_budget(spec, budget_mib):
    budget = budget_mib * 2**20
    proc = subprocess.run([sys.executable, "-c", _PROBE, json.dumps({**spec, "budget": budget})],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    plan = result["plan"]
    report(f"planned run {spec['field']} B{spec['meta']['batch_size']}: budget {budget_mib} MiB, micro-batch "
           f"{plan['micro_batch']}, fit batch {result['fit_batch']}; estimated meta peak "
           f"{plan['estimated_meta_peak_bytes'] / 2**20:.0f} MiB, measured {result['meta_peak'] / 2**20:.0f} MiB; "
           f"peak with the fit {result['peak'] / 2**20:.0f} MiB")
    assert 1 <= plan["micro_batch"] < spec["meta"]["batch_size"]  # the budget really binds
    assert result["peak"] <= budget


# ---------------------------------------------------------------------------------------------- CLI


@pytest.mark.parametrize("value", ["lots", "0", "-1GB", "1e400"])
def test_cli_refuses_bad_budgets(value, tmp_path):
    line = _error_line(CliRunner().invoke(main, ["build", "phantomnf", "--out", str(tmp_path / "x"),
                                                 f"--memory-budget={value}"]))
    assert "--memory-budget" in line and repr(value) in line
    assert not (tmp_path / "x").exists()


def test_cli_refuses_a_budget_below_one_signal(tmp_path):
    line = _error_line(CliRunner().invoke(main, ["build", "phantomnf", "--out", str(tmp_path / "x"),
                                                 "--memory-budget", "100MB"]))
    assert "is too small for one meta-learning signal" in line and "--memory-budget 100MB" in line
    assert not (tmp_path / "x").exists()  # refused before anything was made


def test_cli_refuses_unbounded_sizes_before_allocating(tmp_path):
    line = _error_line(CliRunner().invoke(main, ["build", "phantomnf", "--size", "20000",
                                                 "--out", str(tmp_path / "x")]))
    assert "too small for one meta-learning signal" in line and "20000×20000" in line
    assert not (tmp_path / "x").exists()
    from importlib import resources

    text = resources.files("mednf.builders").joinpath("phantomnf.toml").read_text()
    for value, expected in (("100000000000", "too small for one meta-learning signal"),
                            ("1e11", "latent_dim (P) = 100000000000.0 is invalid")):
        path = tmp_path / f"huge-{value}.toml"
        path.write_text(text.replace("field = { latent_dim = 256 }", f"field = {{ latent_dim = {value} }}"))
        line = _error_line(CliRunner().invoke(main, ["build", str(path), "--out", str(tmp_path / "y")]))
        assert expected in line, line
    assert not (tmp_path / "y").exists()


# ---------------------------------------------------------------------------------------------- build


def test_budget_is_recorded_and_not_part_of_the_identity(tmp_path, monkeypatch):
    """An unfinished build resumes under another budget; the manifest and build.log record budget and plan."""
    from mednf.building import trainer
    from mednf.building.pipeline import BuildOptions, build

    out = tmp_path / "PhantomNF"

    def interrupted(self, *, progress=True):
        raise KeyboardInterrupt  # after the identity was stored: an unfinished build

    with monkeypatch.context() as patch:
        patch.setattr(trainer.MetaTrainer, "run", interrupted)
        with pytest.raises(KeyboardInterrupt):
            build("phantomnf", BuildOptions(out=out, memory_budget="6GB", **TINY))
    assert (out / ".partial" / "build.json").is_file()
    build("phantomnf", BuildOptions(out=out, memory_budget="5GiB", **TINY))  # not "other settings"
    manifest = json.loads((out / "mednf.json").read_text())
    memory = manifest["meta_training"]["memory"]
    assert memory["budget_bytes"] == 5 * GiB and memory["budget"] == "--memory-budget 5GiB"
    assert memory["micro_batch"] == 8 and memory["local_batch"] == 8  # the tiny preset fits whole
    assert memory["measured_peak_bytes"] <= memory["budget_bytes"]
    assert manifest["fit"]["batch_size"] == memory["fit_batch"]
    assert "micro_batch" not in json.dumps(manifest["engine"]) and "budget_bytes" not in json.dumps(manifest["engine"])
    log = (out / "build.log").read_text()
    assert "memory: budget 5.0 GiB (--memory-budget 5GiB)" in log and "micro-batch" in log
    # a complete build with another budget is still "already complete"
    assert build("phantomnf", BuildOptions(out=out, memory_budget="7GB", **TINY)) == out

