"""``mednf.load("http://…/PhantomNF")``: a dataset built in this session, served by a real HTTP server on
127.0.0.1 (tests/range_server.py), read lazily by chunk and verified; compared with the local folder."""

from __future__ import annotations

import socket
import threading
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from range_server import RangeServer

import mednf
from mednf.cli import main
from mednf.errors import ConfigError, DownloadError, FormatError, NotFoundError
from mednf.io import http
from mednf.remote.lazy import LazyLatents, open_remote

CHUNK0 = "/PhantomNF/latents.zarr/train/c/0/0"  # rows 0..7 (the fixture builds blocks of 8 rows, 20 per split)
CHUNK2 = "/PhantomNF/latents.zarr/train/c/2/0"  # rows 16..19


@pytest.fixture
def server(phantom_dir):
    with RangeServer(phantom_dir.parent) as srv:
        yield srv


@pytest.fixture
def url(server):
    return f"{server.url}/PhantomNF"


def test_rows_labels_and_images_equal_the_local_folder(phantom_dir, url):
    remote, local = mednf.load(url, split=None), mednf.load(phantom_dir, split=None)
    for split in ("train", "val", "test"):
        r, loc = remote[split], local[split]
        assert len(r) == len(loc) == 20 and isinstance(r.latents, LazyLatents)
        for column in ("labels", "source_index", "psnr", "ssim"):
            np.testing.assert_array_equal(getattr(r, column), getattr(loc, column))
        for i in (0, 7, 8, 19, -1):
            a, b = r[i], loc[i]
            assert torch.equal(a["latent"], b["latent"]) and (a["label"], a["index"]) == (b["label"], b["index"])
        for index in (slice(2, 17), [19, 0, 8, 8], np.arange(20) % 3 == 0, torch.tensor([5, 16])):
            assert torch.equal(r[index]["latent"], loc[index]["latent"])
        np.testing.assert_array_equal(np.asarray(r.latents), loc.latents)
        np.testing.assert_array_equal(r.latents[3:11, 4:6], loc.latents[3:11, 4:6])
        np.testing.assert_array_equal(r.latents[..., 1], loc.latents[..., 1])
    test, local_test = remote["test"], local["test"]
    assert torch.equal(test.decode([0, 9, 19]), local_test.decode([0, 9, 19]))
    assert torch.equal(test.decode([1], size=48), local_test.decode([1], size=48))
    assert torch.equal(test.with_images(16)[4]["image"], local_test.with_images(16)[4]["image"])
    with pytest.raises(IndexError):
        test.latents[20]


def test_reads_fetch_only_the_chunks_they_need(url, server):
    ds = mednf.load(url, split="train")
    assert server.fetched() == ["/PhantomNF/mednf.json", "/PhantomNF/index.parquet"]
    assert len(ds) == 20 and ds.labels.shape == (20,)  # from the index: nothing more fetched
    server.clear()
    ds[0]
    assert server.fetched() == ["/PhantomNF/latents.zarr/train/zarr.json", CHUNK0]
    ds[7], ds[[1, 2, 3]], ds.latents[0:8]  # same chunk: served from memory
    assert server.fetched() == ["/PhantomNF/latents.zarr/train/zarr.json", CHUNK0]
    ds[[18, 4]]
    assert server.fetched()[2:] == [CHUNK2]
    ds.decode([0])
    ds.decode([1, 17])
    assert server.fetched()[3:] == ["/PhantomNF/model.safetensors"]
    assert all(method == "GET" and rng is None for method, _, rng in server.requests)  # whole files, no Range
    small = open_remote(url, cache_bytes=8 * 32 * 4).latent_rows("train")  # room for one chunk [8, 32]
    server.clear()
    small[0], small[17], small[1]
    assert server.fetched("/PhantomNF/latents.zarr/train/c/") == [CHUNK0, CHUNK2, CHUNK0]


def test_dataloader_workers_read_remote_rows(phantom_dir, url):
    ds, local = mednf.load(url, split="val"), mednf.load(phantom_dir, split="val")
    expected = torch.from_numpy(local.latents.copy())
    ds[0]  # the parent has read (zarr array, connections, cache): forked workers must make their own connections
    forked = torch.cat([b["latent"] for b in ds.dataloader(6, num_workers=2)])
    spawned = list(torch.utils.data.DataLoader(ds, batch_size=7, num_workers=1, multiprocessing_context="spawn"))
    assert torch.equal(forked, expected)
    assert torch.equal(torch.cat([b["latent"] for b in spawned]), expected)
    assert torch.cat([b["label"] for b in spawned]).tolist() == local.labels.tolist()


def test_a_tampered_chunk_is_an_error_naming_its_url_never_rows(url, server):
    good = server.body(CHUNK2)
    server.replaced[CHUNK2] = bytes(b ^ 1 for b in good)  # same size, other bytes
    ds = mednf.load(url, split="train", verify=False)  # verify=False: remote files are checked all the same
    with pytest.raises(FormatError, match=f"{server.url}{CHUNK2} has sha256 .* the manifest says"):
        ds[17]
    with pytest.raises(FormatError, match="c/2/0"):
        ds[[0, 19]]
    with pytest.raises(FormatError, match="c/2/0"):
        next(iter(ds.dataloader(20)))
    assert ds[3]["latent"].shape == (32,)  # other chunks are fine
    server.replaced[CHUNK2] = good[:-5]
    with pytest.raises(FormatError, match=f"{CHUNK2} sent {len(good) - 5} bytes, the manifest says {len(good)}"):
        ds[16]
    del server.replaced[CHUNK2]
    np.testing.assert_array_equal(ds[16]["latent"].numpy(), np.asarray(ds.latents)[16])  # nothing bad was kept


def test_missing_files_are_clear_errors(url, server, phantom_dir):
    server.status[CHUNK0] = 404
    ds = mednf.load(url, split="train")
    with pytest.raises(FormatError, match=f"{CHUNK0} does not exist on the server .* the manifest lists it"):
        ds[0]
    with pytest.raises(NotFoundError, match=r"no MedNF dataset at .*/Elsewhere: .*mednf.json does not exist"):
        mednf.load(f"{server.url}/Elsewhere")
    server.status["/PhantomNF/model.safetensors"] = 404
    with pytest.raises(FormatError, match="model.safetensors does not exist on the server"):
        mednf.load(url, split="test").decode([0])


def test_server_errors_timeouts_and_no_server_are_one_line(url, server, monkeypatch):
    ds = mednf.load(url, split="train")
    server.status[CHUNK0] = 500
    with pytest.raises(DownloadError, match=rf"could not read {server.url}{CHUNK0} \(HTTP 500.*try again later"):
        ds[0]
    monkeypatch.setattr(http, "TIMEOUT_S", 0.3)
    server.stalls["/PhantomNF/latents.zarr/val/zarr.json"] = 1.5
    with pytest.raises(DownloadError, match=r"val/zarr.json \(no answer for 0.3 s\); the server is slow"):
        mednf.load(url, split="val")[0]
    with socket.socket() as probe:  # a port where nothing listens
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(DownloadError, match=rf"127.0.0.1:{port}/X/mednf.json \(connection refused\); no server"):
        mednf.load(f"http://127.0.0.1:{port}/X")


def test_urls_that_cannot_be_read_are_refused_before_any_transfer(url):
    with pytest.raises(ConfigError, match="reading s3:// URLs needs the Python package s3fs: pip install s3fs"):
        mednf.load("s3://bucket/DermaNF")
    with pytest.raises(ConfigError, match="http:// only from 127.0.0.1"):
        mednf.load("http://example.org/DermaNF")
    with pytest.raises(ConfigError, match="source = 'zenodo' was given with a URL"):
        mednf.load(url, source="zenodo")


def test_cli_info_and_decode_read_a_url(phantom_dir, url, server, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["info", url])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"PhantomNF  ({url}, ") and " 20 samples" in result.output
    assert server.fetched() == ["/PhantomNF/mednf.json"]
    out = tmp_path / "x.npy"
    result = runner.invoke(main, ["decode", url, "--split", "test", "--indices", "0:3", "--out", str(out)])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(out), mednf.load(phantom_dir, split="test").decode([0, 1, 2]).numpy())
    server.status["/PhantomNF/model.safetensors"] = 503
    result = runner.invoke(main, ["decode", url, "--out", str(tmp_path / "y.npy")])
    assert result.exit_code == 1 and result.output.startswith("error: could not read http://127.0.0.1:")


def test_a_plain_static_server_without_range_is_enough(phantom_dir):
    handler = partial(type("Quiet", (SimpleHTTPRequestHandler,), {"log_message": lambda *a: None}),
                      directory=str(phantom_dir.parent))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        ds = mednf.load(f"http://127.0.0.1:{server.server_address[1]}/PhantomNF", split="val")
        np.testing.assert_array_equal(np.asarray(ds.latents), mednf.load(phantom_dir, split="val").latents)
    finally:
        server.shutdown()
        server.server_close()


def test_disk_cache_is_keyed_by_sha256_and_checked_again(url, server, tmp_path, monkeypatch):
    monkeypatch.setenv("MEDNF_HOME", str(tmp_path))
    monkeypatch.setenv("MEDNF_REMOTE_CACHE", "disk")
    first = mednf.load(url, split="train")[9]["latent"]
    cached = sorted(p for p in (tmp_path / ".remote").rglob("*") if p.is_file())
    assert len(cached) == 3  # index, zarr.json, chunk 1 (named by sha256)
    server.clear()
    assert torch.equal(mednf.load(url, split="train")[9]["latent"], first)
    assert server.fetched() == ["/PhantomNF/mednf.json"]
    for path in cached:
        path.write_bytes(b"damaged")
    server.clear()
    assert torch.equal(mednf.load(url, split="train")[9]["latent"], first)
    assert len(server.fetched()) == 4  # everything damaged was fetched again


def test_the_range_server_honours_range_and_head(phantom_dir, server):
    size = (phantom_dir / "mednf.json").stat().st_size
    whole = (phantom_dir / "mednf.json").read_bytes()

    def get(method: str = "GET", rng: str | None = None):
        request = urllib.request.Request(f"{server.url}/PhantomNF/mednf.json", method=method,
                                         headers={"Range": rng} if rng else {})
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as err:
            return err.code, dict(err.headers), b""

    status, headers, body = get("HEAD")
    assert (status, headers["Content-Length"], body) == (200, str(size), b"")
    assert get(rng="bytes=10-19")[::2] == (206, whole[10:20])
    assert get(rng="bytes=10-19")[1]["Content-Range"] == f"bytes 10-19/{size}"
    assert get(rng="bytes=-5")[2] == whole[-5:] and get(rng=f"bytes={size - 3}-")[2] == whole[-3:]
    for bad in (f"bytes={size}-", "bytes=5-2", "bytes=0-1,4-5", "lines=1-2"):
        status, headers, _ = get(rng=bad)
        assert (status, headers["Content-Range"]) == (416, f"bytes */{size}")
