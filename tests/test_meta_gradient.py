"""The batched second-order meta-gradient against a per-signal reference, finite differences and AdamW."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import report
from reference import OfficialStyleSIREN, per_signal_meta_gradient

from mednf.engine import field as nf
from mednf.engine.config import FieldConfig, MetaConfig
from mednf.engine.meta import MetaLearner, accumulate_meta_gradient, meta_objective, sample_contexts

SPATIAL = {1: (24,), 2: (6, 5), 3: (3, 4, 3)}


def _setup(C: int, D: int, dtype=torch.float64, *, K=4, L=16, P=8, G=3, gamma=0.5, B=3, seed=0):
    cfg = FieldConfig(in_dims=C, out_dims=D, num_layers=K, hidden_dim=L, latent_dim=P,
                      omega_first=10.0, omega_last=30.0)
    meta = MetaConfig(inner_steps=G, context_ratio=gamma, inner_lr=1e-2, batch_size=B)
    gen = torch.Generator().manual_seed(seed)
    params = nf.init_params(cfg, generator=gen, dtype=dtype)
    coords = nf.coordinate_grid(SPATIAL[C], dtype=dtype)
    targets = torch.rand(B, coords.shape[0], D, generator=gen, dtype=dtype)
    contexts = sample_contexts(meta, B, coords.shape[0], seed=seed, iteration=0, device=torch.device("cpu"))
    return cfg, meta, params, coords, targets, contexts


def _batched_grads(cfg, meta, params, coords, targets, contexts, explicit=True):
    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    out = meta_objective(theta, targets, coords, cfg, meta, contexts, explicit=explicit)
    grads = torch.autograd.grad(out.loss, list(theta.values()))
    return out.loss.detach(), dict(zip(theta, grads))


def _relative_error(a: dict, b: dict) -> float:
    num = math.sqrt(sum(float((a[k] - b[k]).pow(2).sum()) for k in b))
    den = math.sqrt(sum(float(b[k].pow(2).sum()) for k in b))
    return num / den


@pytest.mark.parametrize("C", [1, 2, 3])
@pytest.mark.parametrize("D", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("explicit", [True, False], ids=["explicit", "double-backward"])
def test_batched_meta_gradient_equals_per_signal_reference(C, D, dtype, explicit):
    cfg, meta, params, coords, targets, contexts = _setup(C, D, dtype)
    assert all(c is not None and c.shape[1] < coords.shape[0] for c in contexts)  # γ < 1 really subsamples
    assert not torch.equal(contexts[0][0], contexts[0][1])  # each signal its own context
    loss, grads = _batched_grads(cfg, meta, params, coords, targets, contexts, explicit)
    model = OfficialStyleSIREN.from_params(params, cfg)
    ref_loss = per_signal_meta_gradient(model, coords, targets, contexts, inner_lr=meta.inner_lr,
                                        latent_dim=cfg.latent_dim)
    ref = model.grads_as_params(cfg)
    err = _relative_error(grads, ref)
    report(f"batched ({'explicit' if explicit else 'double backward'}) vs per-signal meta-gradient, C={C} D={D} "
           f"{dtype}: relative error {err:.2e}")
    assert err <= 1e-5
    assert torch.allclose(loss, ref_loss, rtol=1e-5)


def test_second_order_terms_are_present():
    cfg, meta, params, coords, targets, contexts = _setup(2, 1)
    _, second = _batched_grads(cfg, meta, params, coords, targets, contexts)
    first_meta = MetaConfig(inner_steps=meta.inner_steps, context_ratio=meta.context_ratio, first_order=True)
    _, first = _batched_grads(cfg, first_meta, params, coords, targets, contexts)
    diff = _relative_error(first, second)
    report(f"relative difference first- vs second-order meta-gradient: {diff:.3e}")
    assert diff > 1e-3
    # the first-order switch matches the reference's first-order variant
    model = OfficialStyleSIREN.from_params(params, cfg)
    per_signal_meta_gradient(model, coords, targets, contexts, inner_lr=meta.inner_lr,
                             latent_dim=cfg.latent_dim, first_order=True)
    assert _relative_error(first, model.grads_as_params(cfg)) <= 1e-8


def test_meta_gradient_matches_finite_differences():
    cfg, meta, params, coords, targets, contexts = _setup(1, 1, K=3, L=4, P=3, G=2, B=2)
    _, grads = _batched_grads(cfg, meta, params, coords, targets, contexts)
    gen = torch.Generator().manual_seed(1)
    direction = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params.items()}

    def loss_at(t: float) -> float:
        moved = {k: params[k] + t * direction[k] for k in params}
        return float(meta_objective(moved, targets, coords, cfg, meta, contexts).loss.detach())

    eps = 1e-5
    finite = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    analytic = sum(float((grads[k] * direction[k]).sum()) for k in params)
    first_meta = MetaConfig(inner_steps=meta.inner_steps, context_ratio=meta.context_ratio, first_order=True)
    _, first = _batched_grads(cfg, first_meta, params, coords, targets, contexts)
    first_order = sum(float((first[k] * direction[k]).sum()) for k in params)
    report(f"meta-gradient directional derivative: finite {finite:.10f}  second-order {analytic:.10f}  "
           f"first-order {first_order:.10f}")
    assert abs(finite - analytic) <= 1e-6 * max(1.0, abs(finite))
    assert abs(finite - first_order) > 1e3 * abs(finite - analytic)


def test_meta_step_is_clipped_adamw_with_cosine_schedule():
    cfg, _, params, coords, targets, _ = _setup(2, 1, dtype=torch.float32, B=2)
    meta = MetaConfig(inner_steps=2, context_ratio=0.5, meta_lr=1e-2, steps=4, weight_decay=0.05)
    learner = MetaLearner(cfg, meta, params=params, seed=3)
    signals = nf.from_points(targets, SPATIAL[2])
    # reference: same meta-gradient, clipped by hand, one torch AdamW step at the scheduled lr
    contexts = sample_contexts(meta, 2, coords.shape[0], seed=3, iteration=0, device=torch.device("cpu"))
    _, grads = _batched_grads(cfg, meta, params, coords, targets, contexts)
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads.values()))
    scale = min(1.0, 1.0 / (norm + 1e-6))
    ref = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.AdamW(list(ref.values()), lr=1e-2, weight_decay=0.05)
    for k, v in ref.items():
        v.grad = grads[k] * scale
    opt.step()
    stats = learner.step(signals)
    assert stats["grad_norm"] == pytest.approx(norm, rel=1e-5)
    for k in params:
        torch.testing.assert_close(learner.params[k].detach(), ref[k].detach(), rtol=1e-5, atol=1e-7)
    lrs = [stats["lr"]] + [learner.step(signals)["lr"] for _ in range(3)]
    expected = [1e-2 * 0.5 * (1 + math.cos(math.pi * i / 4)) for i in range(4)]
    assert lrs == pytest.approx(expected)


# ---------------------------------------------------------------------------------------------- micro-batches


@pytest.mark.parametrize("D", [1, 3])
@pytest.mark.parametrize("shard", [None, (1, 2)])  # one process, or rank 1 of 2 (positions 1::2 of 10 signals)
def test_micro_batched_meta_gradient_equals_per_signal_reference(D, shard):
    """B = 5 signals in micro-batches of 2 + 2 + 1 (γ < 1, G = 3, float64) against the slow reference on the
    whole batch, with the contexts a whole-batch call draws."""
    cfg, meta, params, coords, targets, _ = _setup(2, D, K=4, L=16, P=8, G=3, gamma=0.5, B=5, seed=2)
    iteration = 3
    if shard is None:
        positions, global_batch = None, None
        full = sample_contexts(meta, 5, coords.shape[0], seed=7, iteration=iteration, device=torch.device("cpu"))
    else:
        rank, world = shard
        positions, global_batch = torch.arange(rank, 5 * world, world), 5 * world
        everyone = sample_contexts(meta, 5 * world, coords.shape[0], seed=7, iteration=iteration,
                                   device=torch.device("cpu"))
        full = [c[rank::world] for c in everyone]  # what the whole global batch draws for this rank's signals
    # the part [2, 4) draws exactly the whole batch's subsets of its signals
    part = sample_contexts(meta, 2, coords.shape[0], seed=7, iteration=iteration, device=torch.device("cpu"),
                           positions=(torch.arange(5) if positions is None else positions)[2:4],
                           global_batch=global_batch or 5)
    assert all(torch.equal(p, f[2:4]) for p, f in zip(part, full))

    theta = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    out = accumulate_meta_gradient(theta, targets, coords, cfg, meta, seed=7, iteration=iteration,
                                   positions=positions, global_batch=global_batch, micro_batch=2)
    grads = {k: v.grad for k, v in theta.items()}
    model = OfficialStyleSIREN.from_params(params, cfg)
    ref_loss = per_signal_meta_gradient(model, coords, targets, full, inner_lr=meta.inner_lr, latent_dim=cfg.latent_dim)
    ref = model.grads_as_params(cfg)
    scale = 1.0 if global_batch is None else 5 / global_batch  # the reference is a mean over its 5 signals
    ref = {k: v * scale for k, v in ref.items()}
    err = _relative_error(grads, ref)
    report(f"micro-batched (2+2+1) vs per-signal meta-gradient, D={D} shard={shard}: relative error {err:.2e}")
    assert err <= 1e-6
    assert float(out.loss) == pytest.approx(float(ref_loss) * scale, rel=1e-10)
    assert out.outer_mse.shape == (5,) and out.latents.shape == (5, cfg.latent_dim)


def _reference_step(cfg, meta, params, coords, targets, *, seed, iteration, opt, ref):
    """One step of the slow reference: per-signal meta-gradient, clip by hand, torch AdamW."""
    contexts = sample_contexts(meta, targets.shape[0], coords.shape[0], seed=seed, iteration=iteration,
                               device=torch.device("cpu"))
    model = OfficialStyleSIREN.from_params({k: v.detach() for k, v in ref.items()}, cfg)
    per_signal_meta_gradient(model, coords, targets, contexts, inner_lr=meta.inner_lr, latent_dim=cfg.latent_dim)
    grads = model.grads_as_params(cfg)
    norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads.values()))
    scale = min(1.0, meta.grad_clip / (norm + 1e-6))
    for k, v in ref.items():
        v.grad = grads[k] * scale
    opt.step()
    return norm


def test_micro_batched_step_equals_full_batch_step():
    """Two meta-iterations (clip + AdamW + schedule) with micro-batches of 2 equal the whole-batch ones and
    the slow reference's, in float64."""
    cfg, _, params, coords, targets, _ = _setup(2, 1, K=4, L=16, P=8, B=5, seed=4)
    meta = MetaConfig(inner_steps=2, context_ratio=0.5, meta_lr=1e-2, steps=4, weight_decay=0.05, grad_clip=0.05,
                      batch_size=5)
    signals = nf.from_points(targets, SPATIAL[2])
    micro = MetaLearner(cfg, meta, params=params, seed=3)
    whole = MetaLearner(cfg, meta, params=params, seed=3)
    ref = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    opt = torch.optim.AdamW(list(ref.values()), lr=1e-2, weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda i: 0.5 * (1 + math.cos(math.pi * min(i, 4) / 4)))
    for it in range(2):
        norm = _reference_step(cfg, meta, params, coords, targets, seed=3, iteration=it, opt=opt, ref=ref)
        sched.step()
        s_micro = micro.step(signals, micro_batch=2)
        s_whole = whole.step(signals)
        assert norm > meta.grad_clip  # the clip is active
        assert s_micro["grad_norm"] == pytest.approx(norm, rel=1e-9)
        assert s_micro["loss"] == pytest.approx(s_whole["loss"], rel=1e-12)
        for k in params:
            torch.testing.assert_close(micro.params[k].detach(), ref[k].detach(), rtol=1e-9, atol=1e-12)
            torch.testing.assert_close(micro.params[k].detach(), whole.params[k].detach(), rtol=1e-10, atol=1e-13)
