"""The hot loop without waits gives the numbers of the plain loop it replaced.

Each shortcut (statistics read later and together, the next batch prepared ahead, uint8 uploads, epoch
permutations drawn once, results queued into host rows) is compared with the direct computation it stands
for, here on the CPU; tests/test_meta_device.py counts what the shortcuts remove on a GPU.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import mednf.building.trainer as trainer
from mednf.building.curves import read_training
from mednf.building.pipeline import BuildOptions, build
from mednf.building.trainer import BatchFeeder, batch_positions, epoch_permutation
from mednf.engine.fit import as_float_signals, fit_latents
from mednf.engine.meta import MetaLearner, read_stats
from mednf.engine.presets import get_preset
from mednf.errors import ConfigError

CPU = torch.device("cpu")


def _images(count: int = 10, size: int = 8, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 1, size, size), dtype=np.uint8)


def test_epoch_permutations_are_drawn_once_and_equal_a_fresh_draw():
    for epoch in (0, 1, 5):
        cached = epoch_permutation(3, epoch, 11)
        np.testing.assert_array_equal(cached, np.random.default_rng([3, epoch]).permutation(11))
        assert cached is epoch_permutation(3, epoch, 11) and not cached.flags.writeable


def test_the_feeder_hands_out_the_rows_of_batch_positions_ahead_or_not():
    images, mine = _images(), np.array([0, 2])  # rank 0 of 2, global batch 4: epochs cross every 2.5 iterations
    direct = [torch.from_numpy(images[batch_positions(1, it, 4, len(images))[mine]]) for it in range(6)]
    for ahead in (False, True):
        feed = BatchFeeder(images, 1, 4, mine, CPU, steps=6, ahead=ahead)
        for it in range(6):
            got = feed(it)
            assert got.dtype == torch.uint8 and torch.equal(got, direct[it])
        assert feed._next is None  # nothing prepared beyond the run's last iteration
    floats = as_float_signals(images).numpy()
    assert torch.equal(BatchFeeder(floats, 1, 4, mine, CPU, steps=6)(2), as_float_signals(direct[2]))
    floats[batch_positions(1, 0, 4, len(images))[0]] = np.nan
    with pytest.raises(ConfigError, match="images of meta-iteration 1 contain 64 NaN/Inf"):
        BatchFeeder(floats, 1, 4, mine, CPU, steps=6)(0)


def _tiny_learner(seed: int = 0) -> MetaLearner:
    cfg = get_preset("tiny")
    return MetaLearner(cfg.field, dataclasses.replace(cfg.meta, batch_size=4), seed=seed)


def test_uint8_batches_and_late_statistics_give_the_float_loop_s_numbers():
    images = torch.from_numpy(_images(4))
    as_bytes, as_floats = _tiny_learner(), _tiny_learner()
    late = [as_bytes.step(images) for _ in range(3)]
    early = [dict(as_floats.step(as_float_signals(images))) for _ in range(3)]
    assert read_stats(late) == early  # every statistic, bit for bit, read in one transfer
    for name, value in as_bytes.detached_params().items():
        assert torch.equal(value, as_floats.detached_params()[name])
    one = as_bytes.step(images)
    assert one._read is None and one["psnr"] == one.tensor.tolist()[1] and one["lr"] == one.lr  # read on first look


def test_a_fit_of_uint8_images_equals_the_fit_of_their_floats():
    cfg = get_preset("tiny")
    params = _tiny_learner().detached_params()
    images = _images(5)
    fit = dataclasses.replace(cfg.fit, steps=3, batch_size=2)
    a = fit_latents(params, images, cfg.field, fit, seed=4)
    b = fit_latents(params, as_float_signals(images), cfg.field, fit, seed=4)
    assert torch.equal(a.latents, b.latents) and torch.equal(a.mse, b.mse)


def _train_rows(path) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k != "seconds"} for row in read_training(path)]


def test_a_build_reading_statistics_in_blocks_and_feeding_ahead_writes_the_same_bytes(tmp_path, monkeypatch):
    options = {"preset": "tiny", "size": 16, "max_samples": 16, "progress": False,
               "overrides": {"meta": {"steps": 7}}, "build_overrides": {"val_every": 5, "val_samples": 4}}
    build("phantomnf", BuildOptions(out=tmp_path / "plain", **options))
    monkeypatch.setattr(trainer, "stats_interval", lambda device: 3)  # as on a GPU: rows written in blocks
    feeder = trainer.BatchFeeder
    monkeypatch.setattr(trainer, "BatchFeeder", lambda *a, **k: feeder(*a, **k, ahead=True))
    build("phantomnf", BuildOptions(out=tmp_path / "lean", **options))
    for name in ("model.safetensors",):
        plain, lean = load_file(tmp_path / "plain" / name), load_file(tmp_path / "lean" / name)
        assert all(torch.equal(plain[k], lean[k]) for k in plain)
    assert _train_rows(tmp_path / "lean" / "training.csv") == _train_rows(tmp_path / "plain" / "training.csv")
    assert len([r for r in read_training(tmp_path / "lean" / "training.csv") if r["kind"] == "train"]) == 7
