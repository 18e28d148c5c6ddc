"""HF Hub: `mednf export --format hf` is loadable by `datasets.load_dataset`, and `mednf.load(...,
source="hf")` downloads it with huggingface_hub.snapshot_download from a real loopback server that speaks
the Hub routes it uses (revision, tree, HEAD/GET resolve), then verifies and rebuilds mednf's format."""

from __future__ import annotations

import hashlib
import json
import re

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import TINY
from loopback import Loopback

import mednf
from mednf.cli import main
from mednf.errors import DownloadError
from mednf.tasks.export import export_hf

REPO = "mednf/PhantomNF"
SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def exported(phantom_dir, tmp_path_factory):
    return export_hf(phantom_dir, tmp_path_factory.mktemp("hf") / "PhantomNF")


def test_load_dataset_on_the_export_equals_the_dataset(exported, phantom_dir):
    import datasets

    loaded = datasets.load_dataset(str(exported))
    assert set(loaded) == {"train", "validation", "test"}  # the Hugging Face names
    assert set(mednf.load(phantom_dir, split=None).to_hf()) == {"train", "validation", "test"}
    for split in ("train", "val", "test"):
        ours = mednf.load(phantom_dir, split=split)
        theirs = loaded["validation" if split == "val" else split]
        assert theirs.features == ours.hf_features()
        np.testing.assert_array_equal(np.asarray(theirs["latent"], dtype=np.float32), ours.latents)
        assert theirs["label"] == ours.labels.tolist() and theirs["index"] == ours.source_index.tolist()
    card = (exported / "README.md").read_text()
    assert "configs:" in card and "data/train-*.parquet" in card


@pytest.fixture(scope="module")
def other_phantom(tmp_path_factory):
    """Another real PhantomNF, same name, other content: 12 samples per split, 16-value latents."""
    from mednf.building.pipeline import BuildOptions, build

    out = tmp_path_factory.mktemp("other") / "PhantomNF"
    build("phantomnf", BuildOptions(out=out, **{**TINY, "max_samples": 12}, overrides={"field": {"latent_dim": 16}}))
    return out


def card_configs(folder) -> list[dict]:
    from huggingface_hub import DatasetCard

    return DatasetCard.load(folder / "README.md").data.configs


def test_two_exports_with_one_name_load_their_own_rows_from_one_cache(exported, phantom_dir, other_phantom,
                                                                      tmp_path):
    import datasets

    second = export_hf(other_phantom, tmp_path / "second" / "PhantomNF")
    cache = str(tmp_path / "hf-cache")  # one HF cache for both, as on a user's machine
    for _ in range(2):  # in turn, twice: no load may be served the other export's cached rows
        for source, folder, shape in ((phantom_dir, exported, (20, 32)), (other_phantom, second, (12, 16))):
            loaded = datasets.load_dataset(str(folder), cache_dir=cache)
            for split in ("train", "val", "test"):
                latents = np.asarray(loaded["validation" if split == "val" else split]["latent"], dtype=np.float32)
                assert latents.shape == shape, (folder, split)
                np.testing.assert_array_equal(latents, mednf.load(source, split=split).latents)
    names = [card_configs(folder)[0]["config_name"] for folder in (exported, second)]
    assert names[0] != names[1]


def test_the_export_config_is_named_by_its_content_and_is_the_default(exported, phantom_dir, tmp_path):
    import shutil

    import datasets

    stale = tmp_path / "again" / "PhantomNF" / "data" / "train-00001-of-00002.parquet"  # an earlier export's shard
    shutil.copytree(exported, stale.parent.parent)
    shutil.copyfile(exported / "data" / "train-00000-of-00001.parquet", stale)
    again = export_hf(phantom_dir, tmp_path / "again" / "PhantomNF")
    assert not stale.exists()  # it would match data/train-*.parquet: 40 train rows
    (config,) = card_configs(exported)
    assert card_configs(again) == [config]  # the same dataset exported again: the same identity
    assert config["default"] is True and re.fullmatch(r"mednf-[0-9a-f]{16}", config["config_name"]), config
    assert datasets.get_dataset_config_names(str(exported)) == [config["config_name"]]
    cache = str(tmp_path / "hf-cache")
    by_name = datasets.load_dataset(str(exported), config["config_name"], cache_dir=cache)
    by_default = datasets.load_dataset(str(exported), cache_dir=cache)
    assert by_name["test"]["latent"] == by_default["test"]["latent"]
    assert f"/{config['config_name']}/" in by_default["test"].cache_files[0]["filename"]


def publish(server: Loopback, folder) -> None:
    """Serve ``folder`` as dataset repo mednf/PhantomNF at revision main = SHA (the routes snapshot_download uses)."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    rel = {p: p.relative_to(folder).as_posix() for p in files}
    server.files[f"/api/datasets/{REPO}/revision/main"] = json.dumps(
        {"id": REPO, "sha": SHA, "siblings": [{"rfilename": r} for r in rel.values()]}).encode()
    server.files[f"/api/datasets/{REPO}/tree/{SHA}"] = json.dumps(
        [{"type": "file", "path": r, "size": p.stat().st_size, "oid": hashlib.sha1(p.read_bytes()).hexdigest()}
         for p, r in rel.items()]).encode()
    for p, r in rel.items():
        path = f"/datasets/{REPO}/resolve/{SHA}/{r}"
        server.files[path] = p.read_bytes()
        server.headers[path] = {"X-Repo-Commit": SHA, "ETag": f'"{hashlib.sha1(p.read_bytes()).hexdigest()}"'}


@pytest.fixture
def hub(exported, tmp_path, monkeypatch):
    """A loopback Hub serving the export as dataset repo mednf/PhantomNF (revision main = SHA)."""
    with Loopback() as server:
        server.publish = lambda folder: publish(server, folder)
        server.publish(exported)
        (tmp_path / "registry.toml").write_text(f'[PhantomNF]\nhf_repo = "{REPO}"\nhf_revision = "main"\n')
        monkeypatch.setenv("MEDNF_REGISTRY", str(tmp_path / "registry.toml"))
        monkeypatch.setenv("MEDNF_HF_ENDPOINT", server.url)
        monkeypatch.delenv("MEDNF_OFFLINE", raising=False)
        server.cache = tmp_path / "cache"
        yield server


def test_hf_download_rebuilds_a_verified_dataset(hub, phantom_dir, monkeypatch):
    ds = mednf.load("PhantomNF", split="test", root=hub.cache, source="hf")
    original = mednf.load(phantom_dir, split="test")
    np.testing.assert_array_equal(ds.latents, original.latents)
    np.testing.assert_array_equal(ds.labels, original.labels)
    torch_items = ds[0:3]
    assert torch_items["latent"].shape == (3, 32)
    from mednf.format.reader import verify_dataset

    manifest = verify_dataset(hub.cache / "PhantomNF").to_json()
    assert manifest["origin"]["hf_repo"] == REPO
    for name in ("training.csv", "training.png", "reconstructions.png"):  # what the card shows came along, intact
        assert (hub.cache / "PhantomNF" / name).read_bytes() == (phantom_dir / name).read_bytes()
        assert name in manifest["files"]
    card = (hub.cache / "PhantomNF" / "README.md").read_text()
    assert "](reconstructions.png)" in card and "](training.png)" in card
    count = len(hub.requests)
    monkeypatch.setenv("MEDNF_OFFLINE", "1")
    mednf.load("PhantomNF", split="train", root=hub.cache, source="hf")  # cached: no request
    assert len(hub.requests) == count
    assert leftovers(hub.cache) == ["PhantomNF"]  # no snapshot or rebuild folder left


def test_an_older_export_rebuilds_with_a_card_without_links(hub, exported, phantom_dir, tmp_path):
    """An HF export of an older mednf: no figures (the copy's card must not link them) and the validation
    shard named "val" (still found)."""
    import shutil

    older = tmp_path / "older"
    shutil.copytree(exported, older)
    for name in ("training.csv", "training.png", "reconstructions.png"):
        (older / name).unlink()
    data = older / "data"
    (data / "validation-00000-of-00001.parquet").rename(data / "val-00000-of-00001.parquet")
    hub.files.clear()
    hub.publish(older)
    mednf.load("PhantomNF", split="test", root=hub.cache, source="hf")
    rebuilt = hub.cache / "PhantomNF"
    np.testing.assert_array_equal(mednf.load(rebuilt, "val").latents, mednf.load(phantom_dir, "val").latents)
    assert not (rebuilt / "reconstructions.png").exists()
    card = (rebuilt / "README.md").read_text()
    assert "reconstructions.png" not in card and "training.png" not in card


@pytest.mark.parametrize("target, fault, message", [
    ("data/validation-00000-of-00001.parquet", "garbage",
     "validation-00000-of-00001.parquet of mednf/PhantomNF is not a readable"),
    ("reconstructions.png", "garbage", "reconstructions.png of mednf/PhantomNF has sha256"),
    ("model.safetensors", "garbage", "sha256|could not download"),
    ("mednf.json", "error", "could not download"),
])
def test_hf_bad_content_is_detected_and_nothing_kept(hub, target, fault, message):
    hub.faults[f"/datasets/{REPO}/resolve/{SHA}/{target}"] = fault
    with pytest.raises(DownloadError, match=message):
        mednf.load("PhantomNF", root=hub.cache, source="hf")
    assert not hub.cache.exists() or leftovers(hub.cache) == []
    hub.faults.clear()
    assert len(mednf.load("PhantomNF", split="val", root=hub.cache, source="hf")) == 20  # retry works


def test_hf_shard_with_other_labels_is_refused(hub, exported, tmp_path):
    """θ and latents intact, labels shifted and source indices reversed: refused, not signed into a manifest."""
    import shutil

    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    forged = tmp_path / "forged"
    shutil.copytree(exported, forged)
    shard = forged / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(shard)
    label = pc.cast(pc.bit_wise_and(pc.add(table["label"].cast(pa.int64()), 1), 3), table.schema.field("label").type)
    table = table.set_column(table.schema.get_field_index("label"), table.schema.field("label"), label)
    table = table.set_column(table.schema.get_field_index("index"), "index", pa.array(table["index"].to_numpy()[::-1]))
    pq.write_table(table, shard)
    hub.publish(forged)
    with pytest.raises(DownloadError, match="index rows .* differ from its manifest"):
        mednf.load("PhantomNF", root=hub.cache, source="hf")
    assert not hub.cache.exists() or leftovers(hub.cache) == []


def test_hf_offline_without_a_copy(hub, monkeypatch):
    monkeypatch.setenv("MEDNF_OFFLINE", "1")
    with pytest.raises(DownloadError, match="MEDNF_OFFLINE"):
        mednf.load("PhantomNF", root=hub.cache, source="hf")
    assert hub.requests == []


def test_cli_export_hf_and_download_hf(hub, phantom_dir, tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["export", str(phantom_dir), "--format", "hf", "--out", str(tmp_path / "x")])
    assert result.exit_code == 0 and (tmp_path / "x" / "data" / "test-00000-of-00001.parquet").is_file()
    result = runner.invoke(main, ["download", "PhantomNF", "--source", "hf", "--root", str(hub.cache)])
    assert result.exit_code == 0 and "downloaded and verified" in result.output, result.output


def test_hf_valid_parquet_with_altered_latents_is_refused(hub, exported):
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pq.read_table(exported / "data" / "validation-00000-of-00001.parquet")
    latents = table["latent"].combine_chunks().flatten().to_numpy().reshape(len(table), -1).copy()
    latents[3, 5] += 1e-3  # one value in one row
    column = pa.FixedSizeListArray.from_arrays(pa.array(latents.reshape(-1)), latents.shape[1])
    buffer = io.BytesIO()
    pq.write_table(table.set_column(0, "latent", column), buffer)
    hub.files[f"/datasets/{REPO}/resolve/{SHA}/data/validation-00000-of-00001.parquet"] = buffer.getvalue()
    with pytest.raises(DownloadError, match="split 'val' of mednf/PhantomNF has 20 rows with latent digest"):
        mednf.load("PhantomNF", root=hub.cache, source="hf")
    assert not (hub.cache / "PhantomNF").exists()


def test_hf_manifest_pinned_by_the_registry(hub, exported, tmp_path):
    entry = (exported.parent / "PhantomNF.registry-entry.toml").read_text()
    pinned = entry.split('manifest_sha256 = "')[1].split('"')[0]
    assert pinned == hashlib.sha256((exported / "mednf.json").read_bytes()).hexdigest()
    registry = tmp_path / "registry.toml"
    registry.write_text(registry.read_text() + f'manifest_sha256 = "{pinned}"\n')
    assert len(mednf.load("PhantomNF", split="test", root=hub.cache, source="hf")) == 20
    import shutil

    shutil.rmtree(hub.cache / "PhantomNF")
    registry.write_text(registry.read_text().replace(pinned, "0" * 64))  # a manifest the registry does not know
    with pytest.raises(DownloadError, match="the registry pins 0000"):
        mednf.load("PhantomNF", root=hub.cache, source="hf")
    assert not (hub.cache / "PhantomNF").exists()


def leftovers(cache) -> list[str]:
    """What a download left in the cache, beside the dataset lock and an empty ``.downloads``."""
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock")
                  and not (p.name == ".downloads" and not any(p.iterdir())))


def test_cli_export_hf_says_where_the_registry_entry_went(phantom_dir, tmp_path):
    """The HF folder uploads as it is (only its own files); the registry entry is beside it, and the output
    names both."""
    from mednf.tasks.export import hf_registry_entry

    out = tmp_path / "hub" / "PhantomNF"
    result = CliRunner().invoke(main, ["export", str(phantom_dir), "--format", "hf", "--out", str(out)])
    assert result.exit_code == 0, result.output
    entry = hf_registry_entry(out)
    assert entry == tmp_path / "hub" / "PhantomNF.registry-entry.toml" and entry.is_file()
    assert f"wrote {entry} beside it (not uploaded)" in result.output
    assert "upload it as it is with `hf upload <org>/PhantomNF" in result.output
    assert not any(p.name.endswith(".toml") for p in out.rglob("*"))
