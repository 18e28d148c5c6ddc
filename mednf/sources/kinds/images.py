"""``[source] kind = "images"``: a folder of PNG / JPEG / TIFF files, labels and splits from a CSV.

Read with Pillow (already a dependency; it decodes every one of these formats and resizes with proper,
antialiased filters). Keys besides the shared ones of a folder (:mod:`mednf.sources.kinds.folder`: ``path``,
``csv``, ``split_ratio``):

- ``resize`` (default ``"bicubic"``): Pillow filter that brings every image to ``size × size``:
  ``"bicubic"``, ``"bilinear"``, ``"nearest"``, ``"lanczos"``, ``"area"`` (Pillow's box filter, the
  mean over each target pixel's area). Non-square images are stretched, not cropped. ``"none"``: every
  image must already be ``size × size``; a file of another size is an error.
- ``gray`` (default ``"exact"``), only for ``channels = 1``: an RGB file is accepted when its three
  channels are equal (gray saved as RGB) and refused otherwise; ``"luminance"`` converts it with
  Pillow's ITU-R 601-2 luma (L = 0.299 R + 0.587 G + 0.114 B). With ``channels = 3`` a gray file is
  repeated into three equal channels.

Pixels are taken as stored (EXIF orientation is not applied). 8-bit files give uint8 images; 16-bit ones
(Pillow modes ``I;16``/``I``) are divided by 65535 and 32-bit float ones (mode ``F``) must lie in [0, 1];
once one image is float, the whole set is float32 in [0, 1]. Transparent pixels, multi-frame files and
undecodable files are errors naming the file.
"""

from __future__ import annotations

import io
import struct
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from mednf.errors import ConfigError, SourceError
from mednf.sources.kinds.folder import FolderKind
from mednf.sources.values import get_choice

if TYPE_CHECKING:
    from mednf.sources.spec import SourceSpec

SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")
FILTERS = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR,
           "nearest": Image.Resampling.NEAREST, "lanczos": Image.Resampling.LANCZOS, "area": Image.Resampling.BOX,
           "none": None}
_DECODE_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, Image.DecompressionBombError)


def decode_image(raw: bytes, path: Path, channels: int, size: int, resize: str, gray: str) -> np.ndarray:
    """One file's bytes → ``[channels, size, size]`` uint8 (8-bit files) or float32 in [0, 1]."""
    try:
        with Image.open(io.BytesIO(raw)) as opened:
            if getattr(opened, "n_frames", 1) > 1:
                raise SourceError(f"{path} holds {opened.n_frames} frames: expected one image per file; save each "
                                  "frame as its own file")
            opened.load()
            image = _plain_mode(opened, path)
    except _DECODE_ERRORS as err:
        raise SourceError(f"{path} is not a readable image ({str(err) or type(err).__name__}); replace the file or "
                          "remove its row from the CSV") from None
    if channels == 1 and image.mode == "RGB":
        image = _to_gray(image, path, gray)
    if image.size != (size, size):
        if FILTERS[resize] is None:
            raise SourceError(f"{path} is {image.size[0]}×{image.size[1]}, expected {size}×{size} (resize = 'none'): "
                              f"resize the files to {size}×{size}, or set [source] resize = 'bicubic'")
        image = image.resize((size, size), resample=FILTERS[resize])
    pixels = np.asarray(image)  # [S, S] or [S, S, 3]
    if image.mode == "F":
        pixels = np.clip(pixels, 0.0, 1.0)  # bicubic / lanczos overshoot
    pixels = pixels[None] if pixels.ndim == 2 else np.moveaxis(pixels, -1, 0)  # [C, S, S]
    return np.repeat(pixels, channels, axis=0) if len(pixels) != channels else pixels


def _plain_mode(image: Image.Image, path: Path) -> Image.Image:
    """Any Pillow mode → "L" (8-bit gray), "RGB" (8-bit colour) or "F" (float gray in [0, 1])."""
    mode = image.mode
    if mode in ("P", "PA"):
        image, mode = image.convert("RGBA"), "RGBA"
    if mode in ("LA", "La", "RGBA", "RGBa"):
        if np.asarray(image.getchannel("A")).min() < 255:
            raise SourceError(f"{path} has transparent pixels: expected opaque images; flatten it onto a background")
        return image.convert("L" if mode.startswith("L") else "RGB")
    if mode == "1":
        return image.convert("L")
    if mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image).astype(np.float64)
        if values.min() < 0 or values.max() > 65535:
            raise SourceError(f"{path} has integer pixels in [{values.min():g}, {values.max():g}]: expected 8- or "
                              "16-bit values; save it as 8- or 16-bit")
        return Image.fromarray((values / 65535.0).astype(np.float32))
    if mode == "F":
        values = np.asarray(image)
        if not np.isfinite(values).all():
            raise SourceError(f"{path} has {int((~np.isfinite(values)).sum())} NaN/inf pixels; clean the file")
        if values.min() < 0 or values.max() > 1:
            raise SourceError(f"{path} has float pixels in [{values.min():g}, {values.max():g}]: expected [0, 1]; "
                              "rescale it or save it as 8/16-bit")
        return image
    if mode not in ("L", "RGB"):
        raise SourceError(f"{path} has Pillow mode {mode!r}: expected gray or RGB (8/16-bit or float); convert it")
    return image


def _to_gray(image: Image.Image, path: Path, gray: str) -> Image.Image:
    """An RGB image for ``channels = 1``, by the ``gray`` rule (see the module docstring)."""
    if gray == "luminance":
        return image.convert("L")
    rgb = np.asarray(image)
    if (rgb[..., 0] == rgb[..., 1]).all() and (rgb[..., 0] == rgb[..., 2]).all():
        return image.getchannel("R")
    raise SourceError(f"{path} is a colour RGB image but [source] channels = 1: set channels = 3, set gray = "
                      "'luminance' to convert it, or save it as grayscale")


class ImagesKind(FolderKind):
    """A folder of 2D images (see the module docstring)."""

    name = "images"
    what = "images"
    suffixes = SUFFIXES
    source_keys = ("path", "csv", "resize", "gray", "split_ratio")

    def format_options(self, table: dict[str, Any], where: str) -> dict[str, Any]:
        """``resize`` and ``gray`` (see the module docstring)."""
        return {"resize": get_choice(table, "resize", where, tuple(FILTERS), "bicubic"),
                "gray": get_choice(table, "gray", where, ("exact", "luminance"), "exact")}

    def check_source(self, source: SourceSpec, where: str) -> None:
        """2D images, gray or RGB."""
        if source.dims != 2 or source.channels not in (1, 3):
            raise ConfigError(f"{where}: channels = {source.channels}, dims = {source.dims} is invalid for kind "
                              "'images': expected dims = 2 and channels 1 (gray) or 3 (RGB)")

    def decode(self, raw: bytes, path: Path, source: SourceSpec) -> np.ndarray:
        """One image file → ``[C, S, S]`` (:func:`decode_image`)."""
        opts = source.options
        return decode_image(raw, path, source.channels, source.size, opts["resize"], opts["gray"])  # [C, S, S]

    def rules(self, source: SourceSpec) -> dict[str, Any]:
        """The resize filter, the gray rule, the size and the channels."""
        return {"resize": source.options["resize"], "gray": source.options["gray"], "size": source.size,
                "channels": source.channels}
