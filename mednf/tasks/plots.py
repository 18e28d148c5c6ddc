"""PNG grids of decoded images (Pillow): reconstructions, optionally each below its input; 1D signals as
curves (matplotlib)."""

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
    reconstruction (inputs are resized, nearest, to the reconstruction's size). 1D signals ``[n, D, L]``
    are drawn as curves, the input dashed under the reconstruction."""
    from PIL import Image

    if recon.ndim == 3:
        _save_curves(path, recon, inputs, columns)
        return

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


def _save_curves(path: Path, recon: np.ndarray, inputs: np.ndarray | None, columns: int) -> None:
    """1D signals ``[n, D, L]``: one small plot per signal (every channel), written atomically."""
    import io

    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from mednf.io.files import atomic_write_bytes

    n = len(recon)
    cols = min(n, columns)
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 1.6 * rows), dpi=100, squeeze=False, sharey=True)
    for k, ax in enumerate(axes.flat):
        if k >= n:
            ax.axis("off")
            continue
        for d in range(recon.shape[1]):
            if inputs is not None:
                ax.plot(np.linspace(0, 1, inputs.shape[-1]), inputs[k, d], "--", lw=0.8, color="gray")
            ax.plot(np.linspace(0, 1, recon.shape[-1]), recon[k, d], lw=1.0)
        ax.set_title(f"#{k}", fontsize=8)
        ax.tick_params(labelsize=6)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buffer.getvalue())
