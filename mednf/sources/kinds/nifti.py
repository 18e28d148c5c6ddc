"""``[source] kind = "nifti"``: a folder of ``.nii`` / ``.nii.gz`` volumes, labels and splits from a CSV.

Read with nibabel (the reference NIfTI-1/2 reader: header, scaling, orientation), imported only when a
volume is read so mednf works without it (``pip install "mednf[nifti]"``); resampled with
``scipy.ndimage`` (installed with scikit-learn); both through :func:`mednf.optional.optional_import`.
Every volume goes through the same steps:

1. reoriented to the closest canonical orientation (RAS+, ``nibabel.as_closest_canonical``) so the axes
   of every volume mean the same; voxel spacing is not used (each volume is stretched to a cube);
2. a 4th (and later) axis of length 1 is dropped; a real 4D volume (fMRI, DWI) is an error;
3. intensities (``get_fdata``, scaling applied; NaN/inf refused) mapped to [0, 1] by ``intensity``:
   ``"percentile"`` (default; ``percentiles = [0.5, 99.5]`` of the volume → 0 and 1, clipped),
   ``"minmax"`` (the volume's min and max), ``"window"`` (``window = [lo, hi]`` in scanner units, e.g. CT
   Hounsfield units, the same for every volume) or ``"none"`` (values must already lie in [0, 1]);
   a constant volume becomes 0;
4. resampled to ``size³`` with ``scipy.ndimage.zoom`` (``order``: spline order, default 1 = trilinear;
   ``grid_mode=True`` so voxels are areas, as in Pillow and torch's ``align_corners=False``), after a
   Gaussian prefilter of σ = (1/zoom − 1)/2 along each shrunk axis (``antialias = true``, scikit-image's
   rule) so that downsampling does not alias; then clipped to [0, 1].

Images are float32 ``[N, 1, size, size, size]``. Keys shared with the other folder kinds (``path``,
``csv``, ``split_ratio``): :mod:`mednf.sources.kinds.folder`.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from mednf.errors import ConfigError, SourceError
from mednf.optional import MissingDependencyError, optional_import
from mednf.sources.kinds.folder import FolderKind
from mednf.sources.values import get_choice, get_numbers, get_value

if TYPE_CHECKING:
    from mednf.sources.spec import SourceSpec

SUFFIXES = (".nii", ".nii.gz")
INTENSITY = ("percentile", "minmax", "window", "none")


def _library(module: str) -> ModuleType:
    """``module`` (nibabel or one of its modules, scipy.ndimage), or one SourceError line naming the extra."""
    try:
        return optional_import(module, '[source] kind = "nifti"')
    except MissingDependencyError as err:  # a source that cannot be read, as every other reading problem
        raise SourceError(str(err)) from None


def open_volume(raw: bytes, path: Path) -> Any:
    """A NIfTI-1 or NIfTI-2 image from a file's bytes (gzip-compressed or not)."""
    nib = _library("nibabel")
    image_file_error = _library("nibabel.filebasedimages").ImageFileError
    header_data_error = _library("nibabel.spatialimages").HeaderDataError
    try:
        data = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
        size_of_header = int.from_bytes(data[:4], "little"), int.from_bytes(data[:4], "big")
        klass = nib.Nifti2Image if 540 in size_of_header else nib.Nifti1Image
        return klass.from_bytes(data)
    except (OSError, EOFError, zlib.error, ValueError, TypeError, header_data_error, image_file_error) as err:
        raise SourceError(f"{path} is not a readable NIfTI volume ({str(err) or type(err).__name__}); replace the "
                          "file or remove its row from the CSV") from None


def volume_array(image: Any, path: Path) -> np.ndarray:
    """The canonically oriented 3D voxels of an image, float64 ``[X, Y, Z]`` (steps 1–2 and the checks)."""
    shape = tuple(int(s) for s in image.shape)
    if len(shape) > 3 and int(np.prod(shape[3:])) != 1:
        raise SourceError(f"{path} is a {len(shape)}D volume of shape {shape}: expected one 3D volume (a 4th axis of "
                          "length 1 is accepted); save each 3D volume as its own file, e.g. with "
                          "nibabel's image.slicer[..., t]")
    if len(shape) < 3 or min(shape[:3]) < 2:
        raise SourceError(f"{path} has shape {shape}: expected a 3D volume with every side ≥ 2")
    header_data_error = _library("nibabel.spatialimages").HeaderDataError
    try:
        voxels = _library("nibabel").as_closest_canonical(image).get_fdata(dtype=np.float64)
    except (OSError, EOFError, ValueError, header_data_error) as err:
        raise SourceError(f"{path} has unreadable voxel data ({str(err) or type(err).__name__}); replace the file")
    voxels = voxels.reshape(voxels.shape[:3])
    bad = ~np.isfinite(voxels)
    if bad.any():
        raise SourceError(f"{path} has {int(bad.sum())} NaN/inf voxels; replace them (e.g. with 0) or remove the "
                          "file's row from the CSV")
    return voxels


def normalise(voxels: np.ndarray, opts: dict[str, Any], path: Path) -> np.ndarray:
    """Intensities → [0, 1] by the ``intensity`` rule (step 3)."""
    rule = opts["intensity"]
    if rule == "none":
        lo, hi = float(voxels.min()), float(voxels.max())
        if lo < 0 or hi > 1:
            raise SourceError(f"{path} has intensities in [{lo:g}, {hi:g}], but intensity = 'none' needs [0, 1]; set "
                              "[source] intensity = 'percentile' (or 'minmax', 'window')")
        return voxels
    if rule == "percentile":
        lo, hi = (float(v) for v in np.percentile(voxels, opts["percentiles"]))
    elif rule == "minmax":
        lo, hi = float(voxels.min()), float(voxels.max())
    else:
        lo, hi = opts["window"]
    if hi <= lo:
        return np.zeros_like(voxels)
    return np.clip((voxels - lo) / (hi - lo), 0.0, 1.0)


def resample(voxels: np.ndarray, size: int, order: int, antialias: bool) -> np.ndarray:
    """``[X, Y, Z]`` → ``[size, size, size]`` in [0, 1] (step 4)."""
    ndimage = _library("scipy.ndimage")
    if voxels.shape == (size,) * 3:
        return voxels
    factors = [size / s for s in voxels.shape]
    sigma = [max(0.0, (1.0 / f - 1.0) / 2.0) for f in factors]
    if antialias and any(sigma):
        voxels = ndimage.gaussian_filter(voxels, sigma, mode="nearest")
    out = ndimage.zoom(voxels, factors, order=order, mode="nearest", grid_mode=True)
    assert out.shape == (size,) * 3, out.shape
    return np.clip(out, 0.0, 1.0)


class NiftiKind(FolderKind):
    """A folder of 3D NIfTI volumes (see the module docstring)."""

    name = "nifti"
    what = "volumes"
    suffixes = SUFFIXES
    source_keys = ("path", "csv", "intensity", "percentiles", "window", "order", "antialias", "split_ratio")

    def format_options(self, table: dict[str, Any], where: str) -> dict[str, Any]:
        """``intensity`` with ``percentiles`` or ``window`` where it uses one, ``order`` and
        ``antialias`` (see the module docstring)."""
        opts: dict[str, Any] = {"intensity": get_choice(table, "intensity", where, INTENSITY, "percentile")}
        rule = opts["intensity"]
        uses = {"percentile": "percentiles", "window": "window"}.get(rule)
        for key, wants in (("percentiles", "percentile"), ("window", "window")):
            if key in table and key != uses:
                raise ConfigError(f"{where}: {key} is set but intensity = {rule!r} does not use it; remove it or set "
                                  f"intensity = {wants!r}")
        if rule == "percentile":
            lo, hi = get_numbers(table, "percentiles", where, 2, (0.5, 99.5))
            if not 0 <= lo < hi <= 100:
                raise ConfigError(f"{where}: percentiles = {[lo, hi]} is invalid: expected 0 ≤ low < high ≤ 100, e.g. "
                                  "[0.5, 99.5]")
            opts["percentiles"] = [lo, hi]
        if rule == "window":
            get_value(table, "window", where, list)  # required: there is no sensible default
            lo, hi = get_numbers(table, "window", where, 2, (-1000.0, 1000.0))
            if not lo < hi:
                raise ConfigError(f"{where}: window = {[lo, hi]} is invalid: expected [low, high] with low < high, "
                                  "e.g. [-1000, 1000] for CT")
            opts["window"] = [lo, hi]
        order = get_value(table, "order", where, int, 1)
        if not 0 <= order <= 5:
            raise ConfigError(f"{where}: order = {order} is invalid: expected a spline order 0..5 (0 nearest, "
                              "1 trilinear, 3 cubic)")
        opts.update(order=order, antialias=get_value(table, "antialias", where, bool, True))
        return opts

    def check_source(self, source: SourceSpec, where: str) -> None:
        """3D volumes of one channel."""
        if source.dims != 3 or source.channels != 1:
            raise ConfigError(f"{where}: channels = {source.channels}, dims = {source.dims} is invalid for kind "
                              "'nifti': expected dims = 3 and channels = 1 (one intensity per voxel)")

    def check_libraries(self) -> None:
        """nibabel, before any file is read (one line naming the extra to install)."""
        _library("nibabel")  # one clear line before anything is read

    def decode(self, raw: bytes, path: Path, source: SourceSpec) -> np.ndarray:
        """One NIfTI file → ``[1, S, S, S]`` float32 in [0, 1] (steps 1–4 of the module docstring)."""
        voxels = normalise(volume_array(open_volume(raw, path), path), source.options, path)  # [X, Y, Z] in [0, 1]
        resampled = resample(voxels, source.size, source.options["order"], source.options["antialias"])  # [S, S, S]
        return resampled[None].astype(np.float32)  # [1, S, S, S]

    def rules(self, source: SourceSpec) -> dict[str, Any]:
        """The orientation, the size and the intensity and resampling rules."""
        opts = source.options
        return {"orientation": "RAS (closest canonical)", "size": source.size,
                **{k: opts[k] for k in ("intensity", "percentiles", "window", "order", "antialias") if k in opts}}
