"""Hugging Face's split syntax (``"train[:10%]"``, ``"train+validation"``) in :func:`mednf.load` and the CLI,
checked against the ``datasets`` library's own reading of the same strings."""

from __future__ import annotations

import pytest

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
