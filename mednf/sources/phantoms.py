"""Seeded procedural head phantoms in the Shepp–Logan tradition (no download needed).

Each image is a sum of ellipses: a skull, a brain, a few tissue structures and 0–3 bright "lesions";
the label is the number of lesions. Images are gray, float32 in [0, 1], shape ``[S, 1, size, size]``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mednf.sources.base import SPLITS, SplitData

if TYPE_CHECKING:
    from mednf.sources.spec import BuilderSpec

NUM_CLASSES = 4  # 0, 1, 2 or 3 lesions
GENERATOR_VERSION = 2  # bump when the drawing changes: built datasets record it (their inputs regenerate only if equal)


def _ellipse_mask(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float, angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def make_phantoms(count: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` phantoms.

    Returns:
        ``(images [count, 1, size, size] float32 in [0, 1], labels [count] int64 in 0..3)``.
    """
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float64)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    images = np.zeros((count, size, size), dtype=np.float64)
    labels = rng.integers(0, NUM_CLASSES, size=count)
    for i in range(count):
        img = images[i]
        ry, rx = rng.uniform(0.78, 0.92), rng.uniform(0.62, 0.76)
        tilt = rng.uniform(-0.2, 0.2)
        img[_ellipse_mask(yy, xx, 0.0, 0.0, ry, rx, tilt)] = 0.85  # skull
        img[_ellipse_mask(yy, xx, 0.0, 0.0, ry - 0.07, rx - 0.07, tilt)] = 0.25  # brain
        for _ in range(rng.integers(2, 5)):  # ventricles and other structures, clearly darker or brighter
            cy, cx = rng.uniform(-0.4, 0.4, size=2)
            mask = _ellipse_mask(yy, xx, cy, cx, rng.uniform(0.08, 0.3), rng.uniform(0.05, 0.2), rng.uniform(0, np.pi))
            img[mask] += rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.3)
        for _ in range(labels[i]):  # lesions: bright spots, large enough to survive a CPU-sized field
            cy, cx = rng.uniform(-0.45, 0.45, size=2)
            radius = rng.uniform(0.07, 0.12)
            img[_ellipse_mask(yy, xx, cy, cx, radius, radius * rng.uniform(0.7, 1.0), 0.0)] = 0.95
    images = np.clip(images, 0.0, 1.0).astype(np.float32)
    return images[:, None], labels.astype(np.int64)


def phantom_source(spec: BuilderSpec, splits: tuple[str, ...] = SPLITS) -> dict[str, SplitData]:
    """PhantomNF: the ``splits`` generated from the spec's seed (split i of SPLITS uses seed·1000 + i)."""
    out = {}
    for i, split in enumerate(SPLITS):
        if split not in splits:
            continue
        images, labels = make_phantoms(spec.splits[split], spec.source.size, seed=spec.seed * 1000 + i)
        out[split] = SplitData(images, labels[:, None], np.arange(len(images), dtype=np.int64))
    return out
