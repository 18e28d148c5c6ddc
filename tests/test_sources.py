"""MedMNIST sources: md5 verification, downloads from a real loopback HTTP server, and bad files."""

from __future__ import annotations

import hashlib
import io
import socket
import warnings

import numpy as np
import pytest
from loopback import Loopback

from mednf.errors import SourceError
from mednf.sources.base import SourceWarning
from mednf.sources.read import load_source
from mednf.sources.spec import load_builder

BREAST = load_builder("breastnf")


def make_npz(counts=(6, 3, 4), size=64, rgb=False, seed=0, **replace) -> bytes:
    """A MedMNIST-layout npz (gray or RGB uint8 images, labels [N, 1]); ``replace`` swaps arrays."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in zip(("train", "val", "test"), counts):
        shape = (n, size, size, 3) if rgb else (n, size, size)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = rng.integers(0, 2, (n, 1), dtype=np.uint8)
    arrays.update(replace)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def official_like(tmp_path, body: bytes):
    """A builder whose official md5 is that of ``body`` (so the generated file counts as official)."""
    import dataclasses

    md5 = hashlib.md5(body).hexdigest()
    source = dataclasses.replace(BREAST.source, md5={"64": md5})
    return dataclasses.replace(BREAST, source=source, splits={"train": 6, "val": 3, "test": 4}), md5


def test_download_verifies_md5_then_renames(tmp_path, monkeypatch):
    body = make_npz()
    spec, md5 = official_like(tmp_path, body)
    with Loopback() as server:
        server.files["/files/breastmnist_64.npz"] = body
        monkeypatch.setenv("MEDNF_MEDMNIST_URL", server.url + "/files/{file}")
        data = load_source(spec, root=tmp_path, progress=False)
        assert (tmp_path / "breastmnist_64.npz").read_bytes() == body
        assert data.description["official"] and data.description["md5"] == md5
        assert data.counts() == {"train": 6, "val": 3, "test": 4}
        assert data.splits["train"].images.shape == (6, 1, 64, 64)
        load_source(spec, root=tmp_path, progress=False)  # second call: verified local copy, no request
        assert server.requests == ["/files/breastmnist_64.npz"]


@pytest.mark.parametrize("fault, message", [("garbage", "has md5"), ("truncate", "truncated|could not be downloaded"),
                                            ("error", "could not be downloaded")])
def test_failed_download_leaves_nothing_behind(tmp_path, monkeypatch, fault, message):
    body = make_npz()
    spec, _ = official_like(tmp_path, body)
    with Loopback() as server:
        server.files["/files/breastmnist_64.npz"] = body
        server.faults["/files/breastmnist_64.npz"] = fault
        monkeypatch.setenv("MEDNF_MEDMNIST_URL", server.url + "/files/{file}")
        with pytest.raises(SourceError, match=message) as err:
            load_source(spec, root=tmp_path, progress=False)
    assert "breastmnist_64.npz" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no partial file, nothing under the real name


def test_no_network_names_url_and_where_to_put_the_file(tmp_path, monkeypatch):
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("MEDNF_MEDMNIST_URL", f"http://127.0.0.1:{port}/{{file}}")
    with pytest.raises(SourceError) as err:
        load_source(BREAST, root=tmp_path, progress=False)
    message = str(err.value)
    assert f"127.0.0.1:{port}/breastmnist_64.npz" in message and str(tmp_path / "breastmnist_64.npz") in message


def test_wrong_md5_in_root_is_refused_with_both_hashes(tmp_path):
    body = make_npz(counts=(546, 78, 156))
    (tmp_path / "breastmnist_64.npz").write_bytes(body)
    with pytest.raises(SourceError) as err:
        load_source(BREAST, root=tmp_path, progress=False)
    assert hashlib.md5(body).hexdigest() in str(err.value) and BREAST.source.md5["64"] in str(err.value)


def test_own_smaller_npz_is_accepted_with_a_warning(tmp_path):
    path = tmp_path / "mine.npz"
    path.write_bytes(make_npz(counts=(5, 2, 3)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_source(BREAST, source_npz=path, progress=False)
    assert any(issubclass(w.category, SourceWarning) and "not the official" in str(w.message) for w in caught)
    assert data.counts() == {"train": 5, "val": 2, "test": 3} and not data.description["official"]


def test_rgb_is_channels_first(tmp_path):
    derma = load_builder("dermanf")
    path = tmp_path / "d.npz"
    images = np.random.default_rng(1).integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    path.write_bytes(make_npz(counts=(4, 2, 2), rgb=True, train_images=images))
    with pytest.warns(SourceWarning):
        data = load_source(derma, source_npz=path, progress=False)
    np.testing.assert_array_equal(data.splits["train"].images[2, 1], images[2, :, :, 1])


@pytest.mark.parametrize("replace, message", [
    ({"val_labels": None}, "lacks \\['val_labels'\\]"),
    ({"train_images": np.zeros((6, 32, 32), np.uint8)}, "has shape \\(6, 32, 32\\)"),
    ({"test_images": np.full((4, 64, 64), np.nan, np.float32)}, "NaN"),
    ({"test_images": np.zeros((4, 64, 64), np.int32)}, "dtype int32"),
    ({"train_labels": np.full((6, 1), 7, np.uint8)}, "values \\[7\\], outside the 2 label names"),
    ({"val_images": np.zeros((0, 64, 64), np.uint8), "val_labels": np.zeros((0, 1), np.uint8)}, "val_images is empty"),
])
def test_bad_npz_content_is_a_clear_error(tmp_path, replace, message):
    path = tmp_path / "bad.npz"
    path.write_bytes(make_npz(**replace))
    with pytest.raises(SourceError, match=message):
        load_source(BREAST, source_npz=path, progress=False)


def test_corrupt_npz_is_a_clear_error(tmp_path):
    path = tmp_path / "corrupt.npz"
    path.write_bytes(make_npz()[:500])
    with pytest.raises(SourceError, match="not a readable npz"):
        load_source(BREAST, source_npz=path, progress=False)
