"""``mednf.encode``: fit latents for new images into an existing MedNF space.

The space's θ (``model.safetensors``) and its test-time fit settings (``engine.fit`` and ``fit_seed`` of the
manifest) are used unchanged, so an image that is already in the dataset gets the latent it has there.
Images are accepted as MedMNIST stores them (``[N, H, W]`` gray, ``[N, H, W, C]`` colour) or channels-first
(``[N, C, H, W]``), uint8 (0..255) or float in [0, 1]. Another size is refused unless ``resample=True``,
which resizes with ``torch.nn.functional.interpolate`` (area when shrinking, bilinear/trilinear with
antialiasing otherwise).

``mask=`` fits each image to its observed pixels only (``[N, *spatial]`` or one ``[*spatial]`` for all,
True/1 = observed); decoding the latents on the full grid then fills the rest (:mod:`mednf.tasks.inpaint`).
:func:`encode_points` fits signals given as values at arbitrary coordinates (irregular sampling).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mednf.dataset import MedNFDataset
from mednf.engine.fit import as_float_signals, fit_latents, fit_points
from mednf.errors import EncodeError
from mednf.format.manifest import Manifest
from mednf.loading import find_dataset, load

Space = str | Path | MedNFDataset  # a MedNF space: a dataset's name, its folder or the loaded dataset


@dataclass
class EncodeResult:
    """Latents ``[N, P]`` float32 fitted in a space, with each signal's PSNR and SSIM ``[N]``."""

    latents: np.ndarray  # [N, P] float32
    psnr: np.ndarray  # [N] dB of the clamped reconstruction
    ssim: np.ndarray  # [N] (NaN where undefined)
    space: str  # name of the MedNF space


def numeric_tensor(value: Any, what: str) -> Tensor:
    """``value`` (an array, a tensor or nested lists) as a tensor of numbers, else a one-line EncodeError naming
    ``what``: strings, objects and ragged lists are refused here, before torch turns them into a TypeError."""
    if isinstance(value, Tensor):
        return value
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as err:  # ragged nested lists
        raise EncodeError(f"{what} cannot be read as an array ({err}): expected a numeric array of one "
                          "shape") from None
    if array.dtype.kind not in "biuf":
        raise EncodeError(f"the dtype {array.dtype} of {what} is not numeric: expected an array of bool, "
                          "integers or floats; convert it")
    return torch.as_tensor(array)


def _channels_first(images: np.ndarray | Tensor, channels: int, dims: int) -> Tensor:
    """``[N, *spatial]`` / ``[N, *spatial, D]`` / ``[N, D, *spatial]`` → ``[N, D, *spatial]`` (a view)."""
    x = numeric_tensor(images, "images")
    if x.dtype not in (torch.uint8, torch.float16, torch.float32, torch.float64):
        raise EncodeError(f"images have dtype {x.dtype}: expected uint8 (0..255) or float in [0, 1]; convert them")
    if x.dim() == dims + 1 and channels == 1:
        if x.shape[-1] in (3, 4) and x.shape[-1] != x.shape[-2]:  # [H, W, 3]: one colour image, not H gray rows
            raise EncodeError(f"images of shape {tuple(x.shape)} look like one colour image ({x.shape[-1]} channels "
                              f"last), the space is gray: convert to gray and pass [N, {', '.join(['S'] * dims)}]")
        return x.unsqueeze(1)
    if x.dim() == dims + 2:
        if x.shape[1] == channels:
            return x
        if x.shape[-1] == channels:
            return x.movedim(-1, 1)
    layouts = f"[N, {', '.join(['S'] * dims)}]" if channels == 1 else ""
    raise EncodeError(f"images of shape {tuple(x.shape)} do not fit a {dims}D space with {channels} channel(s): "
                      f"expected {layouts + ' or ' if layouts else ''}[N, {', '.join(['S'] * dims)}, {channels}] or "
                      f"[N, {channels}, {', '.join(['S'] * dims)}]")


def _resize(x: Tensor, spatial: tuple[int, ...]) -> Tensor:
    import torch.nn.functional as F

    x = x.to(torch.float32)
    if all(s <= t for s, t in zip(spatial, x.shape[2:])):
        return F.interpolate(x, size=spatial, mode="area")
    mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[len(spatial)]
    return F.interpolate(x, size=spatial, mode=mode, align_corners=False, antialias=len(spatial) == 2).clamp(0, 1)


def open_space(space: Space, root: str | Path | None = None) -> MedNFDataset:
    """A loaded dataset of the MedNF ``space`` (a name, a dataset folder or a loaded dataset)."""
    return space if isinstance(space, MedNFDataset) else load(space, split=next(iter(_splits(space, root))), root=root)


def encode(images: np.ndarray | Tensor, space: Space, *, mask: np.ndarray | Tensor | None = None,
           resample: bool = False, root: str | Path | None = None, device: str | torch.device | None = None,
           first_index: int = 0, progress: bool = True) -> EncodeResult:
    """Latents ``[N, P]`` for ``images`` in the MedNF ``space`` (a name, a dataset folder or a loaded dataset).

    ``mask``: ``[N, *spatial]`` (or ``[*spatial]`` for every image) bool or 0/1, True = observed. Each image
    is then fitted to its observed pixels only (values elsewhere are ignored, even NaN); PSNR is over the
    observed pixels and SSIM is NaN.
    ``first_index`` keys the fit's gradient-rescaling subsets (when the space uses them) like the row of a
    split does at build time, so re-encoding rows ``a..b`` of a split with ``first_index=a`` repeats the build.
    """
    from tqdm.auto import tqdm

    ds = open_space(space, root)
    cfg = ds.config
    native = ds.native_size
    x = _channels_first(images, cfg.field.out_dims, cfg.field.in_dims)
    if len(x) == 0:
        raise EncodeError("images is empty: expected at least one image")
    spatial = tuple(x.shape[2:])
    if min(spatial) < 1:
        raise EncodeError(f"images of shape {tuple(x.shape)} (channels first) have a side of length 0: expected "
                          "images with pixels")
    seen = None if mask is None else as_mask(mask, len(x), spatial)
    if x.dtype != torch.uint8:
        values = x if seen is None else x.movedim(1, -1)[seen]  # only what is observed must be valid
        lo, hi = float(values.min()), float(values.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
            where = "observed values" if seen is not None else "float images"
            raise EncodeError(f"{where} span [{lo:g}, {hi:g}]: expected values in [0, 1]; divide uint8 data by 255")
    if spatial != native:
        if not resample:
            raise EncodeError(f"images are {'×'.join(map(str, spatial))}, the {ds.name} space is "
                              f"{'×'.join(map(str, native))}; resize them, or pass resample=True (--resample)")
        if seen is not None:
            raise EncodeError("resample=True cannot be combined with a mask: resize images and mask to "
                              f"{'×'.join(map(str, native))} first, or fit irregular points with encode_points")
        x = _resize(as_float_signals(x), native)
    device = torch.device(device or "cpu")
    with tqdm(total=len(x), desc=f"encode into {ds.name}", unit="img", disable=not progress) as bar:
        result = fit_latents(ds.theta(device), x, cfg.field, cfg.fit, device=device,
                             seed=ds.manifest.fit_seed, first_index=first_index, with_ssim=True, mask=seen,
                             on_batch=lambda n, _t: bar.update(n - bar.n))
    return EncodeResult(result.latents.numpy(), result.psnr.numpy(), result.ssim.numpy(), ds.name)


def encode_points(coords: np.ndarray | Tensor, values: np.ndarray | Tensor, space: Space, *,
                  mask: np.ndarray | Tensor | None = None, root: str | Path | None = None,
                  device: str | torch.device | None = None, first_index: int = 0,
                  progress: bool = True) -> EncodeResult:
    """Latents ``[N, P]`` for signals known at arbitrary points, in the MedNF ``space``.

    Args:
        coords: ``[N, M, C]`` (or ``[M, C]`` shared) in [-1, 1], C = the space's dimensions, ordered like
            the grid's axes (row, column[, depth]); the corner pixels of the native grid are at ±1.
        values: ``[N, M, D]`` in [0, 1] (float) or 0..255 (uint8), D = the space's channels.
        space: a dataset's name, its folder or the loaded dataset.
        mask: ``[N, M]`` bool or 0/1, False at padding when signals have fewer than M points.
        root: where a name is looked up (default ``$MEDNF_HOME``).
        device: where the fit runs (default CPU).
        first_index: keys the gradient-rescaling subsets, as for :func:`encode`.
        progress: show a progress bar.

    Returns:
        :class:`EncodeResult` (PSNR over each signal's points; SSIM NaN). Decode on any grid with
        :func:`mednf.engine.field.decode` or ``mednf inpaint``-style on the space's θ.
    """
    from tqdm.auto import tqdm

    ds = open_space(space, root)
    cfg = ds.config
    coords, values = numeric_tensor(coords, "coords"), numeric_tensor(values, "values")
    if values.dtype not in (torch.uint8, torch.float16, torch.float32, torch.float64):
        raise EncodeError(f"values have dtype {values.dtype}: expected uint8 (0..255) or float in [0, 1]")
    seen = None if mask is None else as_mask(mask, len(values), tuple(values.shape[1:2]))
    if values.dtype != torch.uint8 and values.numel():
        real = values if seen is None else values[seen]
        lo, hi = float(real.min()), float(real.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
            raise EncodeError(f"values span [{lo:g}, {hi:g}]: expected values in [0, 1]; divide uint8 data by 255")
    if len(values) == 0 or values.dim() < 2 or values.shape[1] == 0:
        raise EncodeError(f"values of shape {tuple(values.shape)} hold no point: expected [N, M, D] with N, M ≥ 1")
    device = torch.device(device or "cpu")
    with tqdm(total=len(values), desc=f"encode into {ds.name}", unit="signal", disable=not progress) as bar:
        result = fit_points(ds.theta(device), coords, values, cfg.field, cfg.fit, observed=seen, device=device,
                            seed=ds.manifest.fit_seed, first_index=first_index,
                            on_batch=lambda n, _t: bar.update(n - bar.n))
    return EncodeResult(result.latents.numpy(), result.psnr.numpy(), np.full(len(values), np.nan, np.float32),
                        ds.name)


def as_mask(mask: np.ndarray | Tensor, count: int, spatial: tuple[int, ...]) -> Tensor:
    """A user's mask as ``[count, *spatial]`` bool: bool or 0/1 values, one per signal or one for all."""
    m = numeric_tensor(mask, "mask")
    if m.dtype != torch.bool:
        if m.is_floating_point() or m.is_complex() or not bool(((m == 0) | (m == 1)).all()):
            raise EncodeError(f"mask has dtype {m.dtype} with values other than 0/1: expected bool or 0/1 "
                              "(True = observed)")
        m = m != 0
    if tuple(m.shape) == spatial:
        m = m.expand(count, *spatial)
    if tuple(m.shape) != (count, *spatial):
        raise EncodeError(f"mask has shape {tuple(m.shape)}: expected {[count, *spatial]} (one per image) or "
                          f"{list(spatial)} (one for all)")
    empty = ~m.reshape(count, -1).any(dim=1)
    if bool(empty.any()):
        rows = torch.nonzero(empty).flatten()[:5].tolist()
        raise EncodeError(f"mask observes no pixel of {int(empty.sum())} image(s) (e.g. {rows}): expected at least "
                          "one True per image; drop those images")
    return m.contiguous()


def _splits(space: str | Path, root: str | Path | None) -> list[str]:
    return list(Manifest.read(find_dataset(space, root)).splits)


def read_images_npz(path: str | Path, key: str | None = None,
                    names: tuple[str, ...] = ("images", "test_images")) -> np.ndarray:
    """The array of an ``.npz``: ``key``, or the only array, or the first of ``names`` present (images:
    ``images``, then MedMNIST's ``test_images``; masks: ``mask``)."""
    path = Path(path)
    if not path.is_file():
        state = "is not a regular file" if path.exists() else "does not exist"  # a folder, a FIFO, a device
        raise EncodeError(f"{path} {state}; give an .npz with an array named {names[0]!r}")
    if not zipfile.is_zipfile(path):
        raise EncodeError(f"{path} is not an .npz archive (a .npy file?); save the images with "
                          "numpy.savez(path, images=...)")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
            if key is None:
                key = next((k for k in names if k in keys), keys[0] if len(keys) == 1 else None)
            if key is not None and key not in keys:
                raise EncodeError(f"--key {key} is not in {path}, which holds {keys}; pass one of those")
            if key is None:
                raise EncodeError(f"{path} holds {keys}: name the array {names[0]!r}, or say which with --key "
                                  f"(e.g. --key {keys[0] if keys else names[0]})")
            return data[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:  # damaged or truncated members
        raise EncodeError(f"{path} is not a readable .npz ({str(err) or type(err).__name__}); save the images "
                          "again with numpy.savez") from None
