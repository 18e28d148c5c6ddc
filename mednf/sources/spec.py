"""Builder specs: what one MedNF sub-dataset is made of, read from a declarative TOML file.

The shipped files live in ``builders/`` (package ``mednf.builders``): the seven sub-datasets of the
paper's Table 7, the embedded ``PhantomNF`` and two extras (BreastNF, AdrenalNF3D). A user may pass the
path of a file of their own with the same fields. Names are case-insensitive.

A spec says where the images come from (``[source]``), what the labels mean (``[labels]``), how many
samples each split must have (``[splits]``), which engine preset and overrides to use (``[engine]``) and
how the build runs (``[build]``). :func:`resolve_engine` turns it into an :class:`EngineConfig`.

Builder files are strict: an unknown key or section (a typo) is a ConfigError naming the closest known one,
every value's type is checked (a bool is never a number), and ``name`` is a plain identifier because it
names the dataset's folder. What ``[source]`` may hold depends on its kind (:mod:`mednf.sources.kinds`).
"""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from mednf.engine.config import EngineConfig, FieldConfig, FitConfig, MetaConfig
from mednf.engine.presets import get_preset
from mednf.errors import ConfigError, closest, did_you_mean
from mednf.format.layout import DATASET_NAME
from mednf.format.splits import SPLITS
from mednf.shipped import shipped_folder
from mednf.sources.kinds import get_kind
from mednf.sources.values import get_value as _get

Task = Literal["multi-class", "multi-label", "ordinal"]
_TASKS = ("multi-class", "multi-label", "ordinal")
_TOP_KEYS = ("name", "description", "modality", "paper", "seed")
_SECTIONS = ("source", "labels", "splits", "engine", "build")
_SOURCE_KEYS = ("kind", "size", "channels", "dims", "license")  # every kind; kinds add their own
_ENGINE_SECTIONS = {"field": FieldConfig, "meta": MetaConfig, "fit": FitConfig}
_FROM_SOURCE = {"in_dims": "dims", "out_dims": "channels"}  # field keys that follow [source]


@dataclass(frozen=True)
class SourceSpec:
    """The ``[source]`` table: where the images come from and their shape."""
    kind: str  # one of mednf.sources.kinds.kind_names(): "medmnist", "phantom", "images", "nifti", "table1d"
    size: int  # side length of the images / volumes, length of 1D signals
    channels: int  # 1 gray, 3 RGB (1D signals: any number of leads)
    dims: int = 2  # 1 signals, 2 images, 3 volumes
    license: str = ""
    flag: str = ""  # medmnist flag, e.g. "chestmnist"
    url: str = ""  # with "{file}" placeholder
    md5: dict[str, str] = field(default_factory=dict)  # size (as str) → md5 of the official npz
    path: str = ""  # a user's folder or file (images, nifti, table1d), absolute: resolved against the builder file
    options: dict[str, Any] = field(default_factory=dict)  # the kind's own keys, defaults filled in

    @property
    def file_name(self) -> str:
        """MedMNIST's file name for this size: ``{flag}.npz`` at 28, ``{flag}_{size}.npz`` otherwise."""
        suffix = "" if self.size == 28 else f"_{self.size}"
        return f"{self.flag}{suffix}.npz"


@dataclass(frozen=True)
class LabelSpec:
    """The ``[labels]`` table: the task type and one name per label value."""
    task: Task
    names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        """The number of label names."""
        return len(self.names)


@dataclass(frozen=True)
class BuildSettings:
    """How a build runs (not part of the method): checkpoints, validation, block size."""

    checkpoint_every: int = 200  # meta-iterations between checkpoints
    val_every: int = 500  # meta-iterations between validation runs (best checkpoint is kept)
    val_samples: int = 64  # fixed validation subset (the first n of the val split)
    block_rows: int = 1024  # rows per Zarr chunk = rows fitted and written per block


@dataclass(frozen=True)
class BuilderSpec:
    """One builder file: a sub-dataset's source, labels, split counts, engine and build settings."""
    name: str
    description: str
    modality: str
    source: SourceSpec
    labels: LabelSpec
    splits: dict[str, int]  # expected counts
    preset: str
    engine_overrides: dict[str, dict[str, Any]]
    build: BuildSettings
    seed: int = 0
    paper: bool = False
    path: str = ""  # where the spec was read from

    def to_dict(self) -> dict[str, Any]:
        """The spec as plain data for the manifest (``path`` and ``options`` only where set)."""
        data = dataclasses.asdict(self)
        for key in ("path", "options"):  # only user-data kinds have them: MedMNIST/phantom specs stay as before
            if not data["source"][key]:
                del data["source"][key]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuilderSpec:
        """Inverse of :meth:`to_dict` (e.g. the ``builder`` entry of a manifest)."""
        labels = data["labels"]
        return cls(**{**data, "source": SourceSpec(**data["source"]),
                      "labels": LabelSpec(task=labels["task"], names=tuple(labels["names"])),
                      "build": BuildSettings(**data["build"])})

    def with_size(self, size: int) -> BuilderSpec:
        """The same sub-dataset at another resolution (one its kind offers); the paper preset follows the size."""
        sizes = get_kind(self.source.kind).sizes(self.source)  # None: any size
        if not isinstance(size, int) or isinstance(size, bool) or size < 4 or (sizes is not None and size not in sizes):
            expected = f"one of {sizes}; pick a MedMNIST size that exists" if sizes else "an integer ≥ 4"
            raise ConfigError(f"size = {size!r} is not available for {self.name}: expected {expected}")
        preset = self.preset
        if preset.startswith("2d-") and preset.removeprefix("2d-") in ("64", "128", "224") and size in (64, 128, 224):
            preset = f"2d-{size}"  # the paper's configuration for that resolution (Table 3)
        return dataclasses.replace(self, source=dataclasses.replace(self.source, size=size), preset=preset)


def _builtin_files() -> dict[str, Any]:
    folder = shipped_folder("builders")
    return {p.name.removesuffix(".toml"): p for p in folder.iterdir()
            if p.name.endswith(".toml") and p.name != "registry.toml"}


def builder_names() -> list[str]:
    """Display names of the shipped builders (paper's first, then the others)."""
    specs = [load_builder(key) for key in sorted(_builtin_files())]
    specs.sort(key=lambda s: (not s.paper, not get_kind(s.source.kind).embedded, s.name))
    return [s.name for s in specs]


COUNT_LIMIT = 2**63
"""Every count and seed of a builder file is below this: it must fit the int64 of NumPy and torch."""


def _count(table: dict[str, Any], key: str, where: str, default: Any = ..., minimum: int = 1) -> int:
    value = _get(table, key, where, int, default)
    if not minimum <= value < COUNT_LIMIT:
        raise ConfigError(f"{where}: {key} = {value} is invalid: expected an integer ≥ {minimum} and < 2**63; fix the "
                          "builder file")
    return value


def _check_keys(table: dict[str, Any], known: Iterable[str], where: str, what: str = "") -> None:
    """Refuse any key of ``table`` outside ``known`` (a typo would otherwise be silently ignored)."""
    known = list(known)
    for key, value in table.items():
        if key not in known:
            thing = f"section [{key}]" if isinstance(value, dict) else f"key {key!r}"
            hint = did_you_mean(key, known) or "; remove or rename it"
            raise ConfigError(f"{where}: {thing} is unknown{what}: expected one of {', '.join(known)}{hint}")


def _parse_source(data: dict[str, Any], where: str, base_dir: Path) -> SourceSpec:
    src = _get(data, "source", where, dict)
    where = f"{where} [source]"
    kind = get_kind(_get(src, "kind", where, str), where)
    _check_keys(src, (*_SOURCE_KEYS, *kind.source_keys), where, f" for kind = {kind.name!r}")
    md5 = _get(src, "md5", where, dict, {}) if "md5" in kind.source_keys else {}
    path = _get(src, "path", where, str, ... if "path" in kind.required_keys else "")
    if path:  # relative to the builder file's folder, stored absolute (a manifest must not depend on the cwd)
        path = os.path.normpath(base_dir / Path(path).expanduser())
    own = {k: v for k, v in src.items() if k not in (*_SOURCE_KEYS, "flag", "url", "md5", "path")}
    source = SourceSpec(
        kind=kind.name,
        size=_count(src, "size", where, minimum=4),
        channels=_get(src, "channels", where, int),
        dims=_get(src, "dims", where, int, 2),
        license=_get(src, "license", where, str, ""),
        flag=_get(src, "flag", where, str, ... if "flag" in kind.required_keys else ""),
        url=_get(src, "url", where, str, ""),
        md5={str(k): _get(md5, k, f"{where} md5", str) for k in md5},
        path=path,
        options=kind.parse_options(own, where),
    )
    if source.channels < 1 or source.dims not in (1, 2, 3):  # each kind narrows these in check_source
        raise ConfigError(f"{where}: channels = {source.channels}, dims = {source.dims} is invalid: expected channels "
                          "≥ 1 (1 gray, 3 RGB) and dims 1, 2 or 3")
    kind.check_source(source, where)
    return source


def _parse_labels(data: dict[str, Any], where: str) -> LabelSpec:
    lab = _get(data, "labels", where, dict)
    where = f"{where} [labels]"
    _check_keys(lab, ("task", "names"), where)
    task = _get(lab, "task", where, str)
    if task not in _TASKS:
        raise ConfigError(f"{where}: task = {task!r} is invalid: expected one of {_TASKS}{did_you_mean(task, _TASKS)}")
    names = _get(lab, "names", where, list)
    bad = [n for n in names if not isinstance(n, str) or not n.strip()]
    if bad:
        raise ConfigError(f"{where}: names holds {bad[0]!r}: expected non-empty strings, one per label")
    if len(names) < 2 or len(set(names)) != len(names):
        raise ConfigError(f"{where}: names has {len(names)} entries ({len(set(names))} distinct): expected at least 2 "
                          "distinct label names")
    return LabelSpec(task=task, names=tuple(names))  # type: ignore[arg-type]


def _parse_engine(data: dict[str, Any], where: str) -> tuple[str, dict[str, dict[str, Any]]]:
    """The preset and the per-section overrides of ``[engine]`` (keys checked against the engine dataclasses)."""
    eng = _get(data, "engine", where, dict)
    _check_keys(eng, ("preset", *_ENGINE_SECTIONS), f"{where} [engine]")
    preset = _get(eng, "preset", f"{where} [engine]", str)
    overrides = {}
    for section, klass in _ENGINE_SECTIONS.items():
        values = _get(eng, section, f"{where} [engine]", dict, None)
        if values is None:
            continue
        here = f"{where} [engine.{section}]"
        for key in values:
            if section == "field" and key in _FROM_SOURCE:
                raise ConfigError(f"{here}: {key} = {values[key]!r} is not a setting: it follows [source] "
                                  f"{_FROM_SOURCE[key]}; remove it")
        _check_keys(values, [f.name for f in dataclasses.fields(klass) if f.name not in _FROM_SOURCE], here)
        overrides[section] = dict(values)
    return preset, overrides


def _parse_build(data: dict[str, Any], where: str) -> BuildSettings:
    build_t = _get(data, "build", where, dict, {})
    where = f"{where} [build]"
    _check_keys(build_t, [f.name for f in dataclasses.fields(BuildSettings)], where)
    return BuildSettings(**{k: _count(build_t, k, where) for k in build_t})


def parse_builder(data: dict[str, Any], where: str, base_dir: str | Path | None = None) -> BuilderSpec:
    """Validate the parsed TOML of a builder file (``where`` names it in errors): every key known, every
    value of the right type. A relative ``[source] path`` is resolved against ``base_dir`` (the builder
    file's folder; default the current directory)."""
    _check_keys(data, (*_TOP_KEYS, *_SECTIONS), where)
    name = _get(data, "name", where, str)
    if not DATASET_NAME.match(name):
        raise ConfigError(f"{where}: name = {name!r} is invalid: expected letters, digits and underscores starting "
                          "with a letter (it names the dataset's folder), e.g. 'MyPhantoms'")
    source = _parse_source(data, where, Path(base_dir if base_dir is not None else ".").absolute())
    labels = _parse_labels(data, where)
    splits_t = _get(data, "splits", where, dict)
    _check_keys(splits_t, SPLITS, f"{where} [splits]")
    splits = {s: _count(splits_t, s, f"{where} [splits]") for s in SPLITS}
    preset, overrides = _parse_engine(data, where)
    spec = BuilderSpec(
        name=name,
        description=_get(data, "description", where, str, ""),
        modality=_get(data, "modality", where, str, ""),
        source=source,
        labels=labels,
        splits=splits,
        preset=preset,
        engine_overrides=overrides,
        build=_parse_build(data, where),
        seed=_count(data, "seed", where, 0, minimum=0),
        paper=_get(data, "paper", where, bool, False),
        path=where,
    )
    try:
        resolve_engine(spec)  # fail now, not after the data is loaded
    except ConfigError as err:
        raise ConfigError(f"{where} [engine]: {err}") from None
    return spec


def load_builder(name_or_path: str | Path) -> BuilderSpec:
    """A shipped builder by name (case-insensitive) or a builder file by path."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if text_name.endswith(".toml") or path.is_file():
        if not path.is_file():
            state = "is not a regular file" if path.exists() else "does not exist"  # a folder, a FIFO, a device
            raise ConfigError(f"builder file {text_name!r} {state}: give the path of a .toml builder file")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"builder file {text_name!r} is not valid TOML ({err}); fix its syntax") from None
        except RecursionError:
            raise ConfigError(f"builder file {text_name!r} nests tables or arrays too deeply to read: expected a "
                              "builder file of a few levels; fix its structure") from None
        return parse_builder(data, str(path), path.parent)
    files = _builtin_files()
    key = text_name.lower()
    if key not in files:
        close = closest(key, files, cutoff=0.5)
        known = ", ".join(builder_names())
        hint = f"; did you mean {load_builder(close).name!r}?" if close else ""
        raise ConfigError(f"builder {text_name!r} is unknown: expected one of {known} or a .toml path{hint}")
    data = tomllib.loads(files[key].read_text(encoding="utf-8"))
    return parse_builder(data, f"builders/{key}.toml")


def resolve_engine(spec: BuilderSpec, overrides: dict[str, dict[str, Any]] | None = None) -> EngineConfig:
    """The engine config of a spec: its preset, the file's overrides, then ``overrides`` (command line).

    ``field.out_dims`` and ``field.in_dims`` always follow the source (channels, dims).
    """
    cfg = get_preset(spec.preset)
    sections: dict[str, dict[str, Any]] = {k: dict(v) for k, v in spec.engine_overrides.items()}
    for key, values in (overrides or {}).items():
        follows = sorted(set(values) & set(_FROM_SOURCE)) if key == "field" else []
        if follows:
            raise ConfigError(f"field.{follows[0]} is not a setting: it follows the builder's [source] "
                              f"{_FROM_SOURCE[follows[0]]}; drop --set field.{follows[0]}")
        sections.setdefault(key, {}).update(values)
    sections.setdefault("field", {}).update(in_dims=spec.source.dims, out_dims=spec.source.channels)
    return cfg.replace(**sections)
