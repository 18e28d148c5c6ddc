"""The Python surface: ``mednf.build`` builds like the CLI, the top-level functions have real signatures."""

from __future__ import annotations

import inspect
import json

import pytest

import mednf
from mednf.errors import ConfigError


def test_mednf_build_builds_a_tiny_phantomnf_and_returns_its_splits(tmp_path):
    out = tmp_path / "PhantomNF"
    data = mednf.build("phantomnf", out=out, preset="tiny", size=16, max_samples=8, steps=4, fit_steps=2,
                       overrides={"build.val_every": 2, "build.block_rows": 4, "meta": {"batch_size": 4}},
                       device="cpu", progress=False)
    assert list(data) == ["train", "val", "test"] and len(data["test"]) == 8
    assert data["validation"].split == "val"
    manifest = json.loads((out / "mednf.json").read_text())
    engine = manifest["engine"]
    assert (engine["meta"]["steps"], engine["meta"]["batch_size"], engine["fit"]["steps"]) == (4, 4, 2)
    assert manifest["builder"]["build"]["val_every"] == 2 and manifest["meta_training"]["steps"] == 4
    again = mednf.build("phantomnf", out=out, preset="tiny", size=16, max_samples=8, steps=4, fit_steps=2,
                        overrides={"build.val_every": 2, "build.block_rows": 4, "meta": {"batch_size": 4}},
                        progress=False)  # complete: returned without work
    assert again["train"].latents.tobytes() == data["train"].latents.tobytes()


@pytest.mark.parametrize("kwargs, message", [
    ({"device": "tpu"}, "device = 'tpu' is invalid"),
    ({"overrides": {"steps": 5}}, "overrides 'steps' = 5 is invalid"),
    ({"overrides": {"build.val_every": 0}}, r"build.val_every = 0 is invalid: expected an integer ≥ 1"),
    ({"memory_budget": "lots"}, "lots"),
])
def test_bad_arguments_are_one_line_errors(tmp_path, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        mednf.build("phantomnf", out=tmp_path / "x", **kwargs)
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("name", ["build", "load", "info", "encode", "encode_points", "inpaint", "evaluate",
                                  "classify"])
def test_top_level_functions_have_their_real_signatures_and_docstrings(name):
    function = getattr(mednf, name)
    parameters = inspect.signature(function).parameters.values()
    assert not any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters)
    assert function.__doc__ and len(function.__doc__) > 40
    assert name in dir(mednf) and name in mednf.__all__
    assert set(mednf.__all__) == {"__version__", *mednf._LAZY}
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        mednf.nope  # noqa: B018
