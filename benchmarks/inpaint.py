"""Inpainting and 2× super-resolution with a MedNF space against classical interpolation, on real images.

For each dataset folder (built by ``mednf build``) the first ``--images`` test images are read back from
their MedMNIST source file, pixels are hidden by a mask, and every method fills them in:

- ``mednf``: :func:`mednf.inpaint` (fit the latent to the observed pixels, decode on the full grid);
- ``nearest`` / ``linear``: :func:`scipy.interpolate.griddata` (linear = piecewise linear on the Delaunay
  triangulation of the observed pixels, nearest where it is undefined outside their hull);
- ``biharmonic``: :func:`skimage.restoration.inpaint_biharmonic`;
- for super-resolution also ``bicubic``: cubic spline upsampling of the every-other-pixel image
  (:func:`scipy.ndimage.map_coordinates`, order 3).

Masks: random 50 % / 25 % / 10 % of the pixels kept (seeded), a central square hole of half the side,
and ``sr2x`` (every other pixel of every other row kept: fitting on the half-resolution image and
decoding at full size). PSNR is measured on the **hidden pixels only**, per image, and averaged.

    python benchmarks/inpaint.py /tmp/bench_home/PneumoniaNF /tmp/bench_home/BreastNF \
        --medmnist-root ../shared/data/medmnist --images 200
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from gpu_check import cpu_model  # sibling script (benchmarks/ is not a package)


def masks(count: int, side: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Name → ``[count, side, side]`` bool (True = observed)."""
    rng = np.random.default_rng(seed)
    out = {f"random {int(k * 100)} %": rng.random((count, side, side)) < k for k in (0.5, 0.25, 0.1)}
    hole = np.ones((side, side), bool)
    a, b = side // 4, side - side // 4
    hole[a:b, a:b] = False
    out["central hole (½ side)"] = np.broadcast_to(hole, (count, side, side))
    sr = np.zeros((side, side), bool)
    sr[::2, ::2] = True
    out["sr2x"] = np.broadcast_to(sr, (count, side, side))
    return out


def griddata_fill(image: np.ndarray, mask: np.ndarray, method: str) -> np.ndarray:
    from scipy.interpolate import griddata

    rows, cols = np.nonzero(mask)
    hidden = np.nonzero(~mask)
    out = image.copy()
    filled = griddata((rows, cols), image[mask], hidden, method=method)
    if method != "nearest":
        gaps = np.isnan(filled)
        if gaps.any():
            filled[gaps] = griddata((rows, cols), image[mask], (hidden[0][gaps], hidden[1][gaps]), method="nearest")
    out[hidden] = filled
    return out


def biharmonic_fill(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    from skimage.restoration import inpaint_biharmonic

    return inpaint_biharmonic(np.where(mask, image, 0.0), ~mask)


def bicubic_upsample(image: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    small = image[::2, ::2]
    side = image.shape[0]
    r, c = np.meshgrid(np.arange(side) / 2.0, np.arange(side) / 2.0, indexing="ij")
    return map_coordinates(small, [r, c], order=3, mode="nearest")


def hidden_psnr(filled: np.ndarray, image: np.ndarray, mask: np.ndarray) -> float:
    err = (np.clip(filled, 0, 1) - image)[~mask]
    return float(-10 * np.log10(max(np.mean(err.astype(np.float64) ** 2), 1e-12)))


def run(folder: Path, medmnist_root: Path, count: int, seed: int) -> list[tuple[str, str, float, float, float]]:
    import mednf
    from mednf.sources.read import source_images

    ds = mednf.load(folder, "test")
    count = min(count, len(ds))
    images = source_images(ds.manifest, "test", ds.source_index[:count], medmnist_root)
    if images is None:
        raise SystemExit(f"the source images of {folder} are not in {medmnist_root}")
    images = images[:, 0].astype(np.float64)  # [n, S, S] gray
    full_psnr = float(np.mean(ds.psnr[:count]))
    rows = []
    for name, mask in masks(count, images.shape[-1], seed).items():
        results: dict[str, list[float]] = {}
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        recon = mednf.inpaint(images.astype(np.float32), mask, ds, progress=False).recon[:, 0]
        seconds["mednf"] = time.perf_counter() - start
        results["mednf"] = [hidden_psnr(recon[i], images[i], mask[i]) for i in range(count)]
        methods = {"nearest": lambda im, m: griddata_fill(im, m, "nearest"),
                   "linear": lambda im, m: griddata_fill(im, m, "linear"),
                   "biharmonic": biharmonic_fill}
        if name == "sr2x":
            methods["bicubic"] = lambda im, m: bicubic_upsample(im)
        for method, fill in methods.items():
            start = time.perf_counter()
            results[method] = [hidden_psnr(fill(images[i], mask[i]), images[i], mask[i]) for i in range(count)]
            seconds[method] = time.perf_counter() - start
        for method, values in results.items():
            v = np.asarray(values)
            rows.append((name, method, float(v.mean()), float(v.std() / np.sqrt(len(v))), seconds[method] / count))
        best = max(results, key=lambda k: np.mean(results[k]))
        print(f"{ds.name} {name}: best {best} " + ", ".join(f"{k} {np.mean(v):.2f}" for k, v in results.items()),
              flush=True)
    print(f"\n### {ds.name} test, first {count} images ({'×'.join(map(str, images.shape[1:]))}; full-image fit "
          f"PSNR of these latents {full_psnr:.2f} dB)\n")
    print("| mask | method | PSNR on hidden pixels (dB) | ± s.e. | ms / image |")
    print("|---|---|---:|---:|---:|")
    for name, method, mean, se, sec in rows:
        print(f"| {name} | {method} | {mean:.2f} | {se:.2f} | {sec * 1000:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("datasets", nargs="+", type=Path)
    parser.add_argument("--medmnist-root", type=Path, required=True)
    parser.add_argument("--images", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"device: {cpu_model()}; {time.strftime('%Y-%m-%d')}")
    for folder in args.datasets:
        run(folder, args.medmnist_root, args.images, args.seed)


if __name__ == "__main__":
    main()
