"""Parity with the official code: issue #2's anchor table, our side, on real MedMNIST files.

For each row: mednf's seconds per meta-iteration timed interleaved with the official-style
implementation (benchmarks/official_style.py) in the same process (min over rounds, so both see the
same machine load), then — for rows with a step count — a full mednf training run and the held-out
test PSNR after H fit steps, next to the zero-latent and train-mean-image baselines.

    python benchmarks/parity.py                      # all rows (≈ 10 min on 2 cores)
    python benchmarks/parity.py --rows pneumonia breast-small
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from official_style import OfficialStyleModel, fit_batch, meta_step

from mednf.engine import field as nf
from mednf.engine.config import FieldConfig, FitConfig, MetaConfig
from mednf.engine.fit import fit_latents
from mednf.engine.meta import MetaLearner
from mednf.engine.metrics import mse_to_psnr, signal_mse

DATA = Path(os.environ.get("MEDNF_TEST_MEDMNIST", Path(__file__).resolve().parents[2] / "shared/data/medmnist"))


@dataclass
class Row:
    name: str
    file: str
    layers: int
    hidden: int
    latent: int
    w0: float
    increment: float
    inner_steps: int
    batch: int
    steps: int  # 0: timing only
    fit_steps: int = 10


ROWS = {
    "pneumonia": Row("PneumoniaMNIST 28², K6 L64 P128, ω 10 +5, G3 H10, γ .25, B16, 300 steps",
                     "pneumoniamnist.npz", 6, 64, 128, 10.0, 5.0, 3, 16, 300),
    "pneumonia-const30": Row("same, constant ω = 30", "pneumoniamnist.npz", 6, 64, 128, 30.0, 0.0, 3, 16, 300),
    "breast-small": Row("BreastMNIST 64², K8 L128 P512, ω 10 +5, G3 H10, γ .25, B8, 150 steps",
                        "breastmnist_64.npz", 8, 128, 512, 10.0, 5.0, 3, 8, 150),
    "breast-paper": Row("BreastMNIST 64², paper 2D config K15 L256 P2048, G10, γ .25, B8 (timing)",
                        "breastmnist_64.npz", 15, 256, 2048, 10.0, 5.0, 10, 8, 0),
}


def load(file: str) -> tuple[torch.Tensor, torch.Tensor]:
    with np.load(DATA / file) as d:
        train = torch.from_numpy(d["train_images"][:, None].astype(np.float32) / 255)
        test = torch.from_numpy(d["test_images"][:, None].astype(np.float32) / 255)
    return train, test


def configs(row: Row) -> tuple[FieldConfig, MetaConfig]:
    cfg = FieldConfig(in_dims=2, out_dims=1, num_layers=row.layers, hidden_dim=row.hidden, latent_dim=row.latent,
                      omega_first=row.w0, omega_increment=row.increment)
    meta = MetaConfig(inner_steps=row.inner_steps, context_ratio=0.25, meta_lr=3e-4, batch_size=row.batch,
                      steps=max(row.steps, 1), lr_schedule="constant")
    return cfg, meta


def time_meta(row: Row, train: torch.Tensor, rounds: int, iters: int) -> tuple[float, float]:
    """(mednf, official-style) seconds per meta-iteration, min over interleaved rounds."""
    cfg, meta = configs(row)
    learner = MetaLearner(cfg, meta, seed=0)
    torch.manual_seed(0)
    model = OfficialStyleModel(2, 1, row.hidden, row.layers, row.latent, row.w0, row.increment)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    spatial = tuple(train.shape[2:])
    grid = nf.coordinate_grid(spatial)
    batch = train[: row.batch]
    targets = nf.to_points(batch)
    learner.step(batch)
    meta_step(model, optimizer, grid, targets, row.latent, row.inner_steps, 1e-2, 0.25)
    ours, theirs = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(iters):
            learner.step(batch)
        ours.append((time.perf_counter() - start) / iters)
        start = time.perf_counter()
        for _ in range(iters):
            meta_step(model, optimizer, grid, targets, row.latent, row.inner_steps, 1e-2, 0.25)
        theirs.append((time.perf_counter() - start) / iters)
    return min(ours), min(theirs)


def train_and_evaluate(row: Row, train: torch.Tensor, test: torch.Tensor) -> dict[str, float]:
    cfg, meta = configs(row)
    learner = MetaLearner(cfg, meta, seed=42)
    order = torch.Generator().manual_seed(42)
    for _ in range(row.steps):
        learner.step(train[torch.randint(0, len(train), (row.batch,), generator=order)])
    params = learner.detached_params()
    fitted = fit_latents(params, test, cfg, FitConfig(steps=row.fit_steps, grad_rescale=True))
    zero = fit_latents(params, test, cfg, FitConfig(steps=0))
    mean = train.mean(dim=0, keepdim=True).expand_as(test)
    mean_psnr = mse_to_psnr(signal_mse(nf.to_points(mean), nf.to_points(test))).mean().item()
    return {"test": fitted.psnr.mean().item(), "zero": zero.psnr.mean().item(), "mean": mean_psnr}


def time_fit(train: torch.Tensor, batch: int, count: int) -> tuple[float, float]:
    """Paper 2D config, H = 20 with rescaling: (mednf at `batch`, official-style at batch 1) images/s."""
    cfg = FieldConfig(in_dims=2, out_dims=1, num_layers=15, hidden_dim=256, latent_dim=2048,
                      omega_first=10.0, omega_increment=5.0)
    params = nf.init_params(cfg, generator=torch.Generator().manual_seed(0))
    images = train[:count]
    fit = FitConfig(steps=20, grad_rescale=True, batch_size=batch)
    fit_latents(params, images[:1], cfg, FitConfig(steps=1))
    start = time.perf_counter()
    fit_latents(params, images, cfg, fit)
    ours = count / (time.perf_counter() - start)
    torch.manual_seed(0)
    model = OfficialStyleModel(2, 1, 256, 15, 2048, 10.0, 5.0)
    for p in model.parameters():
        p.requires_grad_(False)
    grid = nf.coordinate_grid(tuple(train.shape[2:]))
    start = time.perf_counter()
    official_count = 2
    for i in range(official_count):
        fit_batch(model, grid, nf.to_points(images[i:i + 1]), 2048, 20, 1e-2, 0.25)
    theirs = official_count / (time.perf_counter() - start)
    return ours, theirs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", nargs="*", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--fit-batch", type=int, default=24)
    parser.add_argument("--fit-count", type=int, default=24, help="images fitted at the paper config (0: skip)")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {time.strftime('%Y-%m-%d')}")
    print("| config | mednf s/iter | official-style s/iter (same run) | test PSNR after H | zero latent | "
          "train-mean image |")
    print("|---|---|---|---|---|---|")
    for key in args.rows:
        row = ROWS[key]
        train, test = load(row.file)
        iters = 2 if row.hidden >= 256 else 10
        rounds = 2 if row.hidden >= 256 else args.rounds
        ours, theirs = time_meta(row, train, rounds, iters)
        if row.steps:
            r = train_and_evaluate(row, train, test)
            psnr = f"{r['test']:.2f} dB | {r['zero']:.2f} | {r['mean']:.2f}"
        else:
            psnr = "— | — | —"
        print(f"| {row.name} | {ours:.3f} | {theirs:.3f} | {psnr} |", flush=True)
    if args.fit_count:
        train, _ = load("breastmnist_64.npz")
        ours, theirs = time_fit(train, args.fit_batch, args.fit_count)
        print(f"\nFit, paper 2D config 64², H=20 with gradient rescaling: mednf {ours:.2f} images/s at batch "
              f"{args.fit_batch}; official-style {theirs:.2f} images/s at batch 1 (same run)")


if __name__ == "__main__":
    main()
