"""A user's own data as a source: ``[source] kind = "images" | "nifti" | "table1d"``.

Real files written here (PNG / JPEG / TIFF with Pillow, NIfTI with nibabel, CSV / NPY / NPZ with NumPy), the
example volumes shipped with nibabel, tiny end-to-end builds (preset ``tiny``, a few meta-iterations) with
their reruns, and every bad input as one ``error:`` line of ``mednf build`` (exit 2, no traceback).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import mednf
from mednf.building.pipeline import BuildOptions, build
from mednf.cli import main
from mednf.errors import BuildError, ConfigError, SourceError
from mednf.format.reader import verify_dataset
from mednf.sources.kinds import images_unavailable
from mednf.sources.read import load_source, source_images
from mednf.sources.spec import load_builder

nib = pytest.importorskip("nibabel", reason="nibabel is not installed (pip install 'mednf[nifti]')")
NIBABEL_DATA = Path(nib.__file__).parent / "tests" / "data"
RNG = np.random.default_rng(0)


def _toml(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def write_builder(tmp_path: Path, kind: str, *, size: int, splits=(6, 3, 3), names=("a", "b"),
                  task: str = "multi-class", channels: int = 1, dims: int = 2, name: str = "Mine", seed: int = 1,
                  **source) -> Path:
    """A builder file for ``kind`` with preset tiny (2 meta-iterations) beside ``tmp_path``'s data."""
    lines = [f'name = "{name}"', f"seed = {seed}", "[source]", f'kind = "{kind}"', f"size = {size}",
             f"channels = {channels}", f"dims = {dims}", *(f"{k} = {_toml(v)}" for k, v in source.items()),
             "[labels]", f'task = "{task}"', f"names = {_toml(list(names))}",
             "[splits]", *(f"{s} = {n}" for s, n in zip(("train", "val", "test"), splits)),
             "[engine]", 'preset = "tiny"', "meta = { steps = 2, batch_size = 4 }", "fit = { steps = 2 }",
             "[build]", "val_samples = 2", "checkpoint_every = 1", "val_every = 2"]
    path = tmp_path / f"{name.lower()}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def write_csv(folder: Path, rows: list[tuple], header: str = "path,label") -> None:
    (folder / "labels.csv").write_text("\n".join([header, *(",".join(map(str, r)) for r in rows)]) + "\n")


def png_folder(tmp_path: Path, count: int = 12, side: int = 20, mode: str = "L") -> Path:
    """``count`` random PNGs in ``tmp_path/imgs`` and a labels.csv (names a / b alternating, no split)."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(count):
        shape = (side, side, 3) if mode == "RGB" else (side, side)
        Image.fromarray(RNG.integers(0, 256, shape, dtype=np.uint8)).save(folder / f"im{i:02d}.png")
    write_csv(folder, [(f"im{i:02d}.png", "ab"[i % 2]) for i in range(count)])
    return folder


def cli_error(*args: str, status: int = 2) -> str:
    """The one ``error:`` line of a failed in-process command (exit ``status``: 2 for a wrong builder file, 1 for
    source data that cannot be built; no traceback)."""
    result = CliRunner().invoke(main, list(args))
    assert result.exit_code == status, (result.exit_code, result.output, result.exception)
    assert "Traceback" not in result.output, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, result.output
    return lines[0]


def tiny_build(path: Path, out: Path) -> Path:
    return build(str(path), BuildOptions(out=out, progress=False))


# ---------------------------------------------------------------------------------------------------- images

def test_exports_publish_no_path_of_the_machine(tmp_path, monkeypatch):
    """A user's folder is recorded with its absolute path (decode/eval reread it); the Zenodo archive and the
    HF export publish only its name, and still verify."""
    import tarfile

    from mednf.tasks.export import export_hf, export_zenodo

    png_folder(tmp_path)
    out = tiny_build(write_builder(tmp_path, "images", size=16, path="imgs", split_ratio=[0.5, 0.25, 0.25]),
                     tmp_path / "out")
    local = str(tmp_path)
    assert local in (out / "mednf.json").read_text()  # the build's own copy keeps it
    archive = export_zenodo(out, tmp_path / "pub")
    with tarfile.open(archive) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}
        tar.extractall(tmp_path / "unpacked", filter="data")
    name = verify_dataset(out).name  # the archive's top folder
    published = members[f"{name}/mednf.json"].decode() + members[f"{name}/README.md"].decode()
    assert local not in published and '"path": "imgs"' in published
    unpacked = tmp_path / "unpacked" / name
    assert verify_dataset(unpacked).source["path"] == "imgs"  # every checksum holds, the card's too
    np.testing.assert_array_equal(mednf.load(unpacked, "test").latents, mednf.load(out, "test").latents)
    (tmp_path / "cwd" / "imgs").mkdir(parents=True)  # a folder of that name where the user works: never read
    monkeypatch.chdir(tmp_path / "cwd")
    copy = mednf.load(unpacked, "test")
    assert source_images(copy.manifest, "test", copy.source_index) is None
    assert "is a published copy" in images_unavailable(copy.manifest)
    monkeypatch.chdir(tmp_path)
    hub = export_hf(out, tmp_path / "hub" / out.name)
    assert local not in (hub / "mednf.json").read_text() + (hub / "README.md").read_text()
    assert local in (out / "mednf.json").read_text() and verify_dataset(out).source["path"] == str(tmp_path / "imgs")


def test_images_build_end_to_end_reruns_and_gets_the_exact_images_back(tmp_path):
    folder = png_folder(tmp_path)
    path = write_builder(tmp_path, "images", size=16, path="imgs", split_ratio=[0.5, 0.25, 0.25])
    out = tiny_build(path, tmp_path / "out")
    manifest = verify_dataset(out)
    src = manifest.source
    assert src["kind"] == "images" and src["path"] == str(folder) and src["files"] == 12
    assert (src["split"], src["split_ratio"], src["split_seed"], src["resize"]) == ("ratio", [0.5, 0.25, 0.25], 1,
                                                                                       "bicubic")
    assert {s: v.count for s, v in manifest.splits.items()} == {"train": 6, "val": 3, "test": 3}

    spec = load_builder(path)
    data = load_source(spec, progress=False)
    assert data.description == src  # a reread gives the same record (identity, digest)
    train = data.splits["train"]
    assert train.images.shape == (6, 1, 16, 16) and train.images.dtype == np.uint8
    # the seeded split, in CSV order within each split; labels by name
    order = np.random.default_rng(1).permutation(12)
    members = {s: sorted(order[a:b]) for s, a, b in (("train", 0, 6), ("val", 6, 9), ("test", 9, 12))}
    for split, rows in members.items():
        assert data.splits[split].labels[:, 0].tolist() == [i % 2 for i in rows]
        expected = [np.asarray(Image.open(folder / f"im{i:02d}.png").resize((16, 16), Image.Resampling.BICUBIC))
                    for i in rows]
        np.testing.assert_array_equal(data.splits[split].images[:, 0], np.stack(expected))

    import mednf

    test = mednf.load(out, split="test")
    np.testing.assert_array_equal(source_images(test.manifest, "test", test.source_index),
                                  data.splits["test"].images.astype(np.float32) / 255)
    assert "already complete" in CliRunner().invoke(main, ["build", str(path), "--out", str(out)]).output

    (folder / "im03.png").write_bytes((folder / "im04.png").read_bytes())  # the data changes after the build
    assert source_images(test.manifest, "test", test.source_index) is None
    assert "are not the ones Mine was built from" in images_unavailable(test.manifest)
    shutil.move(folder, tmp_path / "elsewhere")
    assert source_images(test.manifest, "test", test.source_index) is None
    assert f"{folder} is missing" in images_unavailable(test.manifest)


def test_an_interrupted_build_resumes_and_refuses_changed_files(tmp_path, monkeypatch):
    from mednf.building import fitting

    folder = png_folder(tmp_path)
    path = write_builder(tmp_path, "images", size=16, path=str(folder), split_ratio=[0.5, 0.25, 0.25])

    def stop(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(fitting, "fit_splits", stop)
        with pytest.raises(KeyboardInterrupt):
            tiny_build(path, tmp_path / "out")
    assert (tmp_path / "out" / ".partial" / "build.json").is_file()
    write_csv(folder, [(f"im{i:02d}.png", "ba"[i % 2]) for i in range(12)])  # other labels: another source
    with pytest.raises(BuildError, match="unfinished build with other settings.*source.sha256"):
        tiny_build(path, tmp_path / "out")
    write_csv(folder, [(f"im{i:02d}.png", "ab"[i % 2]) for i in range(12)])  # back as it was: resumes
    out = tiny_build(path, tmp_path / "out")
    assert verify_dataset(out).splits["train"].count == 6 and not (out / ".partial").exists()


def test_images_rgb_formats_split_column_and_resize_none(tmp_path):
    folder = tmp_path / "rgb"
    folder.mkdir()
    pixels = RNG.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    Image.fromarray(pixels[0]).save(folder / "a.png")
    Image.fromarray(pixels[1]).save(folder / "b.tif")
    Image.fromarray(pixels[2]).save(folder / "c.tiff")
    Image.fromarray(pixels[3][..., 0]).save(folder / "gray.png")  # a gray file is repeated into RGB
    ramp = np.stack([*np.meshgrid(np.arange(8) * 30, np.arange(8) * 20, indexing="ij"), np.full((8, 8), 99)], -1)
    smooth = ramp.astype(np.uint8)  # [8, 8, 3]: JPEG keeps a smooth image close
    Image.fromarray(smooth).save(folder / "d.jpg", quality=95, subsampling=0)
    Image.fromarray(smooth).save(folder / "e.jpeg", quality=95, subsampling=0)
    write_csv(folder, [("a.png", 0, "train"), ("b.tif", "b", "train"), ("c.tiff", 1, "validation"),  # HF's "val"
                       ("gray.png", "a", "test"), ("d.jpg", 0, "train"), ("e.jpeg", 1, "test")],
              header="path,label,split")
    spec = load_builder(write_builder(tmp_path, "images", size=8, channels=3, splits=(3, 1, 2), path="rgb",
                                      resize="none"))
    data = load_source(spec, progress=False)
    assert data.description["split"] == "column" and data.counts() == {"train": 3, "val": 1, "test": 2}
    train, test = data.splits["train"], data.splits["test"]
    assert train.images.shape == (3, 3, 8, 8) and train.labels[:, 0].tolist() == [0, 1, 0]
    np.testing.assert_array_equal(train.images[0], np.moveaxis(pixels[0], -1, 0))  # lossless formats exact
    np.testing.assert_array_equal(train.images[1], np.moveaxis(pixels[1], -1, 0))
    np.testing.assert_array_equal(test.images[0], np.repeat(pixels[3][None, ..., 0], 3, axis=0))
    assert np.abs(train.images[2].astype(int) - np.moveaxis(smooth, -1, 0)).mean() < 4  # JPEG: lossy
    # source_index is the sample's CSV row, so index.parquet says which file each latent came from
    assert [d.source_index.tolist() for d in data.splits.values()] == [[0, 1, 4], [2], [3, 5]]


def test_images_16_bit_gray_saved_as_rgb_and_luminance(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    deep = RNG.integers(0, 65536, (8, 8), dtype=np.uint16)
    Image.fromarray(deep).save(folder / "deep.png")
    gray = RNG.integers(0, 256, (8, 8), dtype=np.uint8)
    Image.fromarray(np.repeat(gray[..., None], 3, axis=2)).save(folder / "gray_rgb.png")
    colour = RNG.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    Image.fromarray(colour).save(folder / "colour.png")
    write_csv(folder, [("deep.png", 0, "train"), ("gray_rgb.png", 1, "val"), ("colour.png", 0, "test")],
              header="path,label,split")
    spec = load_builder(write_builder(tmp_path, "images", size=8, splits=(1, 1, 1), path="imgs", gray="luminance"))
    data = load_source(spec, progress=False)
    assert data.splits["train"].images.dtype == np.float32  # one 16-bit file: the whole set is float
    np.testing.assert_allclose(data.splits["train"].images[0, 0], deep / 65535.0, atol=1e-6)
    np.testing.assert_allclose(data.splits["val"].images[0, 0], gray / 255.0, atol=1e-6)
    luma = np.asarray(Image.fromarray(colour).convert("L")) / 255.0
    np.testing.assert_allclose(data.splits["test"].images[0, 0], luma, atol=1e-6)


def test_images_multi_label_cells_and_float_images_resized(tmp_path):
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(RNG.random((20, 12)).astype(np.float32)).save(folder / f"f{i}.tif")
    write_csv(folder, [("f0.tif", "a;c", "train"), ("f1.tif", "", "val"), ("f2.tif", "1", "test")],
              header="path,label,split")
    spec = load_builder(write_builder(tmp_path, "images", size=8, splits=(1, 1, 1), path="imgs", resize="lanczos",
                                      task="multi-label", names=("a", "b", "c")))
    data = load_source(spec, progress=False)
    assert [d.labels.tolist() for d in data.splits.values()] == [[[1, 0, 1]], [[0, 0, 0]], [[0, 1, 0]]]
    image = data.splits["train"].images[0, 0]
    expected = np.asarray(Image.open(folder / "f0.tif").resize((8, 8), Image.Resampling.LANCZOS)).clip(0, 1)
    assert image.dtype == np.float32 and image.shape == (8, 8)  # non-square 12×20 stretched to 8×8
    np.testing.assert_allclose(image, expected)


# ----------------------------------------------------------------------------------------------------- nifti

def write_volume(path: Path, voxels: np.ndarray) -> None:
    nib.save(nib.Nifti1Image(voxels, np.diag([1.5, 1.0, 2.0, 1.0])), path)


def test_nifti_build_end_to_end_and_rerun(tmp_path):
    folder = tmp_path / "vols"
    folder.mkdir()
    rows = []
    for i in range(6):
        shape = [(10, 12, 9), (12, 12, 12), (9, 10, 11, 1)][i % 3]  # the last one: a 4th axis of length 1
        name = f"v{i}.nii" + (".gz" if i % 2 else "")
        write_volume(folder / name, RNG.normal(100.0, 20.0, shape).astype(np.float32))
        rows.append((name, i % 2, ["train", "train", "train", "val", "test", "test"][i]))
    write_csv(folder, rows, header="path,label,split")
    path = write_builder(tmp_path, "nifti", size=8, dims=3, splits=(3, 1, 2), path="vols", order=1)
    out = tiny_build(path, tmp_path / "out")
    manifest = verify_dataset(out)
    assert manifest.source["intensity"] == "percentile" and manifest.source["percentiles"] == [0.5, 99.5]
    assert {s: v.count for s, v in manifest.splits.items()} == {"train": 3, "val": 1, "test": 2}
    data = load_source(load_builder(path), progress=False)
    volumes = data.splits["train"].images
    assert volumes.shape == (3, 1, 8, 8, 8) and volumes.dtype == np.float32
    assert volumes.min() >= 0 and volumes.max() <= 1 and volumes.std() > 0.01
    import mednf

    ds = mednf.load(out, split="val")
    np.testing.assert_array_equal(source_images(ds.manifest, "val", ds.source_index), data.splits["val"].images)
    assert "already complete" in CliRunner().invoke(main, ["build", str(path), "--out", str(out)]).output


def test_nifti_reads_the_example_volumes_shipped_with_nibabel(tmp_path):
    names = [n for n in ("anatomical.nii", "reoriented_anat_moved.nii", "standard.nii.gz")
             if (NIBABEL_DATA / n).is_file()]
    if len(names) < 3:
        pytest.skip(f"nibabel's test data ({NIBABEL_DATA}) lacks some of anatomical.nii, "
                    "reoriented_anat_moved.nii, standard.nii.gz")
    folder = tmp_path / "vols"
    folder.mkdir()
    for name in names:
        shutil.copy(NIBABEL_DATA / name, folder / name)
    write_csv(folder, [(n, i % 2, s) for i, (n, s) in enumerate(zip(names, ("train", "val", "test")))],
              header="path,label,split")
    spec = load_builder(write_builder(tmp_path, "nifti", size=16, dims=3, splits=(1, 1, 1), path="vols",
                                      intensity="minmax", order=0, antialias=False))
    data = load_source(spec, progress=False)
    anatomical = data.splits["train"].images[0, 0]  # [16, 16, 16]
    assert anatomical.shape == (16, 16, 16) and anatomical.min() >= 0 and anatomical.max() <= 1
    # independently: canonical voxels, min-max, nearest-neighbour grid sampling at voxel centres
    voxels = nib.as_closest_canonical(nib.load(folder / names[0])).get_fdata()
    voxels = (voxels - voxels.min()) / (voxels.max() - voxels.min())
    centres = [np.clip(np.floor((np.arange(16) + 0.5) * s / 16).astype(int), 0, s - 1) for s in voxels.shape]
    np.testing.assert_allclose(anatomical, voxels[np.ix_(*centres)], atol=1e-6)
    assert data.splits["test"].images.shape == (1, 1, 16, 16, 16)  # standard.nii.gz: 4×5×7 upsampled


# --------------------------------------------------------------------------------------------------- table1d

def test_table1d_csv_build_end_to_end_and_rerun(tmp_path):
    signals = np.sin(np.linspace(0, 6, 40))[None] * RNG.uniform(0.5, 2.0, (20, 1)) + RNG.normal(0, 0.1, (20, 40))
    split = ["train"] * 14 + ["val"] * 3 + ["test"] * 3
    lines = ["label,split," + ",".join(f"t{j}" for j in range(40))]
    lines += [f"{'xyz'[i % 3]},{split[i]}," + ",".join(f"{v:.6f}" for v in signals[i]) for i in range(20)]
    (tmp_path / "beats.csv").write_text("\n".join(lines) + "\n")
    path = write_builder(tmp_path, "table1d", size=40, dims=1, splits=(14, 3, 3), names=("x", "y", "z"),
                         path="beats.csv", label_column="label")
    out = tiny_build(path, tmp_path / "out")
    manifest = verify_dataset(out)
    assert {s: v.count for s, v in manifest.splits.items()} == {"train": 14, "val": 3, "test": 3}
    assert manifest.engine["field"]["in_dims"] == 1 and manifest.splits["test"].ssim_mean is None
    data = load_source(load_builder(path), progress=False)
    lo, hi = manifest.source["normalise_range"]
    np.testing.assert_allclose(data.splits["train"].images[:, 0], (signals[:14] - lo) / (hi - lo), atol=1e-5)
    assert data.splits["test"].images.shape == (3, 1, 40) and data.splits["test"].labels[:, 0].tolist() == [2, 0, 1]
    import mednf

    ds = mednf.load(out, split="test")
    assert tuple(ds.decode([0]).shape) == (1, 1, 40)
    np.testing.assert_array_equal(source_images(ds.manifest, "test", ds.source_index), data.splits["test"].images)
    assert "already complete" in CliRunner().invoke(main, ["build", str(path), "--out", str(out)]).output
    run = CliRunner().invoke(main, ["decode", str(out), "--split", "test", "--indices", "0:3", "--out",
                                    str(tmp_path / "curves.png")])  # 1D: curves, input dashed under each
    assert run.exit_code == 0, run.output
    assert Image.open(tmp_path / "curves.png").size == (690, 268)  # 3 plots of 2.2 in, title and captions
    card = (out / "README.md").read_text()
    assert "the builder's own signals from" in card and "phantom" not in card


def test_table1d_headerless_csv_npy_and_npz(tmp_path):
    signals = RNG.random((10, 12))
    labels = RNG.integers(0, 2, 10)
    np.savetxt(tmp_path / "kaggle.csv", np.c_[signals, labels], delimiter=",")  # MIT-BIH layout: label last
    np.save(tmp_path / "beats.npy", np.c_[signals, labels])
    leads = RNG.random((10, 2, 12))
    np.savez(tmp_path / "leads.npz", signals=leads, y=labels,
             split=np.array(["train"] * 6 + ["val"] * 2 + ["test"] * 2))
    for name, extra, channels in (("kaggle.csv", {}, 1), ("beats.npy", {"normalise": "none"}, 1),
                                  ("leads.npz", {"label_column": "y", "normalise": "minmax-signal"}, 2)):
        spec = load_builder(write_builder(tmp_path, "table1d", size=12, dims=1, channels=channels, splits=(8, 1, 1)
                                          if name != "leads.npz" else (6, 2, 2), path=name, **extra))
        data = load_source(spec, progress=False)
        images = np.concatenate([d.images for d in data.splits.values()])
        got = np.concatenate([d.labels[:, 0] for d in data.splits.values()])
        assert images.shape == (10, channels, 12) and images.min() >= 0 and images.max() <= 1, name
        assert sorted(got.tolist()) == sorted(labels.tolist()), name
    np.testing.assert_allclose(data.splits["train"].images, (leads[:6] - leads[:6].min(axis=(1, 2), keepdims=True))
                               / np.ptp(leads[:6], axis=(1, 2), keepdims=True), atol=1e-6)
    # headerless with label names in the last column: the first row is a signal, not a header
    names = ["N", "V"]
    (tmp_path / "named.csv").write_text("".join(",".join(f"{v:.6f}" for v in signals[i]) + f",{names[labels[i]]}\n"
                                                for i in range(10)))
    spec = load_builder(write_builder(tmp_path, "table1d", size=12, dims=1, splits=(8, 1, 1), names=("N", "V"),
                                      path="named.csv"))
    data = load_source(spec, progress=False)
    assert sum(len(d.images) for d in data.splits.values()) == 10
    assert sorted(np.concatenate([d.labels[:, 0] for d in data.splits.values()]).tolist()) == sorted(labels.tolist())


# ------------------------------------------------------------------------------------------------ bad inputs

def _folder_with(tmp_path: Path, files: dict[str, bytes | Image.Image | np.ndarray], rows: list[tuple],
                 header: str = "path,label") -> Path:
    folder = tmp_path / "data"
    folder.mkdir(exist_ok=True)
    for name, content in files.items():
        if isinstance(content, Image.Image):
            content.save(folder / name)
        elif isinstance(content, np.ndarray):
            write_volume(folder / name, content)
        else:
            (folder / name).write_bytes(content)
    write_csv(folder, rows, header)
    return folder


def _gray(side: int = 16) -> Image.Image:
    return Image.fromarray(RNG.integers(0, 256, (side, side), dtype=np.uint8))


def _three(names=("a.png", "b.png", "c.png"), labels=(0, 1, 0), splits=("train", "val", "test")) -> list[tuple]:
    return list(zip(names, labels, splits))


def _bad_images(tmp_path, case):
    split = "path,label,split"
    good = {"a.png": _gray(), "b.png": _gray(), "c.png": _gray()}
    if case == "corrupt":
        _folder_with(tmp_path, {**good, "b.png": b"\x89PNG not really"}, _three(), split)
        return {}, ["b.png is not a readable image", "replace the file"]
    if case == "mixed sizes":
        _folder_with(tmp_path, {**good, "c.png": _gray(20)}, _three(), split)
        return {"resize": "none"}, ["c.png is 20×20, expected 16×16 (resize = 'none')", "resize = 'bicubic'"]
    if case == "missing file":
        _folder_with(tmp_path, good, _three(("a.png", "b.png", "gone.png")), split)
        return {}, ["gone.png does not exist (listed on", "labels.csv line 4", "add the file or remove its row"]
    if case == "label id outside":
        _folder_with(tmp_path, good, _three(labels=(0, 5, 0)), split)
        return {}, ["labels.csv: the val labels hold the values [5], outside the 2 label names"]
    if case == "label name unknown":
        _folder_with(tmp_path, good, _three(labels=("a", "bb", "a")), split)
        return {}, ["labels.csv line 3: label 'bb' is not one of the 2 names", "did you mean 'b'"]
    if case == "empty folder":
        (tmp_path / "data").mkdir()
        return {}, ["data is empty: expected images and labels.csv"]
    if case == "unknown split":
        _folder_with(tmp_path, good, _three(splits=("train", "valid", "test")), split)
        return {}, ["labels.csv line 3: split 'valid' is invalid: expected one of train, val (or validation), test",
                    "did you mean 'val'"]
    if case == "empty split column":
        _folder_with(tmp_path, good, _three(splits=("train", "val", "val")), split)
        return {}, ["the test split is empty (3 samples in all); give it rows in the split column"]
    if case == "empty ratio split":
        _folder_with(tmp_path, good, [(n, 0) for n in good])
        return {}, ["the val split is empty (3 samples in all); add files or change split_ratio"]
    if case == "rgb for gray":
        colour = Image.fromarray(RNG.integers(0, 256, (16, 16, 3), dtype=np.uint8))
        _folder_with(tmp_path, {**good, "a.png": colour}, _three(), split)
        return {}, ["a.png is a colour RGB image but [source] channels = 1", "gray = 'luminance'"]
    if case == "float nan":
        _folder_with(tmp_path, {**good, "a.tif": Image.fromarray(np.full((16, 16), np.nan, np.float32))},
                     _three(("a.tif", "b.png", "c.png")), split)
        return {}, ["a.tif has 256 NaN/inf pixels"]
    if case == "listed twice":
        _folder_with(tmp_path, good, _three(("a.png", "b.png", "./a.png")), split)
        return {}, ["labels.csv line 4: './a.png' is listed twice (also on line 2)"]
    if case == "outside the folder":
        _folder_with(tmp_path, good, _three(("a.png", "b.png", "../c.png")), split)
        return {}, ["labels.csv line 4: path '../c.png' is invalid: expected a path relative to"]
    if case == "no csv":
        _folder_with(tmp_path, good, [])
        (tmp_path / "data" / "labels.csv").unlink()
        return {}, ["labels.csv does not exist: expected a CSV with columns path,label[,split]"]
    if case == "counts differ":
        _folder_with(tmp_path, {**good, "d.png": _gray()}, _three(("a.png", "b.png", "c.png", "d.png"),
                                                                   (0, 1, 0, 1), ("train", "val", "test", "train")),
                     split)
        return {}, ["has split counts {'train': 2, 'val': 1, 'test': 1}", "set [splits] train = 2, val = 1, test = 1"]
    raise AssertionError(case)


IMAGE_CASES = ["corrupt", "mixed sizes", "missing file", "label id outside", "label name unknown", "empty folder",
               "unknown split", "empty split column", "empty ratio split", "rgb for gray", "float nan", "counts differ",
               "listed twice", "outside the folder", "no csv"]


@pytest.mark.parametrize("case", IMAGE_CASES)
def test_bad_images_are_one_line(tmp_path, case):
    extra, words = _bad_images(tmp_path, case)
    path = write_builder(tmp_path, "images", size=16, splits=(1, 1, 1), path="data", **extra)
    line = cli_error("build", str(path), "--out", str(tmp_path / "out"), "--quiet", status=1)
    for word in words:
        assert word in line, line
    assert not (tmp_path / "out" / "mednf.json").exists()


@pytest.mark.parametrize("case", ["4d", "nan", "corrupt", "nibabel example4d"])
def test_bad_volumes_are_one_line(tmp_path, case):
    good = {"a.nii": RNG.random((6, 6, 6)).astype(np.float32), "b.nii.gz": RNG.random((6, 7, 6)).astype(np.float32)}
    if case == "4d":
        files, words = {**good, "c.nii": RNG.random((6, 6, 6, 3)).astype(np.float32)}, ["c.nii is a 4D volume"]
    elif case == "nan":
        volume = RNG.random((6, 6, 6)).astype(np.float32)
        volume[1, 2, 3] = np.inf
        files, words = {**good, "c.nii": volume}, ["c.nii has 1 NaN/inf voxels"]
    elif case == "corrupt":
        files, words = {**good, "c.nii": b"\x1f\x8b\x08 broken gzip"}, ["c.nii is not a readable NIfTI volume"]
    else:
        if not (NIBABEL_DATA / "example4d.nii.gz").is_file():
            pytest.skip(f"{NIBABEL_DATA / 'example4d.nii.gz'} is absent from this nibabel")
        files = {**good, "c.nii.gz": (NIBABEL_DATA / "example4d.nii.gz").read_bytes()}
        words = ["c.nii.gz is a 4D volume of shape (128, 96, 24, 2)", "expected one 3D volume"]
    names = list(files)
    _folder_with(tmp_path, files, _three(names), "path,label,split")
    path = write_builder(tmp_path, "nifti", size=8, dims=3, splits=(1, 1, 1), path="data")
    line = cli_error("build", str(path), "--out", str(tmp_path / "out"), "--quiet", status=1)
    for word in words:
        assert word in line, line


def test_nifti_without_nibabel_names_the_extra(tmp_path, monkeypatch):
    _folder_with(tmp_path, {"a.nii": RNG.random((6, 6, 6)).astype(np.float32)}, [("a.nii", 0)] * 1)
    spec = load_builder(write_builder(tmp_path, "nifti", size=8, dims=3, splits=(1, 1, 1), path="data",
                                      split_ratio=[0.4, 0.3, 0.3]))
    monkeypatch.setitem(__import__("sys").modules, "nibabel", None)
    with pytest.raises(SourceError, match=r'needs nibabel, which is not installed; run pip install "mednf\[nifti\]"'):
        load_source(spec, progress=False)


@pytest.mark.parametrize("case", ["nan", "length", "not a number", "label outside", "unknown split", "channels",
                                  "none out of range", "object npz"])
def test_bad_signals_are_one_line(tmp_path, case):
    signals = RNG.random((6, 10))
    extra: dict = {}
    if case == "object npz":
        np.savez(tmp_path / "s.npz", signals=np.array([[1.0], "x"], dtype=object))
        name, words = "s.npz", ["s.npz: an array cannot be read without pickle"]
    else:
        name = "s.csv"
        rows = [",".join(f"{v:.4f}" for v in s) + f",{i % 2},{['train', 'val', 'test'][i % 3]}"
                for i, s in enumerate(signals)]
        header = ",".join(f"t{j}" for j in range(10)) + ",label,split"
        size, channels = 10, 1
        if case == "nan":
            rows[2] = rows[2].replace(rows[2].split(",")[3], "nan", 1)
            words = ["s.csv line 4: 1 NaN/inf values"]
        elif case == "length":
            size, words = 12, ["holds signals of length 10, but [source] size = 12", "set size = 10"]
        elif case == "not a number":
            rows[1] = rows[1].replace(rows[1].split(",")[0], "abc", 1)
            words = ["s.csv line 3, column 't0': 'abc' is not a number"]
        elif case == "label outside":
            rows[0] = rows[0].replace(",0,train", ",7,train")
            words = ["s.csv: the train labels hold the values [1, 7], outside the 2 label names"]
        elif case == "unknown split":
            rows[4] = rows[4].replace(",val", ",VAL")
            words = ["s.csv line 6: split 'VAL' is invalid", "did you mean 'val'"]
        elif case == "channels":
            channels, words = 2, ["holds signals of 1 channel(s), but [source] channels = 2; set channels = 1"]
        else:
            extra, words = {"normalise": "none"}, []
            rows[0] = rows[0].replace(rows[0].split(",")[0], "3.5", 1)
            words = ["has values in [", "3.5], but normalise = 'none' needs [0, 1]"]
        (tmp_path / name).write_text("\n".join([header, *rows]) + "\n")
    path = write_builder(tmp_path, "table1d", size=10 if case == "object npz" else size, dims=1,
                         channels=1 if case == "object npz" else channels, splits=(2, 2, 2), path=name,
                         label_column="label", **extra)
    line = cli_error("build", str(path), "--out", str(tmp_path / "out"), "--quiet", status=1)
    for word in words:
        assert word in line, line


@pytest.mark.parametrize("kind, keys, words", [
    ("images", {"resize": "cubic"}, ["resize = 'cubic' is invalid", "did you mean 'bicubic'"]),
    ("images", {"split_ratio": [0.8, 0.1]}, ["split_ratio = [0.8, 0.1] is invalid: expected an array of 3"]),
    ("images", {"split_ratio": [0.8, 0.3, 0.1]}, ["sum to 1"]),
    ("images", {"gray": "average"}, ["gray = 'average' is invalid"]),
    ("images", {"csv": "../labels.csv"}, ["csv = '../labels.csv' is invalid"]),
    ("images", {"dims": 3}, ["invalid for kind 'images'"]),
    ("images", {"flag": "x"}, ["key 'flag' is unknown for kind = 'images'"]),
    ("nifti", {"dims": 3, "intensity": "window"}, ["key 'window' is missing"]),
    ("nifti", {"dims": 3, "percentiles": [1, 99], "intensity": "minmax"}, ["percentiles is set but intensity"]),
    ("nifti", {"dims": 3, "order": 7}, ["order = 7 is invalid"]),
    ("nifti", {"dims": 2}, ["invalid for kind 'nifti'", "dims = 3"]),
    ("table1d", {"dims": 2}, ["dims = 2 is invalid for kind 'table1d'"]),
    ("table1d", {"dims": 1, "normalise": "zscore"}, ["normalise = 'zscore' is invalid"]),
])
def test_bad_source_keys_are_one_line(tmp_path, kind, keys, words):
    keys = {"path": "x.csv" if kind == "table1d" else "data", **keys}
    dims = keys.pop("dims", 2)
    path = write_builder(tmp_path, kind, size=16, dims=dims, **keys)
    with pytest.raises(ConfigError) as err:
        load_builder(path)
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for word in words:
        assert word in message, message
    assert all(word in cli_error("build", str(path), "--quiet") for word in words)


def test_relative_path_follows_the_builder_file_and_source_npz_is_refused(tmp_path, monkeypatch):
    png_folder(tmp_path)
    path = write_builder(tmp_path, "images", size=16, path="imgs", split_ratio=[0.5, 0.25, 0.25])
    monkeypatch.chdir("/")
    spec = load_builder(path)
    assert spec.source.path == str(tmp_path / "imgs") and spec.source.options["resize"] == "bicubic"
    with pytest.raises(ConfigError, match="--source-npz x.npz is invalid for Mine"):
        load_source(spec, source_npz="x.npz", progress=False)


def test_example_builder_files_parse():
    folder = Path(__file__).resolve().parents[1] / "examples" / "builders"
    specs = [load_builder(path) for path in sorted(folder.glob("*.toml"))]
    assert {s.source.kind for s in specs} == {"images", "nifti", "table1d"}
    for spec in specs:
        assert Path(spec.source.path).is_absolute() and spec.source.path.startswith(str(folder.parents[1]))
