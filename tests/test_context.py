"""Random context subsets: right size, distinct per signal and step, deterministic, unbiased."""

from __future__ import annotations

import torch

from mednf.engine.context import context_size, random_context, random_contexts


def test_subsets_are_valid_distinct_and_deterministic():
    ids = torch.arange(5)
    a = random_context(ids, 100, 0.25, seed=7, step=0)
    assert a.shape == (5, 25)
    for row in a:
        assert len(set(row.tolist())) == 25 and row.min() >= 0 and row.max() < 100
    assert not torch.equal(a[0], a[1])
    assert not torch.equal(a, random_context(ids, 100, 0.25, seed=7, step=1))
    assert not torch.equal(a, random_context(ids, 100, 0.25, seed=8, step=0))
    torch.testing.assert_close(a, random_context(ids, 100, 0.25, seed=7, step=0))
    # a signal's subset does not depend on which other signals share the batch
    torch.testing.assert_close(a[3:4], random_context(ids[3:4], 100, 0.25, seed=7, step=0))
    assert context_size(784, 0.25) == 196 and context_size(3, 0.1) == 1


def test_every_coordinate_is_chosen_about_equally_often():
    counts = torch.zeros(64)
    draws = random_context(torch.arange(4000), 64, 0.25, seed=0, step=3)
    counts.index_add_(0, draws.flatten(), torch.ones(draws.numel()))
    expected = 4000 * 16 / 64
    assert (counts - expected).abs().max() < 5 * expected ** 0.5  # within 5 σ of a fair draw


def _mix32(x: int) -> int:
    """The 32-bit finaliser of mednf.engine.context, on Python integers."""
    for _ in range(2):
        x = ((x ^ (x >> 16)) * 0x45D9F3B) & 0xFFFFFFFF
    return x ^ (x >> 16)


def _reference_subset(signal: int, num_points: int, ratio: float, seed: int, step: int) -> list[int]:
    """One signal's subset from the hash written out point by point: the n smallest keys, ties by index."""
    h = _mix32(_mix32(_mix32(seed) ^ signal) ^ step)
    keys = [_mix32((h + p * 0x9E3779B1) & 0xFFFFFFFF) for p in range(num_points)]
    return sorted(range(num_points), key=lambda p: (keys[p], p))[: context_size(num_points, ratio)]


def test_all_steps_at_once_equal_the_point_by_point_reference():
    ids = torch.tensor([0, 3, 17, 2**31 + 5])
    together = random_contexts(ids, 50, 0.3, seed=11, steps=4)  # [steps, B, n]
    assert together.shape == (4, 4, 15)
    for step in range(4):
        torch.testing.assert_close(together[step], random_context(ids, 50, 0.3, seed=11, step=step), rtol=0, atol=0)
        for row, signal in enumerate(ids.tolist()):
            assert together[step, row].tolist() == _reference_subset(signal, 50, 0.3, 11, step)
