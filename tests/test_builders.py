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
    ('name = "X"\n[source]\nkind = "phantom"\nsize = 64\nchannels = 1\n[labels]\ntask = "regression"\n'
     'names = ["a", "b"]', "task = 'regression' is invalid"),
    (('name = "X"\n[source]\nkind = "phantom"\nsize = 64\nchannels = 1\n[labels]\ntask = "multi-class"\n'
      'names = ["a", "b"]\n[splits]\ntrain = 1\nval = 1\ntest = 1\n[engine]\npreset = "cpu-small"\n'
      'meta = { inner_steps = -1 }'),
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


def _builder_text(name: str) -> str:
    from importlib import resources

    return resources.files("mednf.builders").joinpath(f"{name}.toml").read_text()


def _edit(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, old
    return text.replace(old, new)


PHANTOM_EDITS = [  # (old, new, expected words of the one-line error)
    ("seed = 0", "seeed = 3", ["key 'seeed' is unknown", "did you mean 'seed'"]),
    ("[build]", "[sorce]\nkind = 'phantom'\n[build]", ["section [sorce] is unknown", "did you mean 'source'"]),
    ("channels = 1", "chanels = 1", ["[source]: key 'chanels' is unknown", "did you mean 'channels'"]),
    ("channels = 1", "channels = 1\nflag = 'x'", ["key 'flag' is unknown for kind = 'phantom'"]),
    ('task = "multi-class"', 'task = "multi-class"\nnmes = []', ["[labels]: key 'nmes'", "did you mean 'names'"]),
    ("test = 200", "tset = 200", ["[splits]: key 'tset' is unknown", "did you mean 'test'"]),
    ('preset = "cpu-small"', 'preset = "cpu-small"\nprest = "tiny"',
     ["[engine]: key 'prest'", "did you mean 'preset'"]),
    ("latent_dim = 256", "latnet_dim = 256", ["[engine.field]: key 'latnet_dim'", "did you mean 'latent_dim'"]),
    ("inner_lr = 0.1", "inner_lrr = 0.1", ["[engine.meta]: key 'inner_lrr'", "did you mean 'inner_lr'"]),
    ("fit = { steps = 30, lr = 0.1 }", "fit = { step = 3 }", ["[engine.fit]: key 'step'", "did you mean 'steps'"]),
    ("val_every = 50", "val_evry = 50", ["[build]: key 'val_evry'", "did you mean 'val_every'"]),
    ("inner_lr = 0.1", "inner_lr = true", ["inner_lr (α) = True is invalid"]),
    ("fit = { steps = 30, lr = 0.1 }", "fit = { lr = true }", ["lr (α) = True is invalid"]),
    ("fit = { steps = 30, lr = 0.1 }", "fit = { grad_rescale = 1 }", ["grad_rescale = 1 is invalid", "true or false"]),
    ("latent_dim = 256", "latent_dim = 256, in_dims = 3", ["in_dims = 3 is not a setting", "[source] dims"]),
    ("seed = 0", "seed = true", ["seed = True is invalid: expected an integer"]),
    ("seed = 0", "seed = -1", ["seed = -1 is invalid"]),
    ("paper = false", "paper = 1", ["paper = 1 is invalid: expected true or false"]),
    ('modality = "Synthetic phantom"', "modality = 3", ["modality = 3 is invalid: expected a string"]),
    ("size = 64", "size = 64.0", ["size = 64.0 is invalid: expected an integer"]),
    ("channels = 1", "channels = 3", ["invalid for kind 'phantom'", "channels = 1, dims = 2"]),
    ('name = "PhantomNF"', 'name = "../../x"', ["name = '../../x' is invalid", "letters, digits and underscores"]),
    ('name = "PhantomNF"', 'name = "9lives"', ["name = '9lives' is invalid"]),
    ('names = ["0 lesions", "1 lesion", "2 lesions", "3 lesions"]', "names = [0, 1]", ["names holds 0"]),
    ('names = ["0 lesions", "1 lesion", "2 lesions", "3 lesions"]', 'names = ["a", "a"]', ["(1 distinct)"]),
    ("val_every = 50", "val_every = true", ["val_every = True is invalid"]),
]
BREAST_EDITS = [
    ('flag = "breastmnist"', 'flag = "../../etc"', ["flag = '../../etc' is invalid"]),
    ('files/{file}?download=1"', 'files/breast.npz"', ["expected a {file} placeholder"]),
    ('"64" = "742edef2a1fd1524b2efff4bd7ba9364"', '"64" = "xyz"', ["md5 '64' = 'xyz' is invalid"]),
    ("size = 64", "size = 100", ["size = 100 has no md5", "[28, 64, 128, 224]"]),
    ('kind = "medmnist"', 'kind = "medmnst"', ["kind = 'medmnst' is invalid", "did you mean 'medmnist'"]),
]


@pytest.mark.parametrize("builder, old, new, words", [("phantomnf", *e) for e in PHANTOM_EDITS]
                         + [("breastnf", *e) for e in BREAST_EDITS])
def test_builder_files_are_strict(tmp_path, builder, old, new, words):
    path = tmp_path / "mine.toml"
    path.write_text(_edit(_builder_text(builder), old, new))
    with pytest.raises(ConfigError) as err:
        load_builder(str(path))
    message = str(err.value)
    assert "\n" not in message and message.startswith(str(path)), message
    for word in words:
        assert word in message, message


def test_builder_name_cannot_leave_mednf_home(tmp_path):
    text = _edit(_builder_text("phantomnf"), 'name = "PhantomNF"', 'name = "../../escaped"')
    path = tmp_path / "mine.toml"
    path.write_text(text)
    home = tmp_path / "a" / "b"
    result = CliRunner().invoke(main, ["build", str(path), "--preset", "tiny", "--steps", "2", "--max-samples", "4",
                                       "--quiet"], env={"MEDNF_HOME": str(home)})
    assert result.exit_code == 2 and result.output.count("\n") == 1 and "name = '../../escaped'" in result.output
    assert not (tmp_path / "escaped").exists() and not home.exists()


def test_a_typo_in_a_builder_file_stops_the_cli(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text(_edit(_builder_text("phantomnf"), "seed = 0", "seeed = 3"))
    result = CliRunner().invoke(main, ["build", str(path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2 and result.output.startswith("error: ") and "did you mean 'seed'" in result.output
    assert not (tmp_path / "out").exists()


def test_every_source_kind_is_in_the_registry():
    from mednf.sources.kinds import get_kind, kind_names, kind_of

    assert set(kind_names()) == {"medmnist", "phantom", "images", "nifti", "table1d"}
    # the shipped catalogue uses the two built-in data kinds; the others read a user's own files
    assert {kind_of(load_builder(n)).name for n in builder_names()} == {"medmnist", "phantom"}
    with pytest.raises(ConfigError, match="kind = 'phantoms' is invalid.*did you mean 'phantom'"):
        get_kind("phantoms")
    assert get_kind("phantom").embedded and not get_kind("medmnist").embedded


def test_sizes_come_from_the_kind():
    import dataclasses

    phantom = load_builder("phantomnf")
    assert phantom.with_size(40).source.size == 40 and phantom.with_size(40).preset == "cpu-small"  # any size
    with pytest.raises(ConfigError, match="size = 2 is not available for PhantomNF: expected an integer ≥ 4"):
        phantom.with_size(2)
    breast = load_builder("breastnf")
    own = dataclasses.replace(breast, source=dataclasses.replace(breast.source, md5={}))  # a user's own files
    assert own.with_size(100).source.file_name == "breastmnist_100.npz"


def test_official_description_and_local_splits(tmp_path):
    import dataclasses

    import numpy as np

    from mednf.sources.kinds import local_splits, official_description
    from mednf.sources.phantoms import phantom_source
    from mednf.sources.read import load_source

    small = dataclasses.replace(load_builder("phantomnf").with_size(16), splits={"train": 3, "val": 2, "test": 2})
    assert official_description(small) == load_source(small, progress=False).description  # what a build records
    splits = local_splits(small)
    np.testing.assert_array_equal(splits["val"].images, phantom_source(small)["val"].images)
    breast = load_builder("breastnf")
    assert local_splits(breast, tmp_path) is None  # not on disk: no download
    description = official_description(breast)
    assert description["md5"] == breast.source.md5["64"] and description["file"] == "breastmnist_64.npz"
    assert description["official"] and description["kind"] == "medmnist"
