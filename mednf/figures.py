"""Figures people read (matplotlib, Agg; no display needed): decoded samples beside their inputs.

:func:`grid_figure` lays out one column per sample, in bands of up to ``columns`` samples, with labelled
rows: **input** (the source image, when it can be had), **reconstruction** (decoded from the latent) and
**|error|** (absolute difference, one colour scale for the figure, shown by a colour bar; only when the
input has the reconstruction's size). Under each sample: its index in the split and its PSNR. Rows that
cannot be had are left out and a note under the grid says why. Tiles are drawn with nearest-neighbour
upscaling and at least ``MIN_TILE_PX`` pixels a side, so 28² and 64² images are visible. Volumes show
their middle slice (the title says so). 1D signals are curves (:func:`curves_figure`), at most four a row,
the input under the reconstruction and an |error| panel below each, with the same title and captions.

:func:`dataset_figure` makes the figure of a :class:`~mednf.dataset.MedNFDataset` (``ds.plot``, ``mednf
decode --out x.png``, ``mednf eval --plot``); :func:`save_figure` writes a PNG atomically. Figures are
built on :class:`matplotlib.figure.Figure` directly (no pyplot state); matplotlib is imported when a
figure is made, and its absence is a one-line :class:`~mednf.errors.ConfigError`.
"""

from __future__ import annotations

import io
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mednf.arguments import positive_int
from mednf.errors import ConfigError
from mednf.io.files import atomic_write_bytes
from mednf.optional import optional_import
from mednf.sources.kinds import images_unavailable
from mednf.sources.read import source_images

if TYPE_CHECKING:
    from matplotlib.figure import Figure

DPI = 100
MIN_TILE_PX = 112  # smallest side a tile is shown at (28² → 4×, 32² → 3.5×)
MAX_TILE_PX = 256  # larger images are shown smaller
CURVE_COLUMNS = 4  # 1D signals: at most this many panels a row
ROW_LABELS = ("input", "reconstruction", "|error|")
# pixel layout of an image grid
_LEFT, _RIGHT_BAR, _RIGHT, _HGAP, _VGAP, _CAPTION = 112, 78, 16, 10, 6, 36
_TITLE_LINE, _NOTE_LINE = 18, 15  # pixels per line of the title (11 pt) and of the note (8 pt)


def figure_class() -> type[Figure]:
    """The ``Figure`` class of matplotlib (ConfigError naming the install command when matplotlib is missing)."""
    optional_import("matplotlib", "plotting")  # a None in sys.modules (blocked) reads as missing too
    return optional_import("matplotlib.figure", "plotting").Figure


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write ``fig`` as a PNG at :data:`DPI`, atomically (never half a file under the real name)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def middle_slice(images: np.ndarray) -> np.ndarray:
    """``[n, D, *spatial]`` → ``[n, D, H, W]``: volumes cut through the middle of each leading axis."""
    while images.ndim > 4:
        images = images[:, :, images.shape[2] // 2]
    return images


def grid_title(name: str, split: str, spatial: Sequence[int], count: int) -> str:
    """``PhantomNF · test split · 8 samples at 32×32`` (volumes: which slice; 1D: how many points)."""
    size = "×".join(str(s) for s in spatial)
    title = f"{name} · {split} split · {count} sample{'s' if count != 1 else ''} at {size}"
    if len(spatial) == 1:
        return f"{title} points"
    if len(spatial) == 3:
        return f"{title}, middle slice (axis 0 at {spatial[0] // 2} of {spatial[0]})"
    return title


def _caption(index: int, psnr: float | None) -> str:
    return f"#{index}\n" + (f"{psnr:.2f} dB" if psnr is not None and np.isfinite(psnr) else "PSNR —")


def _tile_size(h: int, w: int) -> tuple[int, int]:
    scale = max(1.0, MIN_TILE_PX / min(h, w))
    scale = min(scale, MAX_TILE_PX / max(h, w)) if max(h, w) * scale > MAX_TILE_PX else scale
    return max(1, round(h * scale)), max(1, round(w * scale))


def _show(ax: Any, tile: np.ndarray, **kwargs: Any) -> Any:
    """Draw a ``[D, H, W]`` tile in [0, 1]: gray for one channel, RGB for three (else the first channel)."""
    if tile.shape[0] == 3:
        return ax.imshow(np.moveaxis(np.clip(tile, 0.0, 1.0), 0, -1), interpolation="nearest", **kwargs)
    return ax.imshow(tile[0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", **kwargs)


def _bare(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def grid_figure(recon: np.ndarray, inputs: np.ndarray | None = None, *, indices: Sequence[int] | None = None,
                psnr: Sequence[float] | np.ndarray | None = None, title: str = "", note: str | None = None,
                columns: int = 8) -> Figure:
    """The labelled grid of ``recon`` ``[n, D, *spatial]`` in [0, 1] (see the module docstring).

    ``inputs`` ``[n, D, *spatial']`` (None: no input and |error| rows); ``indices`` and ``psnr`` ``[n]`` are
    the captions (default 0..n-1, no PSNR); ``note`` is printed under the grid (with the reason for any
    row left out). 1D signals ``[n, D, L]`` are drawn by :func:`curves_figure`.
    """
    recon = np.asarray(recon, dtype=np.float32)
    n = len(recon)
    indices = list(range(n)) if indices is None else [int(i) for i in indices]
    psnr_values = [None] * n if psnr is None else [float(p) for p in psnr]
    if recon.ndim == 3:
        return curves_figure(recon, inputs, indices=indices, psnr=psnr_values, title=title, note=note,
                             columns=columns)
    notes = [note] if note else []
    shown = middle_slice(recon)  # [n, D, H, W]
    shown_inputs = middle_slice(np.asarray(inputs, dtype=np.float32)) if inputs is not None else None
    errors = None
    if inputs is not None and inputs.shape == recon.shape:
        errors = np.abs(shown - shown_inputs).mean(axis=1)  # [n, H, W]
    elif inputs is not None:
        notes.append(f"no |error| row: the reconstructions are {'×'.join(map(str, recon.shape[2:]))}, the inputs "
                     f"{'×'.join(map(str, inputs.shape[2:]))}")
    rows = [("input", shown_inputs)] if shown_inputs is not None else []
    rows += [("reconstruction", shown)] + ([("|error|", errors)] if errors is not None else [])

    cols = max(1, min(n, columns))
    bands = -(-n // cols)
    th, tw = _tile_size(*shown.shape[2:])
    right = _RIGHT_BAR if errors is not None else _RIGHT
    width = _LEFT + cols * tw + (cols - 1) * _HGAP + right
    band_h = len(rows) * th + (len(rows) - 1) * _VGAP + _CAPTION
    note_lines = [line for text in notes for line in textwrap.wrap(text, max(30, (width - 20) // 7))]
    title_lines, title_size = _fit_title(title, width - 20)
    top = 16 + _TITLE_LINE * len(title_lines) + 12
    height = top + bands * band_h + (len(note_lines) * _NOTE_LINE + 10 if note_lines else 0)

    fig = figure_class()(figsize=(width / DPI, height / DPI), dpi=DPI)

    def axes_at(x: float, y: float, w: float, h: float) -> Any:  # pixels from the top left
        return fig.add_axes((x / width, 1 - (y + h) / height, w / width, h / height))

    vmax = max(float(errors.max()), 1e-6) if errors is not None else 1.0
    for k in range(n):
        band, col = divmod(k, cols)
        x = _LEFT + col * (tw + _HGAP)
        for r, (label, data) in enumerate(rows):
            y = top + band * band_h + r * (th + _VGAP)
            ax = axes_at(x, y, tw, th)
            ax.set_label(f"{label} #{indices[k]}")  # finds a tile: {a.get_label(): a for a in fig.axes}
            _bare(ax)
            if label == "|error|":
                image = ax.imshow(data[k], cmap="magma", vmin=0.0, vmax=vmax, interpolation="nearest")
            else:
                _show(ax, data[k])
            ax.set_aspect("auto")
            if col == 0:
                ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9, labelpad=6)
            if r == len(rows) - 1:
                ax.set_xlabel(_caption(indices[k], psnr_values[k]), fontsize=8, labelpad=3)
        if errors is not None and k == 0:  # one colour bar beside the first band's |error| row
            y = top + (len(rows) - 1) * (th + _VGAP)
            cax = axes_at(_LEFT + cols * tw + (cols - 1) * _HGAP + 10, y, 10, th)
            cax.set_label("colour bar")
            bar = fig.colorbar(image, cax=cax)
            bar.ax.tick_params(labelsize=7)
            bar.set_label("|error|", fontsize=8)
    if title_lines:
        fig.suptitle("\n".join(title_lines), x=0.5, y=1 - 12 / height, va="top", fontsize=title_size)
    if note_lines:
        fig.text(10 / width, (len(note_lines) * _NOTE_LINE + 4) / height, "\n".join(note_lines), fontsize=8,
                 va="top", ha="left", color="0.25")
    return fig


def curves_figure(recon: np.ndarray, inputs: np.ndarray | None = None, *, indices: Sequence[int] | None = None,
                  psnr: Sequence[float | None] | None = None, title: str = "", note: str | None = None,
                  columns: int = 8) -> Figure:
    """1D signals ``[n, D, L]``: one panel per signal (every channel), the input ``[n, D, L']`` drawn dark under
    the reconstruction, and below it a narrower **|error|** panel (``|reconstruction − input|`` per channel,
    one scale for the figure; only when the input has the reconstruction's length). At most
    :data:`CURVE_COLUMNS` panels a row (``columns`` fewer), so a row stays readable; the sample index and PSNR
    above each panel, a legend and the title above all."""
    n = len(recon)
    indices = list(range(n)) if indices is None else list(indices)
    psnr = [None] * n if psnr is None else list(psnr)
    errors = np.abs(recon - inputs) if inputs is not None and inputs.shape == recon.shape else None  # [n, D, L]
    notes = [note] if note else []
    if inputs is not None and errors is None:
        notes.append(f"no |error| panels: the reconstructions have {recon.shape[-1]} points, the inputs "
                     f"{inputs.shape[-1]}")
    cols = max(1, min(n, columns, CURVE_COLUMNS))
    rows = -(-n // cols)
    # inches; a band is the caption, the signal and its |error| panel (without one the signal takes its place)
    panel_w, caption_h, error_h, between, row_gap = 1.95, 0.25, 0.42, 0.06, 0.4
    band_h = caption_h + 1.58
    signal_h = band_h - caption_h - (between + error_h if errors is not None else 0.0)
    left, right, gap = 0.6, 0.15, 0.15
    width = left + cols * panel_w + (cols - 1) * gap + right
    note_lines = [line for text in notes for line in textwrap.wrap(text, max(30, int(width * DPI - 20) // 7))]
    title_lines, title_size = _fit_title(title, int(width * DPI) - 260)  # the legend sits at the right
    top = 0.15 + 0.2 * len(title_lines) + 0.15  # title, legend
    bottom = 0.35 + 0.16 * len(note_lines)  # tick labels, note
    height = top + rows * band_h + (rows - 1) * row_gap + bottom
    fig = figure_class()(figsize=(width, height), dpi=DPI)

    def axes_at(x: float, y: float, w: float, h: float, **kwargs: Any) -> Any:  # inches from the top left
        return fig.add_axes((x / width, 1 - (y + h) / height, w / width, h / height), **kwargs)

    first = first_error = None
    error_max = max(float(errors.max()), 1e-6) * 1.05 if errors is not None else 1.0
    for k in range(n):
        band, col = divmod(k, cols)
        x = left + col * (panel_w + gap)
        y = top + band * (band_h + row_gap) + caption_h
        ax = axes_at(x, y, panel_w, signal_h, sharey=first, label=f"signal #{indices[k]}")
        first = first or ax
        for d in range(recon.shape[1]):
            if inputs is not None:
                ax.plot(np.linspace(0, 1, inputs.shape[-1]), inputs[k, d], lw=1.6, color="0.15", alpha=0.55,
                        label="input" if d == 0 else None)
            ax.plot(np.linspace(0, 1, recon.shape[-1]), recon[k, d], lw=1.1, color=f"C{d}",
                    label="reconstruction" if d == 0 else None)
        ax.set_xlabel(_caption(indices[k], psnr[k]).replace("\n", "  "), fontsize=9, labelpad=3)
        ax.xaxis.set_label_position("top")
        ax.tick_params(labelsize=8)
        ax.set_xlim(0, 1)
        ax.set_xticks([0.25, 0.5, 0.75])  # position in the signal; none at the ends, where neighbours meet
        if col == 0:
            ax.set_ylabel("value", fontsize=9)
        else:  # one scale per row of panels (shared): its numbers at the left only
            ax.tick_params(labelleft=False)
        if errors is not None:
            ax.tick_params(labelbottom=False)
            err = axes_at(x, y + signal_h + between, panel_w, error_h, sharex=ax, sharey=first_error,
                          label=f"|error| #{indices[k]}")
            first_error = first_error or err
            for d in range(recon.shape[1]):
                err.fill_between(np.linspace(0, 1, recon.shape[-1]), errors[k, d], color=f"C{d}", alpha=0.45, lw=0)
            err.set_ylim(0, error_max)
            err.tick_params(labelsize=7)
            err.locator_params(axis="y", nbins=2)
            if col == 0:
                err.set_ylabel("|error|", fontsize=9)
            else:
                err.tick_params(labelleft=False)
    if first is not None:
        handles, labels = first.get_legend_handles_labels()
        fig.legend(handles, labels, loc="upper right", fontsize=9, frameon=False, ncols=2,
                   bbox_to_anchor=(1 - 0.05 / width, 1 - 0.08 / height))
    if title_lines:
        fig.suptitle("\n".join(title_lines), x=0.1 / width, ha="left", y=1 - 0.1 / height, va="top",
                     fontsize=title_size)
    if note_lines:
        fig.text(0.1 / width, (0.08 + 0.16 * len(note_lines)) / height, "\n".join(note_lines), fontsize=8,
                 va="top", color="0.25")
    return fig


def _fit_title(title: str, room: int, largest: int = 11, smallest: int = 8) -> tuple[list[str], int]:
    """A title in ``room`` pixels: on one line at the largest font size from ``largest`` down to ``smallest``
    that fits, else broken only between its parts (`` · `` and ``, ``), never inside one. Characters are
    taken as 0.6 em wide (DejaVu Sans, the default font, averages less)."""
    if not title:
        return [], largest
    for size in range(largest, smallest - 1, -1):
        if len(title) * 0.6 * size * DPI / 72 <= room:
            return [title], size
    chars = max(20, int(room / (0.6 * smallest * DPI / 72)))
    parts = [part for piece in title.split(" · ") for part in _join_commas(piece)]
    lines: list[str] = []
    for i, part in enumerate(parts):
        joint = " · " if i and not lines[-1].endswith(",") else " "
        if lines and len(lines[-1]) + len(joint) + len(part) <= chars:
            lines[-1] += joint + part
        else:
            lines.append(part)
    return [line.strip() for line in lines], smallest


def _join_commas(piece: str) -> list[str]:
    """``"a, b"`` → ``["a,", "b"]``: the places a title part may be broken."""
    words = piece.split(", ")
    return [w + ("," if i < len(words) - 1 else "") for i, w in enumerate(words)]


@dataclass
class Samples:
    """What a dataset figure shows: decoded samples, their inputs when they can be had, captions, title."""

    recon: np.ndarray  # [n, D, *spatial] in [0, 1]
    inputs: np.ndarray | None  # [n, D, *native] or None (left out: ``note`` says why)
    positions: np.ndarray  # [n] indices in the split
    psnr: np.ndarray  # [n] recorded at build (NaN: not measured)
    title: str
    note: str | None = None

    def figure(self, columns: int = 8) -> Figure:
        """The samples as a grid of ``columns`` per row: inputs over reconstructions, PSNR captions, title, note."""
        return grid_figure(self.recon, self.inputs, indices=self.positions.tolist(), psnr=self.psnr,
                           title=self.title, note=self.note, columns=columns)


def dataset_samples(ds: Any, indices: Any = None, *, size: int | Sequence[int] | None = None,
                    with_inputs: bool = True, root: str | Path | None = None, device: Any = None,
                    what: str = "") -> Samples:
    """The samples of ``ds`` (a :class:`~mednf.dataset.MedNFDataset`) at ``indices`` (default the first 8),
    decoded at ``size`` (default native), with the source images when ``with_inputs`` and they can be had
    (``root``: where MedMNIST files are; default ``$MEDMNIST_ROOT``, ``~/.medmnist``, then the folder the
    build read them from), captioned with the PSNR recorded at build; ``what`` goes before the title."""
    figure_class()  # a missing matplotlib ends here, before anything is decoded
    positions = np.arange(min(8, len(ds))) if indices is None else np.atleast_1d(ds._positions(indices))
    if not len(positions):
        raise ConfigError(f"indices = {indices!r} select no sample of {ds.name} {ds.split}: expected at least one; "
                          "give the rows to show (default: the first 8)")
    recon = ds.decode(positions, size=size, device=device).numpy()  # [n, D, *spatial]
    inputs, note = None, None
    if with_inputs:
        inputs = source_images(ds.manifest, ds.split, ds.source_index[positions], root)
        if inputs is None:
            note = f"no input or |error| rows: {images_unavailable(ds.manifest, root)}"
    title = what + grid_title(ds.name, ds.split, recon.shape[2:], len(positions))
    return Samples(recon, inputs, positions, np.asarray(ds.psnr[positions], dtype=np.float64), title, note)


def dataset_figure(ds: Any, indices: Any = None, *, columns: int = 8, **kwargs: Any) -> Figure:
    """:func:`dataset_samples` as a figure (``ds.plot``)."""
    return dataset_samples(ds, indices, **kwargs).figure(positive_int(columns, "columns"))
