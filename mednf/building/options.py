"""The settings of one ``mednf build`` (:class:`BuildOptions`) and the builder spec they turn into."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mednf.arguments import CLI, Wording
from mednf.engine.config import EngineConfig
from mednf.engine.memory import MemoryBudget
from mednf.errors import ConfigError
from mednf.format.layout import mednf_home
from mednf.sources.spec import BuilderSpec, load_builder, resolve_engine


@dataclass
class BuildOptions:
    """Everything ``mednf build`` is told beside the builder (:func:`mednf.building.api.build_options` checks it)."""

    out: Path | None = None  # default: $MEDNF_HOME/<Name>
    gpu: int | None = None  # None → CPU
    size: int | None = None
    preset: str | None = None
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # engine sections
    build_overrides: dict[str, int] = field(default_factory=dict)  # [build] settings
    medmnist_root: Path | None = None
    source_npz: Path | None = None
    max_samples: int | None = None
    download: bool = True
    restart: bool = False
    progress: bool = True
    memory_budget: MemoryBudget | str | int | None = None  # "8GB", bytes; None → a safe share of free memory
    continue_to: int | None = None  # continue a finished build's meta-training to this many iterations
    tensorboard: Path | None = None  # also log the training curves (and validation images) there
    wording: Wording = CLI  # how messages name these options: the CLI's flags or mednf.build's keywords


def prepare_spec(name_or_path: str | Path, options: BuildOptions) -> tuple[BuilderSpec, EngineConfig]:
    """The spec with --size/--preset/[build] overrides applied, and its engine config."""
    spec = load_builder(name_or_path)
    if options.size is not None:
        spec = spec.with_size(options.size)
    if options.preset is not None:  # another preset replaces the builder's whole [engine] section
        spec = dataclasses.replace(spec, preset=options.preset, engine_overrides={})
    if options.build_overrides:
        known = {f.name for f in dataclasses.fields(spec.build)}
        unknown = sorted(set(options.build_overrides) - known)
        if unknown:
            raise ConfigError(f"build settings {unknown} are unknown: expected {sorted(known)}; check --set build.*")
        spec = dataclasses.replace(spec, build=dataclasses.replace(spec.build, **options.build_overrides))
    if options.max_samples is not None and options.max_samples < 1:
        raise ConfigError(f"{options.wording.option('max_samples', options.max_samples)} is invalid: expected an "
                          "integer ≥ 1")
    return spec, resolve_engine(spec, options.overrides)


def output_folder(spec: BuilderSpec, options: BuildOptions) -> Path:
    """Where the dataset is built: ``--out``, or ``$MEDNF_HOME/<Name>``."""
    return Path(options.out or mednf_home() / spec.name).expanduser()
