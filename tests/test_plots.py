"""The figures people read (``mednf decode --out x.png``, ``mednf eval --plot``, ``ds.plot``): their size,
labels, captions and colour bar, checked on the Figure's texts and on the rendered PNG's pixels."""

from __future__ import annotations

import json
import shutil
import sys

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import mednf
from mednf.cli import main
from mednf.errors import ConfigError
from mednf.figures import DPI, MIN_TILE_PX, grid_figure, grid_title, save_figure


def _tiles(fig) -> dict[str, object]:
    return {ax.get_label(): ax for ax in fig.axes}


def _note(fig) -> str:
    """The note under a grid, unwrapped."""
    return " ".join(t.get_text() for t in fig.texts if t is not fig._suptitle).replace("\n", " ")


def _dark(pixels: np.ndarray) -> int:
    """Pixels that are not the white background."""
    return int((pixels[..., :3].astype(int).sum(axis=-1) < 600).sum())


def test_grid_has_labelled_rows_captions_title_and_colour_bar(phantom_dir, tmp_path):
    ds = mednf.load(phantom_dir, "test")
    fig = ds.plot(range(5))
    tiles = _tiles(fig)
    assert fig._suptitle.get_text() == "PhantomNF · test split · 5 samples at 32×32"
    assert [tiles[f"{row} #0"].get_ylabel() for row in ("input", "reconstruction", "|error|")] == [
        "input", "reconstruction", "|error|"]
    assert tiles["input #3"].get_ylabel() == ""  # row labels only at the left
    for i in range(5):  # the sample index and the PSNR recorded at build under each sample
        assert tiles[f"|error| #{i}"].get_xlabel() == f"#{i}\n{ds.psnr[i]:.2f} dB"
        assert tiles[f"input #{i}"].images[0].get_interpolation() == "nearest"
    assert tiles["colour bar"].get_ylabel() == "|error|"
    assert _note(fig) == ""  # nothing left out: no note

    png = save_figure(fig, tmp_path / "grid.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["grid.png"]  # written atomically, no leftovers
    pixels = np.asarray(Image.open(png).convert("RGB"))
    # 112 px label margin + 5 tiles of 112 px (32² shown at ≥ MIN_TILE_PX) with 10 px gaps + 78 px colour bar;
    # 46 px title + 3 rows of 112 px with 6 px gaps + 36 px captions
    assert MIN_TILE_PX == 112 and pixels.shape == (430, 790, 3)
    assert tuple(fig.get_size_inches() * DPI) == (790, 430)
    assert _dark(pixels[8:40, 250:550]) > 100  # the title is drawn
    bar = pixels[46 + 2 * 118:46 + 2 * 118 + 112, 790 - 78 + 10:790 - 78 + 20]  # beside the |error| row
    assert _dark(bar) > 0.9 * bar.shape[0] * bar.shape[1]
    assert len({tuple(p) for p in bar.reshape(-1, 3)}) > 20  # a colour scale, not one flat colour
    assert _dark(pixels[46:158, 112:224]) > 1000  # the first input tile


def test_rows_that_cannot_be_had_are_left_out_with_a_note(phantom_dir, tmp_path):
    ds = mednf.load(phantom_dir, "val")
    plain = ds.plot([0, 2], with_inputs=False)
    assert sorted(_tiles(plain)) == ["reconstruction #0", "reconstruction #2"]
    assert _tiles(plain)["reconstruction #2"].get_xlabel() == f"#2\n{ds.psnr[2]:.2f} dB"

    finer = ds.plot([1], size=64)  # inputs at 32², reconstructions at 64²: no |error| row
    assert sorted(_tiles(finer)) == ["input #1", "reconstruction #1"]
    assert "64×64" in finer._suptitle.get_text()
    assert _note(finer) == "no |error| row: the reconstructions are 64×64, the inputs 32×32"

    copy = tmp_path / "PhantomNF"
    shutil.copytree(phantom_dir, copy)
    manifest = json.loads((copy / "mednf.json").read_text())
    manifest["source"]["generator"] = 1  # an older phantom generator: the inputs cannot be had
    (copy / "mednf.json").write_text(json.dumps(manifest))
    fig = mednf.load(copy, "val", verify=False).plot([0, 1])
    assert sorted(_tiles(fig)) == ["reconstruction #0", "reconstruction #1"]
    note = _note(fig)
    assert note.startswith("no input or |error| rows:") and "phantoms of another mednf version" in note
    result = CliRunner().invoke(main, ["decode", str(copy), "--split", "val", "--indices", "0:2", "--out",
                                       str(tmp_path / "g.png")])
    assert result.exit_code == 0 and "(no input or |error| rows:" in result.output, result.output


def test_cli_decode_and_eval_write_the_figures(phantom_dir, tmp_path):
    png = tmp_path / "grid.png"
    result = CliRunner().invoke(main, ["decode", str(phantom_dir), "--indices", "0:3", "--out", str(png)])
    assert result.exit_code == 0 and "beside their inputs" in result.output, result.output
    assert Image.open(png).size == (112 + 3 * 112 + 2 * 10 + 78, 430)
    plot = tmp_path / "eval.png"
    result = CliRunner().invoke(main, ["eval", str(phantom_dir), "--split", "test", "--out", str(tmp_path / "ev"),
                                       "--plot", str(plot)])
    assert result.exit_code == 0, result.output
    assert Image.open(plot).size == (112 + 8 * 112 + 7 * 10 + 78, 430)  # the first 8 samples


def test_volumes_show_the_middle_slice_and_signals_are_curves():
    rng = np.random.default_rng(0)
    volumes = rng.random((2, 1, 8, 6, 6)).astype(np.float32)  # [n, D, Z, Y, X]
    fig = grid_figure(volumes, volumes, psnr=[30.0, np.nan], title=grid_title("VolNF", "test", (8, 6, 6), 2))
    tiles = _tiles(fig)
    assert "middle slice" in fig._suptitle.get_text()
    np.testing.assert_array_equal(tiles["reconstruction #1"].images[0].get_array(), volumes[1, 0, 4])
    assert tiles["|error| #1"].get_xlabel() == "#1\nPSNR —"  # not measured

    signals = rng.random((3, 2, 40))  # [n, D, L]
    fig = grid_figure(signals, signals + 0.1, indices=[4, 5, 6], psnr=[20.0, 21.5, 22.25],
                      title=grid_title("BeatNF", "test", (40,), 3))
    assert fig._suptitle.get_text() == "BeatNF · test split · 3 samples at 40 points"
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert [axes[f"signal #{i}"].get_xlabel() for i in (4, 5, 6)] == ["#4  20.00 dB", "#5  21.50 dB", "#6  22.25 dB"]
    assert axes["signal #4"].get_ylabel() == "value" and len(axes["signal #4"].lines) == 4  # 2 channels × 2
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["input", "reconstruction"]


def test_without_matplotlib_plotting_is_one_line(phantom_dir, tmp_path, monkeypatch):
    ds = mednf.load(phantom_dir, "test")
    for module in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, module)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # `import matplotlib` now fails as if not installed
    with pytest.raises(ConfigError) as err:
        ds.plot([0])
    assert str(err.value) == "plotting needs matplotlib, which is not installed: pip install matplotlib"
    result = CliRunner().invoke(main, ["decode", str(phantom_dir), "--out", str(tmp_path / "g.png")])
    assert result.exit_code == 1 and result.output == f"error: {err.value}\n"
    assert not (tmp_path / "g.png").exists()


def test_signals_wrap_into_rows_with_an_error_panel_and_titles_break_between_parts():
    """1D: at most four panels a row, readable ticks, the input drawn solid and an |error| panel under each
    signal on one scale; a title too long for a narrow grid shrinks, then breaks only between its parts."""
    from mednf.figures import CURVE_COLUMNS

    rng = np.random.default_rng(1)
    signals = rng.random((8, 1, 50))
    fig = grid_figure(signals, signals + 0.05 * rng.standard_normal(signals.shape), psnr=[20.0] * 8,
                      title="reconstruction error · " + grid_title("BeatNF", "test", (50,), 8))
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert CURVE_COLUMNS == 4 and fig.get_size_inches()[0] < 15
    assert len({ax.get_position().y0 for label, ax in axes.items() if label.startswith("signal")}) == 2
    errors = [axes[f"|error| #{i}"] for i in range(8)]
    assert all(ax.get_ylim() == errors[0].get_ylim() for ax in errors) and errors[0].get_ylabel() == "|error|"
    assert axes["signal #0"].lines[0].get_linestyle() == "-" and axes["signal #0"].lines[0].get_linewidth() >= 1.5
    assert axes["signal #0"].xaxis.get_label_position() == "top"  # the caption above the panel
    assert axes["signal #0"].yaxis.get_major_ticks()[0].label1.get_fontsize() >= 8
    shorter = grid_figure(signals[:2], signals[:2, :, :40])  # other lengths: no |error| panel, a note says so
    assert not any(ax.get_label().startswith("|error|") for ax in shorter.axes)
    assert "no |error| panels" in _note(shorter)

    volumes = rng.random((3, 1, 8, 8, 8)).astype(np.float32)
    title = "reconstruction error · " + grid_title("VolumeNF3D", "test", (32,) * 3, 3)
    fig = grid_figure(volumes, volumes, title=title)
    lines = fig._suptitle.get_text().split("\n")
    assert lines == ["reconstruction error · VolumeNF3D · test split · 3 samples at 32×32×32,",
                     "middle slice (axis 0 at 16 of 32)"]
    one = grid_figure(volumes, volumes, title=grid_title("V", "test", (32,) * 3, 3))
    assert "\n" not in one._suptitle.get_text() and one._suptitle.get_fontsize() < 11
