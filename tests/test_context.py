"""Random context subsets: right size, distinct per signal and step, deterministic, unbiased."""

from __future__ import annotations

import torch

from mednf.engine.context import context_size, random_context


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
