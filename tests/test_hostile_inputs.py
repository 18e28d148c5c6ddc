"""Bad arguments and doctored files, tried as a careless or hostile user would: every one is refused with one
line (the documented exception in Python), and nothing wrong is handed back in silence."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from loopback import Loopback

import mednf
from mednf.arguments import IndexTypeError
from mednf.building.buildlog import start_log, stop_log
from mednf.building.distributed import Dist
from mednf.building.prepare import make_writable
from mednf.cli import main
from mednf.cli.errors import _log_traceback
from mednf.cli.options import parse_threads
from mednf.errors import BuildError, ConfigError, DownloadError, EncodeError, FormatError
from mednf.format.layout import MANIFEST, MODEL
from mednf.format.tensors import load_tensors, save_tensors
from mednf.format.writer import latent_digest
from mednf.io.files import sha256_file
from mednf.io.http import fetch_verified
from mednf.remote.official_import import import_official
from mednf.remote.registry import registry
from mednf.remote.zenodo import download_zenodo
from mednf.sources.spec import load_builder
from mednf.tasks.export import export_zenodo


@pytest.fixture(scope="module")
def test_split(phantom_dir):
    return mednf.load(phantom_dir, "test")


def _one_line(err: BaseException) -> str:
    text = str(err)
    assert "\n" not in text and text, text
    return text


@pytest.mark.parametrize("index", [1.7, [1.2, 3.9], np.array([0.0, 1.0]), torch.tensor([1.0]), torch.tensor(1.5),
                                   ["a"]])
def test_floats_and_strings_are_not_indices(test_split, index):
    with pytest.raises(IndexTypeError) as err:
        test_split[index]
    assert "expected integers" in _one_line(err.value)


@pytest.mark.parametrize("call, match", [
    (lambda ds: ds.decode([0, 1], batch_size=-1), "batch_size = -1 is invalid"),
    (lambda ds: ds.decode([0, 1], batch_size=0), "batch_size = 0 is invalid"),
    (lambda ds: ds.decode([0, 1], batch_size=2.5), "batch_size = 2.5 is invalid"),
    (lambda ds: ds.decode([0, 1], batch_size=True), "batch_size = True is invalid"),
    (lambda ds: ds.decode([0], size=1.5), "size = 1.5 is invalid"),
    (lambda ds: ds.decode([0], size=(8,)), r"size = \(8,\) is invalid"),
    (lambda ds: ds.decode([0], size=0), "size = 0 is invalid"),
    (lambda ds: ds.decode([0], size="32"), "size = '32' is invalid"),
    (lambda ds: ds.plot([]), "select no sample"),
    (lambda ds: ds.plot([0], columns=0), "columns = 0 is invalid"),
])
def test_bad_arguments_are_one_line_config_errors(test_split, call, match):
    with pytest.raises(ConfigError, match=match) as err:
        call(test_split)
    _one_line(err.value)


def test_integer_indices_of_every_kind_still_work(test_split):
    assert test_split[torch.tensor(2)]["index"] == test_split[2]["index"] == test_split[np.int64(2)]["index"]
    assert test_split[[0, -1]]["latent"].shape[0] == 2 and len(test_split[[]]["latent"]) == 0
    assert test_split.decode([0, 1], batch_size=1).shape[0] == 2


@pytest.mark.parametrize("images, kwargs, match", [
    (np.zeros((2, 0, 0), np.uint8), {}, "side of length 0"),
    (np.zeros((2, 0, 0), np.uint8), {"resample": True}, "side of length 0"),
    (np.zeros((32, 32, 3), np.uint8), {"resample": True}, "look like one colour image"),
])
def test_encode_refuses_images_that_are_not_images(phantom_dir, images, kwargs, match):
    with pytest.raises(EncodeError, match=match) as err:
        mednf.encode(images, phantom_dir, progress=False, **kwargs)
    _one_line(err.value)


def test_encode_points_refuses_zero_points(phantom_dir):
    with pytest.raises(EncodeError, match="hold no point"):
        mednf.encode_points(np.zeros((1, 0, 2), np.float32), np.zeros((1, 0, 1), np.float32), phantom_dir,
                            progress=False)


def _copy(phantom_dir, tmp_path):
    out = tmp_path / "PhantomNF"
    shutil.copytree(phantom_dir, out)
    return out


def _rewrite_theta(root, change) -> None:
    """Change θ in place and record the new file in the manifest, as a consistent (but wrong) release would."""
    tensors, meta = load_tensors(root / MODEL)
    change(tensors)
    save_tensors(root / MODEL, tensors, meta)
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["files"][MODEL] = {"sha256": sha256_file(root / MODEL), "size": (root / MODEL).stat().st_size}
    (root / MANIFEST).write_text(json.dumps(manifest))


def test_a_nan_weight_is_refused_on_load(phantom_dir, tmp_path):
    root = _copy(phantom_dir, tmp_path)
    _rewrite_theta(root, lambda t: next(iter(t.values())).view(-1).__setitem__(0, float("nan")))
    ds = mednf.load(root, "test")
    with pytest.raises(FormatError, match="NaN/inf weights") as err:
        ds.decode([0])
    _one_line(err.value)


@pytest.mark.parametrize("key, value", [("omega_first", 40.0), ("shift_mode", "outside")])
def test_field_settings_edited_in_the_manifest_are_refused(phantom_dir, tmp_path, key, value):
    root = _copy(phantom_dir, tmp_path)
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["engine"]["field"][key] = value
    (root / MANIFEST).write_text(json.dumps(manifest))
    ds = mednf.load(root, "test", verify=True)
    with pytest.raises(FormatError, match=f"field.{key}") as err:
        ds.decode([0])
    assert "changed after the build" in _one_line(err.value)


def _rewrite_theta_meta(root, change) -> None:
    """Rewrite θ's metadata in place and record the new file in the manifest."""
    tensors, meta = load_tensors(root / MODEL)
    save_tensors(root / MODEL, tensors, change(dict(meta)))
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["files"][MODEL] = {"sha256": sha256_file(root / MODEL), "size": (root / MODEL).stat().st_size}
    (root / MANIFEST).write_text(json.dumps(manifest))


def test_theta_without_field_settings_is_refused_even_with_an_edited_manifest(phantom_dir, tmp_path):
    root = _copy(phantom_dir, tmp_path)
    _rewrite_theta_meta(root, lambda meta: {k: v for k, v in meta.items() if k != "field"})
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["engine"]["field"]["omega_first"] = 40.0
    (root / MANIFEST).write_text(json.dumps(manifest))
    ds = mednf.load(root, "test", verify=True)
    with pytest.raises(FormatError, match="records no field settings") as err:
        ds.decode([0])
    _one_line(err.value)


def test_field_settings_in_the_first_format_versions_string_form_are_read_and_checked(phantom_dir, tmp_path):
    root = _copy(phantom_dir, tmp_path)
    expected = mednf.load(phantom_dir, "test").decode([0])
    _rewrite_theta_meta(root, lambda meta: {**meta, "field": json.dumps(meta["field"])})
    np.testing.assert_array_equal(mednf.load(root, "test").decode([0]), expected)
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["engine"]["field"]["omega_first"] = 40.0
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match="field.omega_first"):
        mednf.load(root, "test").decode([0])


def test_info_of_a_missing_path_names_the_path(tmp_path):
    from click.testing import CliRunner

    from mednf.cli import main

    result = CliRunner().invoke(main, ["info", str(tmp_path / "missing" / "path")])
    assert result.exit_code == 1 and "does not exist ('path' is not in" in result.output
    assert "mednf build" not in result.output


def test_the_upload_hint_quotes_paths_with_spaces(phantom_dir, tmp_path):
    from mednf.tasks.export import export_hf, upload_hint

    out = export_hf(phantom_dir, tmp_path / "my exports" / "PhantomNF")
    assert f"'{out}'" in upload_hint(out)


def test_inpaint_refuses_a_size_that_cannot_fit_before_fitting(phantom_dir, monkeypatch):
    import mednf.tasks.inpaint as inpaint

    monkeypatch.setattr(inpaint, "encode", lambda *a, **k: pytest.fail("fitted before the size was checked"))
    with pytest.raises(ConfigError, match="choose a smaller --size") as err:
        mednf.inpaint(np.zeros((1, 32, 32), np.uint8), np.ones((32, 32), bool), phantom_dir, size=1_000_000)
    _one_line(err.value)


@pytest.mark.parametrize("body", ["[" * 100_000 + "]" * 100_000, '{"format": ' + "9" * 5000 + "}", "{"])
def test_a_local_manifest_that_is_not_json_is_one_line(phantom_dir, tmp_path, body):
    root = _copy(phantom_dir, tmp_path)
    (root / MANIFEST).write_text(body)
    with pytest.raises(FormatError, match="is not valid JSON") as err:
        mednf.load(root, "test")
    _one_line(err.value)


@pytest.mark.parametrize("value, message", [("99999999999", "at most 4096"), ("4097", "at most 4096"),
                                            ("²", "a whole number ≥ 1")])
def test_threads_beyond_any_machine_is_one_line(value, message):
    with pytest.raises(ConfigError, match=message) as err:
        parse_threads(value)
    _one_line(err.value)
    assert parse_threads("4096") == 4096


@pytest.mark.parametrize("images", [np.array([["a", "b"], ["c", "d"]]), np.array([[None]], dtype=object),
                                    [[0.0, 0.5], [0.1]]])
def test_encode_refuses_arrays_that_are_not_numbers(phantom_dir, images):
    with pytest.raises(EncodeError, match="numeric") as err:
        mednf.encode(images, phantom_dir, progress=False)
    _one_line(err.value)


def test_the_encode_command_refuses_a_string_array(phantom_dir, tmp_path):
    images = tmp_path / "img_str.npz"
    np.savez(images, images=np.full((2, 32, 32), "x"))
    result = CliRunner().invoke(main, ["encode", str(phantom_dir), str(images), "--out", str(tmp_path / "e.npz")])
    assert result.exit_code == 1, result.output
    assert "is not numeric" in result.output and "Traceback" not in result.output


def _builder_file(tmp_path, *, seed="0", extra="") -> str:
    text = (Path(__file__).parents[1] / "builders" / "phantomnf.toml").read_text()
    path = tmp_path / "hostile.toml"
    path.write_text(text.replace("\nseed = 0\n", f"\nseed = {seed}\n{extra}", 1))
    return str(path)


@pytest.mark.parametrize("seed", ["99999999999999999999", str(2**63)])
def test_a_builder_seed_beyond_int64_is_one_line(tmp_path, seed):
    with pytest.raises(ConfigError, match="< 2\\*\\*63") as err:
        load_builder(_builder_file(tmp_path, seed=seed))
    _one_line(err.value)
    assert load_builder(_builder_file(tmp_path, seed=str(2**63 - 1))).seed == 2**63 - 1


@pytest.mark.parametrize("nested", ["x = " + "[" * 50_000 + "]" * 50_000 + "\n", "x = " + "{a = " * 50_000 + "1"
                                    + "}" * 50_000 + "\n"])
def test_a_builder_nested_too_deep_is_one_line(tmp_path, nested):
    with pytest.raises(ConfigError, match="too deeply") as err:
        load_builder(_builder_file(tmp_path, extra=nested))
    _one_line(err.value)


@pytest.mark.parametrize("kind", ["fifo", "device", "folder", "huge"])
def test_a_registry_that_is_not_a_small_regular_file_is_one_line(tmp_path, monkeypatch, kind):
    path = tmp_path / "registry.toml"
    if kind == "fifo":
        os.mkfifo(path)  # reading it would block forever
    elif kind == "device":
        path = Path("/dev/zero")  # reading it would never end
    elif kind == "folder":
        path.mkdir()
    else:
        path.write_text("# padding\n" * 200_000)
    monkeypatch.setenv("MEDNF_REGISTRY", str(path))
    with pytest.raises(ConfigError, match="MEDNF_REGISTRY") as err:
        registry()
    _one_line(err.value)
    result = CliRunner().invoke(main, ["list"])
    assert result.exit_code == 2 and "MEDNF_REGISTRY" in result.output and "Traceback" not in result.output


def test_build_log_is_never_appended_through_a_link(phantom_dir, tmp_path):
    other = _copy(phantom_dir, tmp_path)
    before = (other / MANIFEST).read_bytes()
    folder = tmp_path / "p4"
    folder.mkdir()
    (folder / "build.log").symlink_to(other / MANIFEST)
    with pytest.raises(BuildError, match="symbolic link") as err:
        start_log(folder, Dist())
    _one_line(err.value)
    _log_traceback(folder)  # the CLI's traceback append: refused in silence, the console line is enough
    result = CliRunner().invoke(main, ["build", "phantomnf", "--preset", "tiny", "--max-samples", "16",
                                       "--out", str(folder)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert (other / MANIFEST).read_bytes() == before
    (tmp_path / "real").mkdir()
    stop_log(start_log(tmp_path / "real", Dist()))
    assert (tmp_path / "real" / "build.log").is_file()


@pytest.mark.parametrize("name", [".partial", ".continue"])
def test_build_state_is_never_written_through_a_link(tmp_path, name):
    victim = tmp_path / "v5"
    victim.mkdir()
    folder = tmp_path / "p5"
    folder.mkdir()
    (folder / name).symlink_to(victim)
    with pytest.raises(BuildError, match="symbolic link") as err:
        make_writable(folder)
    _one_line(err.value)
    result = CliRunner().invoke(main, ["build", "phantomnf", "--preset", "tiny", "--max-samples", "16",
                                       "--out", str(folder)])
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert list(victim.iterdir()) == []


def test_a_tensorboard_log_is_never_written_inside_a_dataset(phantom_dir, tmp_path):
    other = _copy(phantom_dir, tmp_path)
    before = sorted(p.name for p in other.rglob("*"))
    result = CliRunner().invoke(main, ["build", "phantomnf", "--preset", "tiny", "--max-samples", "16",
                                       "--out", str(tmp_path / "new"), "--tensorboard", str(other / "tb")])
    assert result.exit_code == 2 and "inside the dataset" in result.output and "--tensorboard" in result.output
    assert sorted(p.name for p in other.rglob("*")) == before and not (tmp_path / "new").exists()
    with pytest.raises(ConfigError, match="tensorboard=.*inside the dataset") as err:
        mednf.build("phantomnf", preset="tiny", max_samples=16, out=tmp_path / "new", tensorboard=other)
    _one_line(err.value)


def test_an_official_import_is_never_written_inside_a_dataset(phantom_dir, tmp_path):
    other = _copy(phantom_dir, tmp_path)
    before = sorted(p.name for p in other.rglob("*"))
    for out in (other / "sub", other):
        with pytest.raises(ConfigError, match="--out .* is inside the dataset") as err:
            import_official(tmp_path / "rel", "phantomnf", out, progress=False)
        _one_line(err.value)
    assert sorted(p.name for p in other.rglob("*")) == before


def test_a_download_is_never_written_through_a_planted_temporary_link(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"mine")
    target = tmp_path / "dl" / "f"
    target.parent.mkdir()
    planted = target.with_name(f".{target.name}.{os.getpid()}.part")
    planted.symlink_to(victim)
    body = os.urandom(3000)
    with Loopback() as server:
        server.files["/f"] = body
        fetch_verified(f"{server.url}/f", target, size=len(body), progress=False)
    assert target.read_bytes() == body and not target.is_symlink()
    assert victim.read_bytes() == b"mine" and not planted.exists() and not planted.is_symlink()


@pytest.mark.parametrize("kwargs, message", [
    ({"max_samples": 2.5}, "max_samples = 2.5 is invalid: expected an integer"),
    ({"max_samples": 0}, "max_samples ?= ?0 is invalid"),
    ({"continue_to": "10"}, "continue_to = '10' is invalid"),
    ({"preset": 3}, "preset = 3 is invalid: expected a name"),
    ({"overrides": [1]}, r"overrides = \[1\] is invalid: expected a dict"),
    ({"out": 3}, "out = 3 is invalid: expected a path"),
    ({"tensorboard": 1.0}, "tensorboard = 1.0 is invalid: expected a path"),
    ({"steps": 2.0}, "steps = 2.0 is invalid: expected an integer"),
])
def test_build_keywords_of_the_wrong_type_are_one_line_before_any_work(tmp_path, monkeypatch, kwargs, message):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDNF_HOME", str(tmp_path / "home"))
    with pytest.raises(ConfigError, match=message) as err:
        mednf.build("phantomnf", **{"out": tmp_path / "x", "preset": "tiny", **kwargs})
    _one_line(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


@pytest.mark.parametrize("index, error", [([2**64 - 1], IndexError), ([2**64 - 16], IndexError),
                                          ([2**64 - 1, 0], IndexError), (np.array([2**64 - 1], np.uint64), IndexError),
                                          (np.array([[0, 1], [2, 3]]), IndexTypeError)])
def test_huge_and_nested_indices_are_refused_not_wrapped(test_split, index, error):
    with pytest.raises(error) as err:
        test_split[index]
    assert "round them" not in _one_line(err.value)


def test_a_decoded_size_that_overflows_int64_is_refused_before_allocating(test_split):
    with pytest.raises(ConfigError, match="needs"):
        test_split.decode([0], size=2**40)


def test_a_manifest_name_that_is_a_path_is_refused(phantom_dir, tmp_path):
    root = _copy(phantom_dir, tmp_path)
    manifest = json.loads((root / MANIFEST).read_text())
    manifest["name"] = manifest["builder"]["name"] = "../../escaped"
    (root / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(FormatError, match="is not a dataset name"):
        mednf.load(root, "test")


def test_an_absurd_latent_is_an_error_when_decoded(phantom_dir, tmp_path):
    import zarr

    root = _copy(phantom_dir, tmp_path)
    array = zarr.open_array(str(root / "latents.zarr" / "test"), mode="r+")
    rows = array[:]
    rows[3] = 3e38
    array[:] = rows
    manifest = json.loads((root / MANIFEST).read_text())  # a consistent (but wrong) copy, as a forged one would be
    for path in (root / "latents.zarr" / "test").rglob("*"):
        if path.is_file():
            rel = path.relative_to(root).as_posix()
            manifest["files"][rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    manifest["splits"]["test"]["latents_sha256"] = latent_digest(rows)
    (root / MANIFEST).write_text(json.dumps(manifest))
    ds = mednf.load(root, "test")
    with pytest.raises(FormatError, match=r"decoding rows \[3\]"):
        ds.decode([2, 3])


@pytest.mark.parametrize("hidden", ["PhantomNF/.partial/x", "PhantomNF/.continue/meta-last.safetensors",
                                    "PhantomNF/latents.zarr/.x"])
def test_a_zenodo_archive_with_hidden_build_state_is_never_installed(phantom_dir, tmp_path, monkeypatch, hidden):
    archive = export_zenodo(phantom_dir, tmp_path / "export")
    with tarfile.open(archive, "a") as tar:
        info = tarfile.TarInfo(hidden)
        info.size = 4
        tar.addfile(info, io.BytesIO(b"evil"))
    body = archive.read_bytes()
    record = "4242"
    with Loopback() as server:
        content = f"/api/records/{record}/files/PhantomNF.tar/content"
        server.files[f"/api/records/{record}"] = json.dumps({"id": record, "files": [
            {"key": "PhantomNF.tar", "size": len(body), "checksum": "md5:" + hashlib.md5(body).hexdigest(),
             "links": {"self": server.url + content}}]}).encode()
        server.files[content] = body
        registry_file = tmp_path / "registry.toml"
        registry_file.write_text(f'[PhantomNF]\nzenodo_record = "{record}"\nfiles = {{ "PhantomNF.tar" = {{ sha256 = '
                                 f'"{hashlib.sha256(body).hexdigest()}", size = {len(body)} }} }}\n')
        monkeypatch.setenv("MEDNF_HOME", str(tmp_path / "home"))
        monkeypatch.setenv("MEDNF_REGISTRY", str(registry_file))
        monkeypatch.setenv("MEDNF_ZENODO_URL", server.url)
        monkeypatch.delenv("MEDNF_OFFLINE", raising=False)
        with pytest.raises(DownloadError, match="no mednf export holds") as err:
            download_zenodo("PhantomNF", progress=False)
    _one_line(err.value)
    assert not (tmp_path / "home" / "PhantomNF").exists()


def test_a_fifo_or_folder_given_as_a_file_is_named_so(phantom_dir, tmp_path):
    import os

    from mednf.sources.spec import load_builder
    from mednf.tasks.encode import read_images_npz

    os.mkfifo(tmp_path / "fifo.npz")
    os.mkfifo(tmp_path / "fifo.toml")
    for bad in (tmp_path / "fifo.npz", tmp_path):
        with pytest.raises(EncodeError, match="is not a regular file"):
            read_images_npz(bad)
    with pytest.raises(ConfigError, match="is not a regular file"):
        load_builder(str(tmp_path / "fifo.toml"))
    with pytest.raises(EncodeError, match="does not exist"):
        read_images_npz(tmp_path / "missing.npz")


def test_a_source_npz_that_is_no_archive_never_suggests_pickle(tmp_path):
    from mednf.errors import SourceError
    from mednf.sources.medmnist import read_npz
    from mednf.sources.spec import load_builder

    (tmp_path / "x.npz").write_text("hello")
    with pytest.raises(SourceError, match="not a zip archive") as err:
        read_npz(tmp_path / "x.npz", load_builder("breastnf"))
    assert "pickle" not in _one_line(err.value)


def test_names_that_differ_only_in_case_are_never_picked_by_listing_order(phantom_dir, tmp_path):
    from click.testing import CliRunner

    from mednf.cli import main
    from mednf.errors import ConfigError

    home = tmp_path / "cache"
    shutil.copytree(phantom_dir, home / "PhantomNF")
    shutil.copytree(phantom_dir, home / "phantomnf")
    assert mednf.load("PhantomNF", "test", root=home).root == home / "PhantomNF"  # the exact spelling wins
    assert mednf.load("phantomnf", "test", root=home).root == home / "phantomnf"
    with pytest.raises(ConfigError, match="differ only in case: give the exact name") as err:
        mednf.load("PHANTOMNF", "test", root=home)
    _one_line(err.value)
    result = CliRunner().invoke(main, ["cache", "rm", "phantomnf", "--root", str(home)])
    assert result.exit_code == 0 and (home / "PhantomNF" / "mednf.json").is_file()
    assert not (home / "phantomnf").exists()


@pytest.mark.parametrize("args", [["decode", "X", "--out", "~nosuchuser-mednf/x.npy"],
                                  ["build", "phantomnf", "--out", "~nosuchuser-mednf/x"],
                                  ["info", "~nosuchuser-mednf/X"]])
def test_a_path_of_an_unknown_user_is_one_line(args):
    from click.testing import CliRunner

    from mednf.cli import main

    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2 and "names a user this machine does not know" in result.output
    assert "Traceback" not in result.output and result.output.count("\n") == 1, result.output


def test_building_another_dataset_into_a_dataset_folder_says_it_holds_another_dataset(phantom_dir, tmp_path):
    from mednf.building.api import build as build_api

    builder = tmp_path / "mine.toml"
    builder.write_text((Path(__file__).resolve().parents[1] / "builders" / "phantomnf.toml").read_text()
                       .replace('name = "PhantomNF"', 'name = "OtherNF"', 1))
    target = tmp_path / "PhantomNF"
    shutil.copytree(phantom_dir, target)
    before = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}
    with pytest.raises(BuildError, match=r"holds another dataset, PhantomNF \(this build is OtherNF\)"):
        build_api(builder, out=target, preset="tiny", size=32, max_samples=20, progress=False)
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
