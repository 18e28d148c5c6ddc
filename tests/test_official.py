"""Import of the official MedNF release layout: exact decode against a reference forward, refusal of
foreign pickles without running them, and the end-to-end download of an official-layout Zenodo record."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from loopback import Loopback
from official_fixture import make_model, reference_forward, write_release

import mednf
from mednf.cli import main
from mednf.engine import field as nf
from mednf.errors import DownloadError, OfficialFormatError, OfficialImportError
from mednf.format.reader import verify_dataset
from mednf.remote.official import read_official_model
from mednf.remote.official_import import import_official
from mednf.sources.phantoms import phantom_source
from mednf.sources.spec import load_builder

SHARED_MEDMNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "medmnist"
COUNTS = {"train": 10, "val": 6, "test": 7}  # datapoints fitted per split; batch 4 → 8, 4, 4 kept
P = 12


class Payload:
    """Runs code when unpickled: writes ``marker``. Any reader that unpickles it fails the test."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (exec, (f"open({str(self.marker)!r}, 'w').write('ran')",))


def _labels(name: str, split: str, n: int) -> torch.Tensor:
    if name == "PhantomNF":
        return torch.from_numpy(phantom_source(load_builder("phantomnf"))[split].labels[:n])
    with np.load(SHARED_MEDMNIST / "breastmnist_64.npz") as data:
        return torch.from_numpy(data[f"{split}_labels"][:n].astype(np.int64))


def _release(root: Path, name: str = "PhantomNF", *, seed: int = 0, **model_kwargs):
    model = make_model(latent_dim=P, **model_kwargs)
    gen = torch.Generator().manual_seed(seed)
    splits = {s: (torch.randn(n, P, generator=gen) * 0.3, _labels(name, s, n)) for s, n in COUNTS.items()}
    write_release(root, model, splits)
    return model, splits


def test_import_round_trip_decodes_like_the_reference_forward(tmp_path):
    model, splits = _release(tmp_path / "release")
    out = import_official(tmp_path / "release", "phantomnf", tmp_path / "PhantomNF", progress=False)
    manifest = verify_dataset(out).to_json()  # sha256 of every file, one index row per sample
    origin = manifest["origin"]
    assert origin["kind"] == "official-release" and origin["doi"] == "10.5281/zenodo.14898708"
    assert origin["w0s"] == [10.0, 15.0, 20.0] and manifest["source"]["labels_checked"]
    # the official fit dropped the last incomplete batch: 8 of 10 train rows, the rest of the 600 listed as missing
    assert origin["missing"]["train"] == list(range(8, 600))
    assert origin["missing"]["val"] == list(range(4, 100)) and origin["missing"]["test"] == list(range(4, 200))
    field = manifest["engine"]["field"]
    assert (field["num_layers"], field["hidden_dim"], field["latent_dim"]) == (4, 16, P)
    for split, (latents, labels) in splits.items():
        ds = mednf.load(out, split=split)
        kept = len(latents) // 4 * 4
        assert len(ds) == kept
        np.testing.assert_array_equal(ds.source_index, np.arange(kept))
        np.testing.assert_array_equal(ds.latents, latents[:kept].numpy())
        np.testing.assert_array_equal(ds.labels, labels[:kept, 0].numpy())
        assert np.isnan(ds.psnr).all()  # not measured unless asked
    # each file saved a row of a batch tensor, so its storage holds the whole batch; only the row is imported
    row = torch.load(tmp_path / "release" / "train" / "datapoint_5.pt", weights_only=True)["modulations"]
    assert row.untyped_storage().nbytes() == 4 * P * 4 and row.storage_offset() == P
    ds = mednf.load(out, split="test")
    coords = nf.coordinate_grid((64, 64))
    with torch.no_grad():
        reference = torch.stack([reference_forward(model, phi, coords) for phi in splits["test"][0][:4]])
    ours = ds.decode([0, 1, 2, 3])  # [4, 1, 64, 64], clamped
    np.testing.assert_allclose(ours.numpy(), nf.from_points(reference.clamp(0, 1), (64, 64)).numpy(), atol=2e-4)
    assert "official MedNF release" in (out / "README.md").read_text()


def test_state_dict_model_needs_w0_and_then_matches(tmp_path):
    model = make_model(latent_dim=P, w0=7.0, increment=3.0)
    splits = {s: (torch.randn(n, P) * 0.3, _labels("PhantomNF", s, n)) for s, n in COUNTS.items()}
    write_release(tmp_path / "release", model, splits, state_dict_only=True)
    with pytest.raises(OfficialFormatError,
                       match="plain state dict without the layers' w0; give both --w0 and --w0-increment"):
        read_official_model(tmp_path / "release" / "model.pt")
    loaded = read_official_model(tmp_path / "release" / "model.pt", w0=7.0, w0_increment=3.0)
    assert loaded.w0s == (7.0, 10.0, 13.0) and not loaded.whole_module
    phi, coords = torch.randn(3, P) * 0.3, nf.coordinate_grid((9, 9))
    with torch.no_grad():
        reference = torch.stack([reference_forward(model, p, coords) for p in phi])
    torch.testing.assert_close(nf.forward(loaded.theta, phi, coords, loaded.field), reference, atol=2e-4, rtol=0)


def test_whole_module_w0s_win_and_disagreement_is_an_error(tmp_path):
    _release(tmp_path / "release")
    with pytest.raises(OfficialFormatError, match="disagree with the w0s stored"):
        read_official_model(tmp_path / "release" / "model.pt", w0=30.0)


@pytest.mark.parametrize("kwargs, message", [({"modulate_scale": True}, "scale modulation"),
                                             ({"skip": False}, "without skip connections")])
def test_unsupported_official_variants_are_refused(tmp_path, kwargs, message):
    _release(tmp_path / "release", **kwargs)
    with pytest.raises(OfficialFormatError, match=message):
        read_official_model(tmp_path / "release" / "model.pt")


def test_malicious_model_pt_is_refused_without_running_it(tmp_path):
    _release(tmp_path / "release")
    marker = tmp_path / "ran.txt"
    torch.save({"model": Payload(marker)}, tmp_path / "release" / "model.pt")
    with pytest.raises(OfficialFormatError, match="references builtins.exec.*refused without unpickling"):
        import_official(tmp_path / "release", "phantomnf", tmp_path / "out", progress=False)
    assert not marker.exists() and not (tmp_path / "out").exists()
    result = CliRunner().invoke(main, ["import-official", str(tmp_path / "release"), "--name", "PhantomNF",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "builtins.exec" in result.output and "Traceback" not in result.output
    assert not marker.exists()


def test_malicious_datapoint_is_refused_without_running_it(tmp_path):
    _release(tmp_path / "release")
    marker = tmp_path / "ran.txt"
    torch.save({"modulations": torch.zeros(P), "label": Payload(marker)},
               tmp_path / "release" / "val" / "datapoint_2.pt")
    with pytest.raises(OfficialFormatError, match="datapoint_2.pt could not be read with torch.load"):
        import_official(tmp_path / "release", "phantomnf", tmp_path / "out", progress=False)
    assert not marker.exists() and not (tmp_path / "out").exists()


def test_release_of_another_dataset_is_refused(tmp_path):
    _release(tmp_path / "release", out_size=3)  # an RGB model named as the gray PhantomNF
    with pytest.raises(OfficialImportError, match=r"3 channel\(s\), PhantomNF has 2D images with 1; is --name right"):
        import_official(tmp_path / "release", "phantomnf", tmp_path / "out", progress=False)
    _release(tmp_path / "release2")
    torch.save({"modulations": torch.zeros(P), "label": torch.tensor([1])}, tmp_path / "release2/train/datapoint_0.pt")
    torch.save({"modulations": torch.zeros(P), "label": torch.tensor([0])}, tmp_path / "release2/train/datapoint_1.pt")
    with pytest.raises(OfficialImportError, match="train labels differ"):
        import_official(tmp_path / "release2", "phantomnf", tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not (SHARED_MEDMNIST / "breastmnist_64.npz").is_file(),
                    reason="needs ../shared/data/medmnist/breastmnist_64.npz (real MedMNIST file)")
def test_import_against_the_real_breastmnist_labels_and_measure(tmp_path):
    _release(tmp_path / "release", "BreastNF")
    out = import_official(tmp_path / "release", "BreastNF", tmp_path / "BreastNF", medmnist_root=SHARED_MEDMNIST,
                          measure=True, progress=False)
    manifest = verify_dataset(out).to_json()
    assert manifest["source"]["labels_checked"] and manifest["source"]["file"] == "breastmnist_64.npz"
    assert manifest["origin"]["missing"]["train"] == list(range(8, 546))
    report = mednf.evaluate(out, ["test"], medmnist_root=SHARED_MEDMNIST, progress=False)
    np.testing.assert_allclose(report.splits["test"].psnr, mednf.load(out, "test").psnr, atol=1e-3)


# ------------------------------------------------------------------------------------------ Zenodo


RECORD = "14898708"


def _zip(root: Path, prefix: str, extra: dict[str, bytes] | None = None) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for path in sorted(root.rglob("*")):
            if path.is_file():
                zf.write(path, f"{prefix}/{path.relative_to(root).as_posix()}")
        for name, body in (extra or {}).items():
            zf.writestr(name, body)
    return buffer.getvalue()


@pytest.fixture
def official_zenodo(tmp_path, monkeypatch):
    """A loopback Zenodo serving an official-layout record; ``publish({key: body})`` sets its files."""
    with Loopback() as server:
        def publish(files: dict[str, bytes], md5: dict[str, str] | None = None) -> None:
            listing = []
            for key, body in files.items():
                url = f"{server.url}/api/records/{RECORD}/files/{key}/content"
                server.files[f"/api/records/{RECORD}/files/{key}/content"] = body
                listing.append({"key": key, "size": len(body), "links": {"self": url},
                                "checksum": "md5:" + (md5 or {}).get(key, hashlib.md5(body).hexdigest())})
            server.files[f"/api/records/{RECORD}"] = json.dumps({"id": int(RECORD), "files": listing}).encode()

        (tmp_path / "registry.toml").write_text(f'[PhantomNF]\nzenodo_record = "{RECORD}"\nlayout = "official"\n')
        monkeypatch.setenv("MEDNF_REGISTRY", str(tmp_path / "registry.toml"))
        monkeypatch.setenv("MEDNF_ZENODO_URL", server.url)
        monkeypatch.delenv("MEDNF_OFFLINE", raising=False)
        server.publish = publish
        server.cache = tmp_path / "cache"
        yield server


def test_official_record_downloads_verifies_and_imports(official_zenodo, tmp_path):
    _, splits = _release(tmp_path / "release")
    _release(tmp_path / "other", seed=1)
    official_zenodo.publish({"DermaNF.zip": _zip(tmp_path / "other", "DermaNF"),
                             "phantomnf.zip": _zip(tmp_path / "release", "PhantomNF")})
    ds = mednf.load("PhantomNF", split="test", root=official_zenodo.cache)
    assert ds.root == official_zenodo.cache / "PhantomNF"
    assert official_zenodo.requests == [f"/api/records/{RECORD}", f"/api/records/{RECORD}/files/phantomnf.zip/content"]
    np.testing.assert_array_equal(ds.latents, splits["test"][0][:4].numpy())
    origin = ds.manifest.origin
    assert origin["zenodo_record"] == RECORD and list(origin["files"]) == ["phantomnf.zip"]
    assert origin["files"]["phantomnf.zip"]["md5"] == hashlib.md5(_zip(tmp_path / "release", "PhantomNF")).hexdigest()
    assert origin["missing"]["test"] == list(range(4, 200))
    leftover = [p.name for p in official_zenodo.cache.iterdir() if p.name.startswith(".") and p.name != ".downloads"
                and not p.name.endswith(".lock")]  # dataset locks stay: empty, and held only while in use
    assert leftover == [] and list((official_zenodo.cache / ".downloads").iterdir()) == []
    mednf.load("PhantomNF", split="val", root=official_zenodo.cache)  # cached: no new request
    assert len(official_zenodo.requests) == 2


def test_official_record_without_the_dataset_lists_its_files(official_zenodo, tmp_path):
    _release(tmp_path / "other")
    official_zenodo.publish({"DermaNF.zip": _zip(tmp_path / "other", "DermaNF"), "README.md": b"hi"})
    with pytest.raises(DownloadError,
                       match=r"no zip/tar archive named like 'PhantomNF' \(it holds: DermaNF.zip, README.md\)"):
        mednf.load("PhantomNF", root=official_zenodo.cache)


def test_official_record_with_wrong_md5_keeps_nothing(official_zenodo, tmp_path):
    _release(tmp_path / "release")
    official_zenodo.publish({"PhantomNF.zip": _zip(tmp_path / "release", "PhantomNF")}, md5={"PhantomNF.zip": "0" * 32})
    with pytest.raises(DownloadError, match="md5 .* expected 0000"):
        mednf.load("PhantomNF", root=official_zenodo.cache)
    assert not (official_zenodo.cache / "PhantomNF").exists()


def test_official_record_with_a_malicious_pickle_is_refused_without_running_it(official_zenodo, tmp_path):
    _release(tmp_path / "release")
    marker = tmp_path / "ran.txt"
    torch.save(Payload(marker), tmp_path / "release" / "model.pt")
    official_zenodo.publish({"PhantomNF.zip": _zip(tmp_path / "release", "PhantomNF")})
    result = CliRunner().invoke(main, ["download", "PhantomNF", "--root", str(official_zenodo.cache)])
    assert result.exit_code == 1 and "builtins.exec" in result.output and "refused" in result.output
    assert not marker.exists() and not (official_zenodo.cache / "PhantomNF").exists()
    assert [p.name for p in official_zenodo.cache.iterdir()
            if p.name != ".downloads" and not p.name.endswith(".lock")] == []


@pytest.mark.parametrize("entry", ["../evil.txt", "/abs/evil.txt"])
def test_official_zip_with_unsafe_paths_is_refused(official_zenodo, tmp_path, entry):
    _release(tmp_path / "release")
    official_zenodo.publish({"PhantomNF.zip": _zip(tmp_path / "release", "PhantomNF", {entry: b"x"})})
    with pytest.raises(DownloadError, match="unsafe entry"):
        mednf.load("PhantomNF", root=official_zenodo.cache)
    assert not (tmp_path / "evil.txt").exists() and not (official_zenodo.cache / "PhantomNF").exists()


def test_official_tar_with_a_symlink_is_refused(official_zenodo, tmp_path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        link = tarfile.TarInfo("PhantomNF/model.pt")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    official_zenodo.publish({"PhantomNF.tar": buffer.getvalue()})
    with pytest.raises(DownloadError, match="unsafe entry 'PhantomNF/model.pt'"):
        mednf.load("PhantomNF", root=official_zenodo.cache)


def test_damaged_releases_get_one_line_errors(tmp_path):
    _release(tmp_path / "r1")
    (tmp_path / "r1" / "train" / "datapoint_2.pt").unlink()  # a hole inside the split, not a dropped last batch
    with pytest.raises(OfficialImportError, match=r"lacks datapoints \[2\] inside the split"):
        import_official(tmp_path / "r1", "phantomnf", tmp_path / "out", progress=False)
    _release(tmp_path / "r2")
    (tmp_path / "r2" / "val" / "datapoint_01.pt").write_bytes((tmp_path / "r2" / "val" / "datapoint_1.pt").read_bytes())
    with pytest.raises(OfficialFormatError, match="both datapoint_0?1.pt and datapoint_0?1.pt for sample 1"):
        import_official(tmp_path / "r2", "phantomnf", tmp_path / "out", progress=False)
    _release(tmp_path / "r3")
    torch.save(make_model(latent_dim=P).state_dict(), tmp_path / "r3" / "model.pt")
    with pytest.raises(OfficialFormatError, match="give both --w0 and --w0-increment"):
        read_official_model(tmp_path / "r3" / "model.pt", w0=10.0)
    torch.save(make_model(latent_dim=P).state_dict(), tmp_path / "r3" / "model.pt", pickle_protocol=4)
    with pytest.raises(OfficialFormatError, match=r"not a readable torch.save file \(Unsupported operand"):
        read_official_model(tmp_path / "r3" / "model.pt")
    (tmp_path / "file").write_text("x")
    with pytest.raises(OfficialImportError, match="exists and is not empty"):
        import_official(tmp_path / "r3", "phantomnf", tmp_path / "file", progress=False)
    assert not (tmp_path / "out").exists()


def test_registry_pins_win_over_name_matching(official_zenodo, tmp_path):
    _, splits = _release(tmp_path / "release")
    body = _zip(tmp_path / "release", "PhantomNF")
    official_zenodo.publish({"PhantomNF-notes.md": b"# notes", "mednf-phantomnf-v1.zip": body})
    registry = tmp_path / "registry.toml"
    base = registry.read_text()
    registry.write_text(base + f'files = {{ "mednf-phantomnf-v1.zip" = {{ md5 = "{"0" * 32}", '
                               f'size = {len(body)} }} }}\n')
    with pytest.raises(DownloadError, match="the registry pins md5 0000.*refusing it"):
        mednf.load("PhantomNF", root=official_zenodo.cache)
    registry.write_text(base + f'files = {{ "mednf-phantomnf-v1.zip" = {{ md5 = "{hashlib.md5(body).hexdigest()}", '
                               f'size = {len(body)} }} }}\n')
    ds = mednf.load("PhantomNF", split="train", root=official_zenodo.cache)  # the .md is never fetched
    np.testing.assert_array_equal(ds.latents, splits["train"][0][:8].numpy())
    assert ds.manifest.origin["files"]["mednf-phantomnf-v1.zip"]["pinned_by_registry"] is True
    assert not any("notes" in r for r in official_zenodo.requests)


def test_a_datapoint_index_beyond_any_split_is_one_line(tmp_path):
    _release(tmp_path / "release")
    shutil.copy(tmp_path / "release" / "train" / "datapoint_0.pt",
                tmp_path / "release" / "train" / "datapoint_99999999999999999999.pt")
    result = CliRunner().invoke(main, ["import-official", str(tmp_path / "release"), "--name", "PhantomNF",
                                       "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "larger than any split" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_model_pt_that_is_not_a_file_is_named_so(tmp_path):
    _release(tmp_path / "release")
    (tmp_path / "release" / "model.pt").unlink()
    os.mkfifo(tmp_path / "release" / "model.pt")
    with pytest.raises(OfficialFormatError, match="model.pt is not a regular file"):
        import_official(tmp_path / "release", "phantomnf", tmp_path / "out", progress=False)
