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


def test_the_fast_recipe_changes_only_what_it_names_against_the_paper():
    from mednf.building.recipe import recipe_record
    from mednf.engine.presets import recipe_of

    assert recipe_of("2d-64-fast") == "2d-64" and recipe_of("2d-64") is None and recipe_of("nope") is None
    assert not is_paper_preset("2d-64-fast")
    paper, fast = get_preset("2d-64").to_dict(), get_preset("2d-64-fast").to_dict()
    changed = {f"{section}.{key}" for section in paper for key in paper[section]
               if paper[section][key] != fast[section][key]}
    assert changed == {"meta.meta_lr", "meta.omega_lr", "meta.warmup_steps", "meta.steps"}
    assert fast["meta"]["meta_lr"] == 10 * paper["meta"]["meta_lr"] and fast["meta"]["omega_lr"]
    assert fast["meta"]["warmup_steps"] == fast["meta"]["steps"] // 20  # 5 % of its own schedule
    record = recipe_record("2d-64-fast", get_preset("2d-64-fast").replace(field={"out_dims": 3}))
    assert record is not None and record["paper_preset"] == "2d-64" and record["measured"]
    assert record["changes"] == ["meta.meta_lr: 3e-06 → 3e-05", "meta.omega_lr: False → True",
                                 f"meta.steps: 250000 → {fast['meta']['steps']}",
                                 f"meta.warmup_steps: 0 → {fast['meta']['warmup_steps']}"]  # RGB is the data's
    assert recipe_record("2d-64", get_preset("2d-64")) is None and recipe_record("tiny", get_preset("tiny")) is None


def test_a_build_on_the_fast_recipe_says_what_it_changes_in_the_log_manifest_and_card(tmp_path):
    from mednf.format.reader import verify_dataset

    out = tmp_path / "fast"
    small = {"field": {"num_layers": 3, "hidden_dim": 16, "latent_dim": 8},
             "meta": {"steps": 2, "batch_size": 4, "inner_steps": 1, "warmup_steps": 1}, "fit": {"steps": 1}}
    build("phantomnf", BuildOptions(out=out, preset="2d-64-fast", size=16, max_samples=8, progress=False,
                                    overrides=small, build_overrides={"val_every": 2, "val_samples": 2}))
    recipe = verify_dataset(out).meta_training.recipe
    assert recipe["preset"] == "2d-64-fast" and recipe["paper_preset"] == "2d-64"
    assert "meta.omega_lr: False → True" in recipe["changes"] and "field.num_layers: 15 → 3" in recipe["changes"]
    line = "note: preset 2d-64-fast is mednf's recipe, not the paper's: against 2d-64 it changes "
    log, card = (out / "build.log").read_text(), (out / "README.md").read_text()
    assert line in log and "Measured: " in log
    assert "; note: preset 2d-64-fast is mednf's recipe" in card and "is shorter than the paper's" not in card
