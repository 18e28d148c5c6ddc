"""Score a PhantomNF built with generator version 2 (before 2026-12-02, session 3) lesion by lesion.

Version 2 did not keep its lesions' geometry, so this replays its drawing code (mednf/sources/phantoms.py at
commit 3ab5196, the same RNG calls in the same order) to get them, and scores the ground truth and the
build's reconstructions of the test split as ``benchmarks/first_run.py`` scores version-3 builds.

Usage: python benchmarks/phantom_v2_lesions.py PATH/TO/PhantomNF
"""

from __future__ import annotations

import sys

import numpy as np

import mednf
from mednf.sources.phantom_lesions import score_lesions
from mednf.sources.phantoms import _ellipse_mask


def draw_v2(count: int, size: int, seed: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Version-2 phantoms ``[count, size, size]`` and their lesions ``[k, 3]`` (row, column, radius in px)."""
    rng = np.random.default_rng(seed)
    axis = np.linspace(-1.0, 1.0, size)
    yy, xx = np.meshgrid(axis, axis, indexing="ij")
    images = np.zeros((count, size, size))
    labels = rng.integers(0, 4, size=count)
    lesions = []
    to_px = (size - 1) / 2
    for i in range(count):
        img = images[i]
        ry, rx = rng.uniform(0.78, 0.92), rng.uniform(0.62, 0.76)
        tilt = rng.uniform(-0.2, 0.2)
        img[_ellipse_mask(yy, xx, 0, 0, ry, rx, tilt)] = 0.85
        img[_ellipse_mask(yy, xx, 0, 0, ry - 0.07, rx - 0.07, tilt)] = 0.25
        for _ in range(rng.integers(2, 5)):
            cy, cx = rng.uniform(-0.4, 0.4, size=2)
            mask = _ellipse_mask(yy, xx, cy, cx, rng.uniform(0.08, 0.3), rng.uniform(0.05, 0.2), rng.uniform(0, np.pi))
            img[mask] += rng.choice([-1.0, 1.0]) * rng.uniform(0.15, 0.3)
        spots = []
        for _ in range(labels[i]):
            cy, cx = rng.uniform(-0.45, 0.45, size=2)
            radius = rng.uniform(0.07, 0.12)
            img[_ellipse_mask(yy, xx, cy, cx, radius, radius * rng.uniform(0.7, 1.0), 0.0)] = 0.95
            spots.append(((cy + 1) * to_px, (cx + 1) * to_px, radius * to_px))
        lesions.append(np.array(spots).reshape(-1, 3))
    return np.clip(images, 0, 1), lesions


def main() -> None:
    ds = mednf.load(sys.argv[1], "test")
    truth, lesions = draw_v2(ds.manifest.builder["splits"]["test"], ds.native_size[0],
                             ds.manifest.builder["seed"] * 1000 + 2)
    truth, lesions = truth[ds.source_index], [lesions[i] for i in ds.source_index]
    recon = ds.decode().numpy()[:, 0].astype(np.float64)  # [n, H, W]
    print("ground truth", score_lesions(truth, truth, lesions).as_dict())
    print("reconstructions", score_lesions(recon, truth, lesions).as_dict())


if __name__ == "__main__":
    main()
