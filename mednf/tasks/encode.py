"""``mednf.encode``: fit latents for new images into an existing MedNF space.

The space's θ (``model.safetensors``) and its test-time fit settings (``engine.fit`` and ``fit_seed`` of the
manifest) are used unchanged, so an image that is already in the dataset gets the latent it has there.
Images are accepted as MedMNIST stores them (``[N, H, W]`` gray, ``[N, H, W, C]`` colour) or channels-first
(``[N, C, H, W]``), uint8 (0..255) or float in [0, 1]. Another size is refused unless ``resample=True``,
which resizes with ``torch.nn.functional.interpolate`` (area when shrinking, bilinear/trilinear with
antialiasing otherwise).
"""

from __future__ import annotations

import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mednf.errors import EncodeError


@dataclass
class EncodeResult:
    latents: np.ndarray  # [N, P] float32
    psnr: np.ndarray  # [N] dB of the clamped reconstruction
    ssim: np.ndarray  # [N] (NaN where undefined)
    space: str  # name of the MedNF space


def _channels_first(images: np.ndarray | Tensor, channels: int, dims: int) -> Tensor:
    """``[N, *spatial]`` / ``[N, *spatial, D]`` / ``[N, D, *spatial]`` → ``[N, D, *spatial]`` (a view)."""
    x = torch.as_tensor(images)
    if x.dtype not in (torch.uint8, torch.float16, torch.float32, torch.float64):
        raise EncodeError(f"images have dtype {x.dtype}: expected uint8 (0..255) or float in [0, 1]; convert them")
    if x.dim() == dims + 1 and channels == 1:
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


def encode(images: np.ndarray | Tensor, space, *, resample: bool = False, root: str | Path | None = None,
           device: str | torch.device | None = None, first_index: int = 0, progress: bool = True) -> EncodeResult:
    """Latents ``[N, P]`` for ``images`` in the MedNF ``space`` (a name, a dataset folder or a loaded dataset).

    ``first_index`` keys the fit's gradient-rescaling subsets (when the space uses them) like the row of a
    split does at build time, so re-encoding rows ``a..b`` of a split with ``first_index=a`` repeats the build.
    """
    from tqdm.auto import tqdm

    from mednf.dataset import MedNFDataset
    from mednf.engine.fit import as_float_signals, fit_latents
    from mednf.loading import load

    ds = space if isinstance(space, MedNFDataset) else load(space, split=next(iter(_splits(space, root))), root=root)
    cfg = ds.config
    native = ds.native_size
    x = _channels_first(images, cfg.field.out_dims, cfg.field.in_dims)
    if len(x) == 0:
        raise EncodeError("images is empty: expected at least one image")
    if x.dtype != torch.uint8:
        lo, hi = float(x.min()), float(x.max())
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 1:
            raise EncodeError(f"float images span [{lo:g}, {hi:g}]: expected values in [0, 1]; divide uint8 data by 255")
    spatial = tuple(x.shape[2:])
    if spatial != native:
        if not resample:
            raise EncodeError(f"images are {'×'.join(map(str, spatial))}, the {ds.name} space is "
                              f"{'×'.join(map(str, native))}; resize them, or pass resample=True (--resample)")
        x = _resize(as_float_signals(x), native)
    device = torch.device(device or "cpu")
    with tqdm(total=len(x), desc=f"encode into {ds.name}", unit="img", disable=not progress) as bar:
        result = fit_latents(ds.theta(device), x, cfg.field, cfg.fit, device=device,
                             seed=ds.manifest.fit_seed, first_index=first_index, with_ssim=True,
                             on_batch=lambda n, _t: bar.update(n - bar.n))
    return EncodeResult(result.latents.numpy(), result.psnr.numpy(), result.ssim.numpy(), ds.name)


def _splits(space, root) -> list[str]:
    from mednf.format.manifest import Manifest
    from mednf.loading import find_dataset

    return list(Manifest.read(find_dataset(space, root)).splits)


def read_images_npz(path: str | Path, key: str | None = None) -> np.ndarray:
    """The image array of an ``.npz``: ``key``, or the only array, or ``images``, or MedMNIST's ``test_images``."""
    path = Path(path)
    if not path.is_file():
        raise EncodeError(f"{path} does not exist; give an .npz with an image array")
    if not zipfile.is_zipfile(path):
        raise EncodeError(f"{path} is not an .npz archive (a .npy file?); save the images with numpy.savez(path, images=...)")
    try:
        with np.load(path, allow_pickle=False) as data:
            keys = list(data.keys())
            if key is None:
                key = next((k for k in ("images", "test_images") if k in keys), keys[0] if len(keys) == 1 else None)
            if key is None or key not in keys:
                raise EncodeError(f"{path} holds {keys}: say which array with --key (e.g. --key {keys[0] if keys else 'images'})")
            return data[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:  # damaged or truncated members
        raise EncodeError(f"{path} is not a readable .npz ({str(err) or type(err).__name__}); save the images "
                          "again with numpy.savez") from None
