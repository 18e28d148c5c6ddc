"""``mednf build`` and ``mednf demo``: meta-learn a shared network and fit a latent for every image."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path
from typing import Any

import click

from mednf.building.api import build_options
from mednf.building.pipeline import build as run_build
from mednf.cli.errors import GuardedCommand
from mednf.cli.options import gpu_option, medmnist_root_option, threads_option
from mednf.cli.output import Printer, printing_options
from mednf.errors import ConfigError, MednfError
from mednf.format.layout import mednf_home
from mednf.lookup import info as dataset_info
from mednf.sources.spec import load_builder
from mednf.tasks.demo import run_demo


class _BuildCommand(GuardedCommand):
    """``mednf build``: an error's traceback goes to the output folder's ``build.log``."""

    def build_dir(self, ctx: click.Context) -> Path | None:
        """The output directory (its --out, else $MEDNF_HOME/<Name>), if it can be told."""
        try:
            if ctx.params.get("out") is not None:
                return Path(ctx.params["out"]).expanduser()
            return mednf_home() / load_builder(ctx.params["name"]).name
        except (MednfError, OSError, RuntimeError):  # RuntimeError: "~nosuchuser/…" does not expand
            return None


def _parse_set(values: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """``--set meta.inner_steps=5`` → ``{"meta": {"inner_steps": 5}}`` (values parsed as TOML)."""
    sections: dict[str, dict[str, Any]] = {}
    for item in values:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise ConfigError(f"--set {item!r} is invalid: expected SECTION.KEY=VALUE, e.g. --set meta.inner_steps=5")
        try:
            value = tomllib.loads(f"v = {raw.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()  # bare words are strings: --set field.shift_mode=outside
        sections.setdefault(section, {})[name] = value
    return sections


@click.command(cls=GuardedCommand)
@click.option("--steps", default=300, show_default=True, type=click.IntRange(min=1), help="Meta-iterations.")
@click.option("--size", default=32, show_default=True, type=click.IntRange(min=4), help="Phantom side length.")
@click.option("--seed", default=0, show_default=True, type=int, help="Seed of the phantoms and of θ's initialisation.")
@threads_option
@printing_options
def demo(steps: int, size: int, seed: int, printer: Printer) -> None:
    """Meta-learn and fit generated phantoms (CPU, ~1 minute).

    Nothing is downloaded or written: it prints what it measured."""
    printer.result(dataclasses.asdict(run_demo(steps=steps, size=size, seed=seed, log=printer.line)))


@click.command(cls=_BuildCommand)
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path), help="Output directory [default: $MEDNF_HOME/<Name>].")
@gpu_option("Build on cuda:N (default: CPU).")
@click.option("--cpu", "force_cpu", is_flag=True, help="Build on the CPU (the default).")
@click.option("--steps", type=int, help="Meta-iterations (meta.steps).")
@click.option("--batch-size", type=int, help="Meta batch size B (meta.batch_size).")
@click.option("--latent-dim", type=int, help="Latent size P (field.latent_dim).")
@click.option("--fit-steps", type=int, help="Test-time fit steps H (fit.steps).")
@click.option("--precision", type=click.Choice(["fp32", "tf32", "bf16"]),
              help="Matrix products in fp32 (default), tf32 (CUDA) or bf16 (field.precision).")
@click.option("--size", type=int, help="MedMNIST resolution (28, 64, 128, 224); 128/224 use the paper's presets.")
@click.option("--preset", help="Engine preset instead of the builder's [engine] section (see `mednf presets`).")
@click.option("--set", "settings", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Any engine or build setting, e.g. --set meta.inner_steps=5 --set build.val_every=100.")
@medmnist_root_option("Folder with MedMNIST npz files [env MEDMNIST_ROOT; default ~/.medmnist].")
@click.option("--source-npz", type=click.Path(path_type=Path), help="Build from this npz (MedMNIST layout) instead.")
@click.option("--max-samples", type=int, help="Use only the first N samples of each split (quick trial builds).")
@click.option("--no-download", is_flag=True, help="Fail instead of downloading a missing MedMNIST file.")
@click.option("--resume", is_flag=True, help="Continue an unfinished build (what a rerun does anyway).")
@click.option("--restart", is_flag=True, help="Discard an earlier build in the output directory and start over.")
@click.option("--tensorboard", type=click.Path(path_type=Path), metavar="DIR",
              help="Also log the training curves and validation reconstructions to TensorBoard in DIR "
                   "(pip install tensorboard).")
@click.option("--continue-to", "continue_to", type=int, metavar="N",
              help="Continue a finished build's meta-training to N iterations (its own settings, the schedule "
                   "re-planned), then fit and write it again; the old dataset stays until the new one is complete.")
@click.option("--memory-budget", metavar="SIZE",
              help="Memory the build may use, e.g. 8GB or 6GiB (GB = 10^9 B, GiB = G = 2^30 B): the whole process "
                   "on the CPU, the GPU's memory with --gpu. Meta-iterations run in micro-batches that fit it "
                   "(same result). [default: 60% of available RAM / 80% of free GPU memory]")
@threads_option
@printing_options
def build(name: str, out: Path | None, gpu: int | None, force_cpu: bool, steps: int | None,
          batch_size: int | None, latent_dim: int | None, fit_steps: int | None, size: int | None,
          preset: str | None, settings: tuple[str, ...], medmnist_root: Path | None, source_npz: Path | None,
          max_samples: int | None, no_download: bool, resume: bool, restart: bool, precision: str | None,
          memory_budget: str | None, continue_to: int | None, tensorboard: Path | None, printer: Printer) -> None:
    """Build the MedNF sub-dataset NAME.

    NAME is a builder name (see `mednf list`) or a builder .toml file.

    Meta-learns the shared network, fits a latent for every image of every split and writes the dataset
    (manifest last). Rerunning the same command resumes an interrupted build.
    """
    if gpu is not None and force_cpu:
        raise ConfigError("--gpu and --cpu were both given: expected one of them; drop one")
    if resume and restart:
        raise ConfigError("--resume and --restart were both given: expected one of them; drop one")
    options = build_options(out=out, gpu=gpu, steps=steps, batch_size=batch_size, latent_dim=latent_dim,
                            fit_steps=fit_steps, precision=precision, size=size, preset=preset,
                            overrides=_parse_set(settings), medmnist_root=medmnist_root, source_npz=source_npz,
                            max_samples=max_samples, download=not no_download, restart=restart,
                            continue_to=continue_to, memory_budget=memory_budget, progress=printer.progress,
                            tensorboard=tensorboard)
    path = run_build(name, options)
    printer.result(dataset_info(path))
