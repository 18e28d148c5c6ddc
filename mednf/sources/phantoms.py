"""Seeded procedural head phantoms in the Shepp–Logan tradition (no download needed).

Each image is a sum of ellipses: a skull, a brain, a few tissue structures and 0–3 bright "lesions";
the label is the number of lesions. Images are gray, float32 in [0, 1], shape ``[S, 1, size, size]``.

Lesions (generator version 3) are round-ish discs of radius 0.09–0.13 (3–4 pixels at 64²) drawn inside the
brain, clear of the skull, and at least :data:`LESION_GAP` apart edge to edge, so that each one is a
separate spot and the label can be counted in the image (version 2 let lesions touch, overlap the skull
and be 2 pixels across).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from mednf.format.splits import SPLITS
from mednf.sources.base import SplitData

if TYPE_CHECKING:
    from mednf.sources.spec import BuilderSpec

NUM_CLASSES = 4  # 0, 1, 2 or 3 lesions
GENERATOR_VERSION = 3  # bump when the drawing changes: built datasets record it (their inputs regenerate only if equal)
LESION_RADIUS = (0.09, 0.13)  # in the [-1, 1] frame
LESION_GAP = 0.15  # edge-to-edge distance between lesions, and from a lesion to the brain's edge (≈ 5 px at 64²)


def _ellipse_mask(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float,
                  angle: float) -> np.ndarray:
    c, s = np.cos(angle), np.sin(angle)
    u = (xx - cx) * c + (yy - cy) * s
    v = -(xx - cx) * s + (yy - cy) * c
    return (u / rx) ** 2 + (v / ry) ** 2 <= 1.0


def make_phantoms(count: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``count`` phantoms.

    Returns:
        ``(images [count, 1, size, size] float32 in [0, 1], labels [count] int64 in 0..3)``.
    """
    images, labels, _ = draw_phantoms(count, size, seed)
    return images, labels


def draw_phantoms(count: int, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """:func:`make_phantoms` with the lesions drawn: ``(images, labels, lesions)``, ``lesions[i]`` of shape
    ``[labels[i], 3]`` = (row, column, radius) in pixels of image i."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1.0, 1.0, size, dtype=np.float64)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    images = np.zeros((count, size, size), dtype=np.float64)
    labels = rng.integers(0, NUM_CLASSES, size=count)
    lesions = []
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
        placed = _place_lesions(rng, int(labels[i]), ry - 0.07, rx - 0.07, tilt)
        for cy, cx, radius, squash in placed:  # lesions: bright spots, large enough to survive a CPU-sized field
            img[_ellipse_mask(yy, xx, cy, cx, radius, radius * squash, 0.0)] = 0.95
        to_px = (size - 1) / 2.0
        lesions.append(np.array([((cy + 1) * to_px, (cx + 1) * to_px, radius * to_px) for cy, cx, radius, _ in placed],
                                np.float64).reshape(-1, 3))
    images = np.clip(images, 0.0, 1.0).astype(np.float32)
    return images[:, None], labels.astype(np.int64), lesions


def _place_lesions(rng: np.random.Generator, count: int, brain_ry: float, brain_rx: float,
                   tilt: float) -> list[tuple[float, float, float, float]]:
    """``count`` lesions ``(cy, cx, radius, squash)`` inside the brain ellipse, :data:`LESION_GAP` clear of its
    edge and of each other (rejection sampling; always succeeds for ≤ 3 lesions of this size)."""
    placed: list[tuple[float, float, float, float]] = []
    c, s = np.cos(tilt), np.sin(tilt)
    while len(placed) < count:
        cy, cx = rng.uniform(-0.6, 0.6, size=2)
        radius, squash = rng.uniform(*LESION_RADIUS), rng.uniform(0.8, 1.0)
        u, v = cx * c + cy * s, -cx * s + cy * c  # in the brain's frame, as _ellipse_mask
        margin = radius + LESION_GAP
        inside = (u / (brain_rx - margin)) ** 2 + (v / (brain_ry - margin)) ** 2 <= 1.0
        apart = all(np.hypot(cy - py, cx - px) >= radius + pr + LESION_GAP for py, px, pr, _ in placed)
        if inside and apart:
            placed.append((cy, cx, radius, squash))
    return placed


def phantom_source(spec: BuilderSpec, splits: tuple[str, ...] = SPLITS) -> dict[str, SplitData]:
    """PhantomNF: the ``splits`` generated from the spec's seed (split i of SPLITS uses seed·1000 + i)."""
    out = {}
    for i, split in enumerate(SPLITS):
        if split not in splits:
            continue
        images, labels = make_phantoms(spec.splits[split], spec.source.size, seed=spec.seed * 1000 + i)
        out[split] = SplitData(images, labels[:, None], np.arange(len(images), dtype=np.int64))
    return out
