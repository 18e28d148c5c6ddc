"""Hugging Face's split syntax (``"train[:10%]"``, ``"train+validation"``) in :func:`mednf.load` and the CLI,
checked against the ``datasets`` library's own reading of the same strings."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mednf.errors import ConfigError
from mednf.format.splits import SplitPart, parse_split_spec

SPECS = ["train", "train[:10%]", "train[-10%:]", "train[15%:85%]", "train[:-3]", "train[2:5]", "train[-7:-2]",
         "train[:25%]+train[75%:]", "train[33%:67%]", "train[5%:]", "train[:0]", "train[200:]", "train[-200:]"]


@pytest.mark.parametrize("n", [1, 7, 10, 33, 105, 999])
def test_rows_are_those_datasets_reads(n):
    datasets = pytest.importorskip("datasets", reason="the reference is the datasets library (mednf[hf])")
    for spec in SPECS:
        reference = [(r.splitname, r.from_ or 0, n if r.to is None else r.to)
                     for r in datasets.ReadInstruction.from_spec(spec).to_absolute({"train": n})]
        reference = [(s, min(max(a, 0), n), min(max(b, 0), n)) for s, a, b in reference]
        reference = [(s, a, max(a, b)) for s, a, b in reference]
        assert [(p.split, p.start, p.stop) for p in parse_split_spec(spec, {"train": n})] == reference, spec


def test_aliases_and_concatenation():
    lengths = {"train": 100, "val": 20, "test": 30}
    assert parse_split_spec("validation", lengths) == [SplitPart("val", 0, 20)]
    assert parse_split_spec(" train[:10%] + test[:5] ", lengths) == [SplitPart("train", 0, 10), SplitPart("test", 0, 5)]


@pytest.mark.parametrize("spec, reason", [
    ("dev", "expected one of train, val, test"),
    ("train[1:2:3]", "is not NAME, NAME[START:STOP]"),
    ("train[abc]", "is not NAME, NAME[START:STOP]"),
    ("train[:150%]", "outside -100%..100%"),
    ("", "expected a split name"),
    ("train++test", "'' is not NAME"),
    ("train[:" + "9" * 30 + "]", "is no row bound"),
])
def test_bad_specs_are_one_line(spec, reason):
    with pytest.raises(ConfigError, match=reason.replace("[", r"\[").replace("(", r"\(")) as err:
        parse_split_spec(spec, {"train": 100, "val": 20, "test": 30})
    assert "\n" not in str(err.value)


# ------------------------------------------------------------------------------------------ mednf.load


@pytest.mark.parametrize("unpack", ["1", "0"])  # the memory map, and the lazy chunk reads
def test_a_sliced_split_holds_those_rows_of_the_split(phantom_dir, monkeypatch, unpack):
    import mednf

    monkeypatch.setenv("MEDNF_UNPACK", unpack)
    full = mednf.load(phantom_dir, "train")
    every = np.asarray(full.latents)  # [20, P]
    for spec, rows in (("train[:25%]", range(0, 5)), ("train[-3:]", range(17, 20)), ("train[4:9]", range(4, 9))):
        part = mednf.load(phantom_dir, spec)
        assert len(part) == len(rows) and part.split_spec == f"train[{rows.start}:{rows.stop}]"
        np.testing.assert_array_equal(np.asarray(part.latents), every[rows.start:rows.stop])
        for i, row in enumerate(rows):  # one sample at a time: the obviously correct reference
            item, reference = part[i], full[row]
            assert torch.equal(item["latent"], reference["latent"]) and item["label"] == reference["label"]
            assert item["index"] == reference["index"]
        np.testing.assert_array_equal(part[1:3]["latent"].numpy(), every[rows.start + 1:rows.start + 3])
        assert torch.equal(part.decode([0, len(rows) - 1]), full.decode([rows.start, rows.stop - 1]))
    with pytest.raises(IndexError):
        mednf.load(phantom_dir, "train[:5]")[5]


def test_joined_splits_read_as_one_in_the_order_given(phantom_dir):
    import mednf

    joined = mednf.load(phantom_dir, "train[-4:]+validation[:3]")
    reference = [mednf.load(phantom_dir, "train")[i] for i in range(16, 20)] + \
        [mednf.load(phantom_dir, "val")[i] for i in range(3)]
    assert len(joined) == 7 and repr(joined).startswith("MedNFConcat('PhantomNF', split='train[-4:]+validation[:3]'")
    for i, expected in enumerate(reference):
        assert torch.equal(joined[i]["latent"], expected["latent"]) and joined[i]["label"] == expected["label"]
    batch = joined[[6, 0, 4]]
    assert torch.equal(batch["latent"], torch.stack([reference[k]["latent"] for k in (6, 0, 4)]))
    loader = joined.dataloader(3, shuffle=True, generator=torch.Generator().manual_seed(0))
    seen = torch.cat([b["latent"] for b in loader])
    assert sorted(map(tuple, seen.tolist())) == sorted(tuple(r["latent"].tolist()) for r in reference)
    assert torch.equal(joined.decode([5, 1]), torch.stack([mednf.load(phantom_dir, "val").decode([1])[0],
                                                           mednf.load(phantom_dir, "train").decode([17])[0]]))
    pytest.importorskip("datasets", reason="to_hf needs mednf[hf]")
    hf = joined.to_hf()
    assert hf.num_rows == 7 and hf[4]["index"] == reference[4]["index"]


def test_a_bad_split_spec_is_one_line_in_python_and_at_the_command_line(phantom_dir, tmp_path):
    from click.testing import CliRunner

    import mednf
    from mednf.cli import main

    with pytest.raises(ConfigError, match=r"'train\[1:2:3\]' is not NAME"):
        mednf.load(phantom_dir, "train[1:2:3]")
    out = str(tmp_path / "x.npy")
    result = CliRunner().invoke(main, ["decode", str(phantom_dir), "--split", "dev[:3]", "--out", out])
    assert result.exit_code == 2 and result.output.count("\n") == 1
    assert "expected one of train, val, test" in result.output
    result = CliRunner().invoke(main, ["decode", str(phantom_dir), "--split", "test[-2:]", "--indices", "0:2",
                                       "--out", str(tmp_path / "x.npy"), "--json"])
    assert result.exit_code == 0, result.output
    np.testing.assert_array_equal(np.load(tmp_path / "x.npy"), mednf.load(phantom_dir, "test").decode([18, 19]).numpy())
