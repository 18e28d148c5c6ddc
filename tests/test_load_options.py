"""What a user passes when loading and running: ``split="validation"`` for ``val`` everywhere a split is
named, ``mednf.load(..., transform=fn)`` on every item path, and ``--threads N`` on the commands that
compute."""

from __future__ import annotations

import click
import numpy as np
import pytest
import torch
from click.testing import CliRunner

import mednf
from mednf.cli import main
from mednf.cli.errors import GuardedGroup as _Group
from mednf.errors import ConfigError, MednfError, TransformError


def test_validation_is_an_alias_of_val(phantom_dir, tmp_path):
    ds = mednf.load(phantom_dir, split="validation")
    assert ds.split == "val" and len(ds) == 20
    splits = mednf.load(phantom_dir, split=None)
    assert splits["validation"] is splits["val"] and "validation" in splits and "dev" not in splits
    assert list(splits) == ["train", "val", "test"] and len(splits) == 3
    with pytest.raises(ConfigError, match="split = 'dev' is invalid: expected one of train, val, test"):
        splits["dev"]
    report = mednf.evaluate(phantom_dir, "validation", progress=False)
    assert list(report.splits) == ["val"]
    np.testing.assert_allclose(report.splits["val"].psnr, ds.psnr, atol=1e-2)

    runner = CliRunner()
    npy = tmp_path / "x.npy"
    result = runner.invoke(main, ["decode", str(phantom_dir), "--split", "validation", "--indices", "1,4",
                                  "--out", str(npy)])
    assert result.exit_code == 0, result.output
    np.testing.assert_allclose(np.load(npy), ds.decode([1, 4]).numpy())
    result = runner.invoke(main, ["eval", str(phantom_dir), "--split", "validation", "--out", str(tmp_path / "ev")])
    assert result.exit_code == 0 and "  val        20" in result.output, result.output


def _doubled(item: dict) -> dict:
    return {**item, "double": item["latent"] * 2}


def test_transform_applies_to_every_item_path(phantom_dir):
    plain = mednf.load(phantom_dir, "train")
    ds = mednf.load(phantom_dir, "train", transform=_doubled)
    torch.testing.assert_close(ds[3]["double"], plain[3]["latent"] * 2)
    assert ds[3]["index"] == plain[3]["index"] and ds[3]["label"] == plain[3]["label"]
    batch = ds[2:6]  # a batch index: each sample transformed, then stacked
    torch.testing.assert_close(batch["double"], torch.from_numpy(np.array(plain.latents[2:6])) * 2)
    assert batch["index"].tolist() == plain.source_index[2:6].tolist()
    collated = list(torch.utils.data.DataLoader(ds, batch_size=8))
    batched = list(ds.dataloader(8))
    assert [len(b["double"]) for b in batched] == [8, 8, 4]
    for a, b in zip(collated, batched):
        torch.testing.assert_close(a["double"], b["double"])
        torch.testing.assert_close(a["latent"], b["latent"])
    assert all("double" in split[0] for split in mednf.load(phantom_dir, None, transform=_doubled).values())
    assert ds.with_images(8)[0]["image"].shape == (1, 8, 8) and "double" in ds.with_images(8)[0]


def _fails_on_three(item: dict) -> dict:
    if item["index"] == 3:
        raise ValueError("cannot handle this one\nsecond line")
    return item


def test_a_failing_transform_is_one_line_naming_the_sample(phantom_dir):
    ds = mednf.load(phantom_dir, "test", transform=_fails_on_three)
    position = int(np.flatnonzero(ds.source_index == 3)[0])
    with pytest.raises(TransformError) as err:
        ds[position]
    message = str(err.value)
    assert "\n" not in message and isinstance(err.value, MednfError)
    assert message.startswith(f"transform _fails_on_three failed on sample {position} of PhantomNF test (source "
                              "index 3): ValueError: cannot handle this one")
    with pytest.raises(TransformError, match=f"sample {position} of"):
        next(iter(ds.dataloader(20)))
    with pytest.raises(TransformError, match="returned None for sample 0"):
        mednf.load(phantom_dir, "test", transform=lambda item: None)[0]
    with pytest.raises(ConfigError, match="transform = 3 is invalid"):
        mednf.load(phantom_dir, "test", transform=3)

    @click.group(cls=_Group)  # mednf's command class: a MednfError ends in one line and exit status 2
    def app() -> None:
        pass

    @app.command()
    def first() -> None:
        click.echo(ds[position])

    result = CliRunner().invoke(app, ["first"])
    assert result.exit_code == 1 and result.output == f"error: {message}\n"


COMPUTING = ("demo", "decode", "eval", "classify", "encode", "inpaint", "import-official")


def test_threads_on_every_command_that_computes(phantom_dir, tmp_path):
    for name in COMPUTING:
        assert "threads" in {p.name for p in main.commands[name].params}, name
    before = torch.get_num_threads()
    try:
        result = CliRunner().invoke(main, ["decode", str(phantom_dir), "--indices", "0:2", "--threads", "1",
                                           "--out", str(tmp_path / "x.npy")])
        assert result.exit_code == 0 and torch.get_num_threads() == 1, result.output
    finally:
        torch.set_num_threads(before)
    for bad in ("0", "-1", "x", "1.5", ""):
        for args in (["decode", str(phantom_dir), "--out", str(tmp_path / "y.npy")],
                     ["classify", str(phantom_dir)], ["encode", str(phantom_dir), "images.npz", "--out", "l.npz"]):
            result = CliRunner().invoke(main, [*args, "--threads", bad])
            assert result.exit_code == 2 and result.output == (
                f"error: --threads {bad!r} is invalid: expected a whole number ≥ 1 of CPU threads, e.g. "
                f"--threads {__import__('os').cpu_count() or 4}\n"), result.output
    assert not (tmp_path / "y.npy").exists()
