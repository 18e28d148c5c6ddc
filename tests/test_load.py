"""`mednf.load`: the PyTorch and Hugging Face views of a dataset built by `mednf build` in this session,
checked against the Zarr and Parquet files read directly, and decoding at other resolutions."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F
import zarr
from click.testing import CliRunner
from conftest import report
from safetensors.torch import load_file

import mednf
from mednf.cli import main
from mednf.dataset import MedNFDataset
from mednf.engine.config import EngineConfig
from mednf.engine.field import decode
from mednf.errors import ConfigError, NotFoundError


def stored(phantom_dir, split):
    """The split's rows straight from the files: latents [N, P] and index columns ordered by row."""
    latents = zarr.open_array(str(phantom_dir / "latents.zarr" / split), mode="r")[:]
    table = pq.read_table(phantom_dir / "index.parquet").to_pydict()
    rows = sorted((r, i) for i, (s, r) in enumerate(zip(table["split"], table["row"])) if s == split)
    columns = {k: [table[k][i] for _, i in rows] for k in ("label", "source_index", "psnr")}
    return latents, columns


def test_pytorch_view_equals_the_files(phantom_dir):
    ds = mednf.load(phantom_dir, split="val")
    assert isinstance(ds, torch.utils.data.Dataset) and len(ds) == 20
    latents, cols = stored(phantom_dir, "val")
    for i in (0, 7, 19, -1):
        item = ds[i]
        np.testing.assert_array_equal(item["latent"].numpy(), latents[i])
        assert item["latent"].dtype == torch.float32 and item["latent"].shape == (32,)
        assert (item["label"], item["index"]) == (cols["label"][i], cols["source_index"][i])
        assert item["psnr"] == pytest.approx(cols["psnr"][i])
    batch = ds[2:9]
    np.testing.assert_array_equal(batch["latent"].numpy(), latents[2:9])
    assert batch["label"].tolist() == cols["label"][2:9]
    fancy = ds[[5, 1, 5]]
    np.testing.assert_array_equal(fancy["latent"].numpy(), latents[[5, 1, 5]])
    mask = np.zeros(20, bool)
    mask[[3, 4]] = True
    assert ds[mask]["index"].tolist() == [cols["source_index"][3], cols["source_index"][4]]
    assert ds[torch.tensor([0, 2])]["latent"].shape == (2, 32)
    np.testing.assert_array_equal(ds.latents, latents)
    with pytest.raises(IndexError, match="index 20 is out of range"):
        ds[20]


def test_dataloader_with_two_workers_reads_every_row_in_order(phantom_dir):
    ds = mednf.load(phantom_dir, split="train")
    loader = torch.utils.data.DataLoader(ds, batch_size=6, num_workers=2)
    batches = list(loader)
    latents, cols = stored(phantom_dir, "train")
    np.testing.assert_array_equal(torch.cat([b["latent"] for b in batches]).numpy(), latents)
    assert torch.cat([b["label"] for b in batches]).tolist() == cols["label"]


def test_decode_equals_the_field_and_supersamples(phantom_dir):
    ds = mednf.load(phantom_dir, split="test")
    manifest = json.loads((phantom_dir / "mednf.json").read_text())
    cfg = EngineConfig.from_dict(manifest["engine"])
    theta = load_file(phantom_dir / "model.safetensors")
    latents, _ = stored(phantom_dir, "test")
    native = ds.decode([0, 3, 4])
    reference = decode(theta, torch.from_numpy(latents[[0, 3, 4]]), cfg.field, (32, 32))
    torch.testing.assert_close(native, reference)
    double = ds.decode([0, 3, 4], size=64)
    assert double.shape == (3, 1, 64, 64)
    pooled = F.avg_pool2d(double, 2)  # 2×2 means of the 64² decode sit at the 32² grid's neighbourhoods
    err = (pooled - native).abs()
    report(f"decode at 2× then 2×2 mean-pool vs native decode: mean |Δ| {err.mean():.4f}, max {err.max():.4f}")
    assert err.mean() < 0.02
    # the grid is linspace(-1, 1, n): every other point of a (2n-1)-point grid is the n-point grid itself
    fine = ds.decode([0, 3, 4], size=63)
    torch.testing.assert_close(fine[..., ::2, ::2], native, atol=1e-5, rtol=0)
    view = ds.with_images(16)
    assert view[1]["image"].shape == (1, 16, 16) and view[0:4]["image"].shape == (4, 1, 16, 16)
    assert "image" not in ds[1]
    with pytest.raises(ConfigError, match="size"):
        ds.decode([0], size=(4, 4, 4))


def test_to_hf_features_and_values(phantom_dir):
    import datasets

    ds = mednf.load(phantom_dir, split="test")
    hf = ds.to_hf()
    assert isinstance(hf, datasets.Dataset) and len(hf) == 20
    assert hf.features["latent"] == datasets.List(datasets.Value("float32"), length=32)
    assert hf.features["label"].names == ["0 lesions", "1 lesion", "2 lesions", "3 lesions"]
    latents, cols = stored(phantom_dir, "test")
    np.testing.assert_array_equal(np.asarray(hf["latent"], dtype=np.float32), latents)
    assert hf["label"] == cols["label"] and hf["index"] == cols["source_index"]
    np.testing.assert_allclose(hf["psnr"], cols["psnr"], rtol=1e-6)
    # no copy: the Arrow buffer is the numpy matrix
    buffer = hf.data.table.column("latent").chunk(0).values.buffers()[1]
    assert buffer.address == ds.latents.ctypes.data
    decoded = ds.to_hf(decode=True, size=8)[0:2]
    assert torch.as_tensor(np.asarray(decoded["image"][0])).shape == (1, 8, 8)
    everything = mednf.load(phantom_dir, split=None).to_hf()
    assert (isinstance(everything, datasets.DatasetDict)
            and set(everything) == {"train", "validation", "test"})  # HF names


def test_load_by_name_from_a_root_and_errors(phantom_dir, tmp_path):
    ds = mednf.load("phantomnf", split="test", root=phantom_dir.parent)
    assert ds.name == "PhantomNF" and isinstance(ds, MedNFDataset)
    with pytest.raises(NotFoundError, match="did you mean 'PhantomNF'"):
        mednf.load("phantomnf2", root=phantom_dir.parent)
    with pytest.raises(ConfigError, match="split = 'dev' is invalid"):
        mednf.load(phantom_dir, split="dev")
    (tmp_path / "half").mkdir()
    with pytest.raises(NotFoundError, match="not a complete MedNF dataset"):
        mednf.load(tmp_path / "half")
    info = mednf.info(phantom_dir)
    assert info["splits"]["test"]["count"] == 20 and info["latent_dim"] == 32 and info["license"] == "CC0 1.0"


def test_cli_info_and_decode(phantom_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["info", str(phantom_dir)])
    assert result.exit_code == 0 and "PhantomNF" in result.output and "test       20 samples" in result.output
    png = tmp_path / "grid.png"
    result = runner.invoke(main, ["decode", str(phantom_dir), "--indices", "0:5", "--size", "64", "--out", str(png)])
    assert result.exit_code == 0 and "beside their inputs" in result.output, result.output
    from PIL import Image

    # labelled rows input over reconstruction (no |error| row: 32² inputs, 64² reconstructions; a note says so),
    # 5 tiles of 112 px with 10 px gaps beside the row labels; title, captions and note (tests/test_plots.py)
    assert Image.open(png).size == (112 + 5 * 112 + 4 * 10 + 16, 46 + 2 * 112 + 6 + 36 + 25)
    npy = tmp_path / "x.npy"
    result = runner.invoke(main, ["decode", str(phantom_dir), "--split", "val", "--indices", "1,4", "--out", str(npy)])
    assert result.exit_code == 0
    np.testing.assert_allclose(np.load(npy), mednf.load(phantom_dir, "val").decode([1, 4]).numpy())
    for args, expected in ((["--indices", "99"], "out of range"), (["--out", str(tmp_path / "x.jpg")], ".png or .npy"),
                           (["--indices", "a:b"], "START:STOP"), (["--indices", "5:2"], "non-empty"),
                           (["--indices", "1:2:3:4"], "START:STOP")):
        result = runner.invoke(main, ["decode", str(phantom_dir), "--out", str(png), *args])
        assert result.exit_code == 2 and expected in result.output and result.output.count("\n") == 1


def test_batched_dataloader_gives_the_same_batches(phantom_dir):
    ds = mednf.load(phantom_dir, split="train")
    plain = list(torch.utils.data.DataLoader(ds, batch_size=6))
    batched = list(ds.dataloader(6, num_workers=2))
    assert [len(b["latent"]) for b in batched] == [6, 6, 6, 2]
    for a, b in zip(plain, batched):
        torch.testing.assert_close(a["latent"], b["latent"])
        assert a["label"].tolist() == b["label"].tolist() and a["index"].tolist() == b["index"].tolist()
    shuffled = torch.cat([b["index"] for b in ds.dataloader(6, shuffle=True,
                                                            generator=torch.Generator().manual_seed(0))])
    assert sorted(shuffled.tolist()) == list(range(20)) and shuffled.tolist() != list(range(20))
