"""``mednf.inpaint``: fill the unobserved pixels of images from a MedNF space.

Each image is fitted to its observed pixels only (:func:`mednf.tasks.encode.encode` with a mask) and its
latent is decoded on the full grid, at the space's resolution or at any ``size`` (a finer grid gives
super-resolution from the same fit). The observed pixels are not copied back: ``recon`` is the field
everywhere, so a user can compare it with what was observed.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mednf.dataset import check_fits
from mednf.engine.config import FieldConfig
from mednf.engine.field import decode
from mednf.errors import EncodeError
from mednf.tasks.encode import Space, encode, open_space


@dataclass
class InpaintResult:
    """Latents ``[N, P]`` fitted to the observed pixels, the field decoded on the full grid ``[N, D, *size]``
    and the PSNR ``[N]`` on the observed pixels."""

    latents: np.ndarray  # [N, P] float32
    recon: np.ndarray  # [N, D, *size] float32 in [0, 1]: the fitted field on the full grid
    psnr_observed: np.ndarray  # [N] dB on the observed pixels
    space: str


def decode_latents(theta: dict[str, Tensor], latents: Tensor, cfg: FieldConfig, spatial: Sequence[int], *,
                   batch_size: int = 64) -> Tensor:
    """Latents ``[N, P]`` (any source, not only a dataset's rows) → signals ``[N, D, *spatial]`` in [0, 1], in
    batches on the device of ``theta``; returns a CPU tensor."""
    device = next(iter(theta.values())).device
    parts = [decode(theta, latents[i:i + batch_size].to(device), cfg, spatial).cpu()
             for i in range(0, len(latents), batch_size)]
    return torch.cat(parts) if parts else torch.empty(0, cfg.out_dims, *spatial)


def inpaint(images: np.ndarray | Tensor, mask: np.ndarray | Tensor, space: Space, *,
            size: int | Sequence[int] | None = None, root: str | Path | None = None,
            device: str | torch.device | None = None, progress: bool = True) -> InpaintResult:
    """Fit ``images`` (layouts as :func:`mednf.tasks.encode.encode`) on the pixels where ``mask`` is True and
    decode them on the full grid (``size``: side length or sizes; default the space's resolution)."""
    ds = open_space(space, root)
    spatial = ds._spatial(size)
    count = len(images)  # [N, …]: the result is N signals at ``spatial``; refused now, not after fitting
    check_fits(count * ds.config.field.out_dims * math.prod(spatial) * 4,
               f"inpainting {count} image(s) at size {'×'.join(map(str, spatial))}", "choose a smaller --size (size=)")
    encoded = encode(images, ds, mask=mask, device=device, progress=progress)
    device = torch.device(device or "cpu")
    recon = decode_latents(ds.theta(device), torch.from_numpy(encoded.latents), ds.config.field, spatial)
    if not torch.isfinite(recon).all():
        raise EncodeError("the fitted field is not finite on the grid; check the space's fit settings")
    return InpaintResult(encoded.latents, recon.numpy(), encoded.psnr, ds.name)
