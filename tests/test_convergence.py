"""benchmarks/convergence.py, the time-to-quality harness: its variants resolve to valid configs, a doubled batch
takes the baseline's batches two at a time, and a short run on tiny synthetic images (and, where the file is
here, on real PneumoniaMNIST) writes the report's fields, tables and plot."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest
from conftest import load_script

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "convergence.py"
REAL = Path(os.environ.get("MEDNF_TEST_MEDMNIST", REPO.parent / "shared/data/medmnist")) / "pneumoniamnist.npz"


@pytest.fixture(scope="module")
def convergence() -> ModuleType:
    """benchmarks/convergence.py imported as a module (benchmarks/ is not a package)."""
    return load_script(SCRIPT, "mednf_convergence")


def test_every_variant_is_a_valid_config(convergence: ModuleType) -> None:
    for setup in convergence.SETUPS:
        base = convergence.variant_config(setup, "baseline", 300, 64)
        assert base["field"]["omega_first"] == 20.0 and base["field"]["omega_last"] == 400.0
        assert base["meta"]["inner_steps"] == 10 and base["meta"]["context_ratio"] == 0.25
        assert base["meta"]["meta_lr"] == 1e-4 and base["meta"]["lr_schedule"] == "cosine"
        assert base["meta"]["steps"] == 300 and not base["meta"]["first_order"]
        assert base["fit"]["steps"] == 20 and base["fit"]["grad_rescale"]
        for variant in convergence.VARIANTS:
            convergence.variant_config(setup, variant, 300, 64)  # raises on an invalid override
        doubled = convergence.variant_config(setup, "batch×2", 300, 64)
        assert doubled["meta"]["batch_size"] == 2 * base["meta"]["batch_size"]
        assert math.isclose(doubled["meta"]["meta_lr"], base["meta"]["meta_lr"] * math.sqrt(2))
        warm = convergence.variant_config(setup, "omega-lr+beta×10+warm-up", 300, 64)
        assert warm["meta"]["warmup_steps"] == 15 and warm["meta"]["omega_lr"]
        fast = convergence.variant_config(setup, "fast×4", 300, 64)
        assert fast["meta"]["steps"] == 75 and fast["meta"]["warmup_steps"] == 4  # 5 % of its own 75 iterations
    assert convergence.variant_name("batchx2") == "batch×2"


def test_a_doubled_batch_takes_the_baselines_batches_two_at_a_time() -> None:
    from mednf.building.trainer import batch_positions

    for i in range(5):  # 48 images, B 16: epochs of 3 batches, so some doubled batches span two epochs
        pair = np.concatenate([batch_positions(0, 2 * i, 16, 48), batch_positions(0, 2 * i + 1, 16, 48)])
        np.testing.assert_array_equal(batch_positions(0, i, 32, 48), pair)


def _synthetic(folder: Path) -> None:
    """A pneumoniamnist.npz of smooth 28² images (48 train, 8 val, 8 test)."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:28, 0:28] / 27.0

    def images(n: int) -> np.ndarray:
        a, b, c = rng.uniform(0.5, 3.0, (3, n, 1, 1))
        return (127.5 * (1 + np.sin(a * x + b * y + c))).astype(np.uint8)

    np.savez(folder / "pneumoniamnist.npz", train_images=images(48), val_images=images(8), test_images=images(8))


def _run(convergence: ModuleType, data: Path, out: Path, variants: str, *extra: str) -> dict:
    code = convergence.main(["--threads", "1", "--setups", "pneumonia28", "--variants", variants, "--steps", "4",
                             "--val-every", "2", "--val-samples", "4", "--test-samples", "4", "--data-dir", str(data),
                             "--json", str(out / "runs.json"), "--markdown", str(out / "tables.md"),
                             "--plot", str(out / "curves.png"), *extra])
    assert code == 0
    return json.loads((out / "runs.json").read_text(encoding="utf-8"))


def test_a_short_run_reports_every_field(convergence: ModuleType, tmp_path: Path) -> None:
    _synthetic(tmp_path)
    report = _run(convergence, tmp_path, tmp_path, "baseline,beta×3", "--fit-steps", "0,20")
    assert report["cpu"] and report["date"] and report["command"].startswith("python benchmarks/convergence.py")
    base = report["runs"]["pneumonia28/seed0/baseline"]["result"]
    other = report["runs"]["pneumonia28/seed0/beta×3"]["result"]
    for r in (base, other):
        assert r["steps_done"] == 4 and r["diverged"] is None
        assert [p["iteration"] for p in r["curve"]] == [0, 2, 4]
        assert all(math.isfinite(p["val_psnr"]) for p in r["curve"])
        assert 0 < r["curve"][1]["train_s"] <= r["curve"][2]["train_s"] == pytest.approx(r["train_s"])
        assert len(r["test_final"]["psnr"]) == len(r["test_final"]["ssim"]) == 4
        assert 0 < r["test_final"]["ssim_mean"] <= 1
        assert math.isfinite(r["mean_image_val_psnr"]) and math.isfinite(r["mean_image_test_psnr"])
    assert base["curve"][0]["val_psnr"] == other["curve"][0]["val_psnr"]  # the same θ₀ and val images
    assert base["curve"][-1]["val_psnr"] != other["curve"][-1]["val_psnr"]  # β changed something
    assert base["equal_time"]["before_budget"] and base["equal_time"]["test"] is None
    assert [row["H"] for row in base["fit_sweep"]] == [0, 20]
    assert base["fit_sweep"][1]["psnr_mean"] == base["test_final"]["psnr_mean"]
    assert "fit_sweep" not in other
    assert 1 <= other["equal_time"]["iteration"] <= 4
    rows = convergence.summarise(report["runs"], "pneumonia28", 0, ["baseline", "beta×3"])
    assert rows[0]["iters_to_target"] is not None and rows[0]["delta_equal_iters"][0] == 0.0
    tables = (tmp_path / "tables.md").read_text(encoding="utf-8")
    assert "**pneumonia28, seed 0**" in tables and "| beta×3 |" in tables and "**Verdict**" in tables
    assert (tmp_path / "curves.png").stat().st_size > 0

    against = convergence.summarise(report["runs"], "pneumonia28", 0, ["baseline", "beta×3"], reference="beta×3")
    assert [r["variant"] for r in against] == ["beta×3", "baseline"]  # every row against the reference
    assert against[1]["delta_equal_iters"][0] == pytest.approx(-rows[1]["delta_equal_iters"][0])
    assert against[0]["target_val_psnr"] == other["curve"][-1]["val_psnr"]
    assert convergence.main(["--report-only", "--json", str(tmp_path / "runs.json"), "--reference", "beta×3",
                             "--markdown", str(tmp_path / "against.md")]) == 0
    assert "target: beta×3's final val PSNR" in (tmp_path / "against.md").read_text(encoding="utf-8")

    mtime = (tmp_path / "runs.json").stat().st_mtime_ns  # a rerun keeps what is there, runs nothing
    again = _run(convergence, tmp_path, tmp_path, "baseline,beta×3", "--fit-steps", "0,20")
    assert again["runs"] == report["runs"] and (tmp_path / "runs.json").stat().st_mtime_ns == mtime


@pytest.mark.skipif(not REAL.exists(), reason=f"real PneumoniaMNIST not found at {REAL}")
def test_real_pneumonia_two_iterations(convergence: ModuleType, tmp_path: Path) -> None:
    report = _run(convergence, REAL.parent, tmp_path, "baseline", "--fit-steps", "")
    base = report["runs"]["pneumonia28/seed0/baseline"]["result"]
    assert base["steps_done"] == 4 and 15 < base["mean_image_val_psnr"] < 25
    assert len(base["test_final"]["psnr"]) == 4


def test_the_cross_cell_box_filters_the_64_images_to_28(convergence: ModuleType, tmp_path: Path) -> None:
    halves = np.zeros((2, 64, 64), np.uint8)
    halves[:, :, 32:] = 200  # left half 0, right half 200: the box filter averages the straddling column
    np.savez(tmp_path / "b.npz", train_images=halves)
    small = convergence.load_split(tmp_path / "b.npz", "train", 28)
    assert small.shape == (2, 1, 28, 28) and small.dtype == np.uint8
    assert (small[..., :14] == 0).all() and (small[..., 14:] == 200).all()  # 32 is 14 output pixels exactly
    assert convergence.load_split(tmp_path / "b.npz", "train").shape == (2, 1, 64, 64)
    assert convergence.SETUPS["breast28"]["resize"] == 28
