"""PNG grids of decoded images (Pillow): reconstructions, optionally each below its input."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _to_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """``[D, *spatial]`` in [0, 1] → ``[H, W, 3]`` uint8 (volumes: the middle slice)."""
    while image.ndim > 3:
        image = image[:, image.shape[1] // 2]
    image = np.clip(image, 0.0, 1.0)
    hwc = np.repeat(image, 3, axis=0) if image.shape[0] == 1 else image[:3]
    return (np.moveaxis(hwc, 0, -1) * 255 + 0.5).astype(np.uint8)


def save_grid(path: Path, recon: np.ndarray, inputs: np.ndarray | None = None, columns: int = 8) -> None:
    """Write ``recon`` ``[n, D, *spatial]`` as a grid; with ``inputs`` each column shows input over
    reconstruction (inputs are resized, nearest, to the reconstruction's size)."""
    from PIL import Image

    tiles = [_to_uint8_rgb(r) for r in recon]
    h, w = tiles[0].shape[:2]
    if inputs is not None:
        originals = [np.asarray(Image.fromarray(_to_uint8_rgb(x)).resize((w, h), Image.NEAREST)) for x in inputs]
    rows_per_item = 2 if inputs is not None else 1
    n = len(tiles)
    grid_rows = -(-n // columns)
    canvas = np.zeros((grid_rows * rows_per_item * (h + 2), min(n, columns) * (w + 2), 3), dtype=np.uint8)
    for k, tile in enumerate(tiles):
        r, c = divmod(k, columns)
        top = r * rows_per_item * (h + 2)
        if inputs is not None:
            canvas[top:top + h, c * (w + 2):c * (w + 2) + w] = originals[k]
            top += h + 2
        canvas[top:top + h, c * (w + 2):c * (w + 2) + w] = tile
    Image.fromarray(canvas).save(path)
