"""Builder files: every shipped one parses, matches medmnist.INFO, and names resolve case-insensitively."""

from __future__ import annotations

import importlib.util

import pytest
from click.testing import CliRunner

from mednf.cli import main
from mednf.errors import ConfigError
from mednf.sources.spec import builder_names, load_builder, resolve_engine

PAPER = ["ChestNF", "PathNF", "DermaNF", "OctNF", "PneumoniaNF", "RetinaNF", "TissueNF"]


def test_all_paper_builders_ship_with_their_schema():
    names = builder_names()
    assert set(PAPER) <= set(names) and {"PhantomNF", "AdrenalNF3D", "BreastNF"} <= set(names)
    channels = {"ChestNF": 1, "PneumoniaNF": 1, "OctNF": 1, "TissueNF": 1, "DermaNF": 3, "PathNF": 3, "RetinaNF": 3}
    for name in PAPER:
        spec = load_builder(name)
        assert spec.paper and spec.source.size == 64 and spec.preset == "2d-64"
        assert spec.source.channels == channels[name]
        cfg = resolve_engine(spec)
        assert (cfg.field.out_dims, cfg.field.latent_dim, cfg.field.num_layers) == (channels[name], 2048, 15)
    assert load_builder("chestnf").labels.task == "multi-label" and load_builder("ChestNF").labels.num_classes == 14
    assert load_builder("RETINANF").labels.task == "ordinal" and load_builder("retinanf").labels.num_classes == 5
    assert all(load_builder(n).labels.task == "multi-class" for n in ("PathNF", "DermaNF", "OctNF", "TissueNF"))
    assert load_builder("DermaNF").source.license == "CC BY-NC 4.0"
    adrenal = load_builder("adrenalnf3d")
    assert adrenal.source.dims == 3 and resolve_engine(adrenal).field.in_dims == 3


@pytest.mark.skipif(importlib.util.find_spec("medmnist") is None,
                    reason="medmnist is not installed (optional: pip install 'mednf[medmnist]')")
def test_builder_metadata_matches_medmnist_info():
    import medmnist

    for name in builder_names():
        spec = load_builder(name)
        if spec.source.kind != "medmnist":
            continue
        info = medmnist.INFO[spec.source.flag]
        assert spec.splits == info["n_samples"], name
        assert list(spec.labels.names) == [info["label"][str(i)] for i in range(len(info["label"]))], name
        assert spec.source.channels == info["n_channels"] and spec.source.license == info["license"], name
        for size, md5 in spec.source.md5.items():
            suffix = "" if size == "28" else f"_{size}"
            assert md5 == info[f"MD5{suffix}"], (name, size)
            url = spec.source.url.format(file=f"{spec.source.flag}{suffix}.npz")
            assert url == info[f"url{suffix}"], (name, size)


def test_size_switches_to_the_papers_preset():
    spec = load_builder("chestnf").with_size(128)
    assert spec.preset == "2d-128" and spec.source.file_name == "chestmnist_128.npz"
    assert resolve_engine(spec).field.latent_dim == 8192
    assert load_builder("pneumonianf").with_size(28).source.file_name == "pneumoniamnist.npz"
    with pytest.raises(ConfigError, match="size = 100 is not available for ChestNF"):
        load_builder("chestnf").with_size(100)


def test_unknown_name_lists_known_ones_and_the_closest():
    with pytest.raises(ConfigError) as err:
        load_builder("dermanff")
    message = str(err.value)
    assert "did you mean 'DermaNF'" in message and "ChestNF" in message and "\n" not in message


def test_user_builder_file(tmp_path):
    from importlib import resources

    source = resources.files("mednf.builders").joinpath("phantomnf.toml").read_text()
    path = tmp_path / "mine.toml"
    path.write_text(source.replace('name = "PhantomNF"', 'name = "MyPhantoms"').replace("train = 600", "train = 10"))
    spec = load_builder(str(path))
    assert spec.name == "MyPhantoms" and spec.splits["train"] == 10 and spec.path == str(path)


@pytest.mark.parametrize("body, expected", [
    ("name = [", "is not valid TOML"),
    ('name = "X"\n[source]\nkind = "ftp"\nsize = 64\nchannels = 1', "kind = 'ftp' is invalid"),
    ('name = "X"\n[source]\nkind = "phantom"\nsize = 64\nchannels = 1\n[labels]\ntask = "regression"\nnames = ["a", "b"]',
     "task = 'regression' is invalid"),
    (('name = "X"\n[source]\nkind = "phantom"\nsize = 64\nchannels = 1\n[labels]\ntask = "multi-class"\nnames = ["a", "b"]'
     '\n[splits]\ntrain = 1\nval = 1\ntest = 1\n[engine]\npreset = "cpu-small"\nmeta = { inner_steps = -1 }'),
     "inner_steps \\(G\\) = -1 is invalid"),
])
def test_malformed_builder_file_is_one_line_error(tmp_path, body, expected):
    path = tmp_path / "bad.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=expected):
        load_builder(str(path))
    result = CliRunner().invoke(main, ["build", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "error:" in result.output
    assert not (tmp_path / "out" / "mednf.json").exists()


def test_cli_list_shows_every_builder():
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 0
    for name in builder_names():
        assert name in result.output
    assert "78468" in result.output and "multi-label" in result.output and "28×28×28" in result.output
