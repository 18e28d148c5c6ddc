"""The paper presets are the paper's, schedule length included; a build that shortens one says so."""

from __future__ import annotations

from mednf.building.pipeline import BuildOptions, build
from mednf.engine.presets import PAPER_STEPS, get_preset, is_paper_preset, preset_names, shorter_than_paper


def test_paper_presets_meta_train_as_long_as_the_paper():
    paper = [name for name in preset_names() if is_paper_preset(name)]
    assert paper == ["2d-64", "2d-64-official", "1d", "3d-32", "2d-128", "2d-224"]
    assert PAPER_STEPS == 250_000 and all(get_preset(name).meta.steps == PAPER_STEPS for name in paper)
    assert not is_paper_preset("cpu-small") and not is_paper_preset("no-such-preset")
    assert shorter_than_paper("2d-64", PAPER_STEPS) == shorter_than_paper("tiny", 5) == ""
    assert shorter_than_paper("2d-64", 100_000).startswith("meta.steps = 100,000 is shorter than the paper's 250,000")


def test_a_shortened_paper_preset_is_named_in_the_build_log_and_the_card(tmp_path):
    out = tmp_path / "short"
    small = {"field": {"num_layers": 3, "hidden_dim": 16, "latent_dim": 8},
             "meta": {"steps": 2, "batch_size": 4, "inner_steps": 1}, "fit": {"steps": 1}}
    build("phantomnf", BuildOptions(out=out, preset="2d-64", size=16, max_samples=8, progress=False, overrides=small,
                                    build_overrides={"val_every": 2, "val_samples": 2}))
    note = "note: meta.steps = 2 is shorter than the paper's 250,000 meta-iterations (MedFuncta Table 2)"
    assert note in (out / "build.log").read_text()
    card = (out / "README.md").read_text()
    assert "2 iterations (best validation at 2)" in card and "; note: meta.steps = 2 is shorter" in card
    assert "40.7 dB after 250k at B = 24" in card
