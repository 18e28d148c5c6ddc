"""Builder specs: what one MedNF sub-dataset is made of, read from a declarative TOML file.

The shipped files live in ``builders/`` (package ``mednf.builders``): the seven sub-datasets of the
paper's Table 7, the embedded ``PhantomNF`` and two extras (BreastNF, AdrenalNF3D). A user may pass the
path of a file of their own with the same fields. Names are case-insensitive.

A spec says where the images come from (``[source]``), what the labels mean (``[labels]``), how many
samples each split must have (``[splits]``), which engine preset and overrides to use (``[engine]``) and
how the build runs (``[build]``). :func:`resolve_engine` turns it into an :class:`EngineConfig`.
"""

from __future__ import annotations

import dataclasses
import difflib
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from mednf.engine.config import EngineConfig
from mednf.engine.presets import get_preset
from mednf.errors import ConfigError

SPLITS = ("train", "val", "test")
Task = Literal["multi-class", "multi-label", "ordinal"]
_TASKS = ("multi-class", "multi-label", "ordinal")
_SOURCE_KINDS = ("medmnist", "phantom")


@dataclass(frozen=True)
class SourceSpec:
    kind: str  # "medmnist" | "phantom"
    size: int  # side length of the images / volumes
    channels: int  # 1 gray, 3 RGB
    dims: int = 2  # 2 images, 3 volumes
    license: str = ""
    flag: str = ""  # medmnist flag, e.g. "chestmnist"
    url: str = ""  # with "{file}" placeholder
    md5: dict[str, str] = field(default_factory=dict)  # size (as str) → md5 of the official npz

    @property
    def file_name(self) -> str:
        """MedMNIST's file name for this size: ``{flag}.npz`` at 28, ``{flag}_{size}.npz`` otherwise."""
        suffix = "" if self.size == 28 else f"_{self.size}"
        return f"{self.flag}{suffix}.npz"


@dataclass(frozen=True)
class LabelSpec:
    task: Task
    names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
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
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BuilderSpec:
        """Inverse of :meth:`to_dict` (e.g. the ``builder`` entry of a manifest)."""
        labels = data["labels"]
        return cls(**{**data, "source": SourceSpec(**data["source"]),
                      "labels": LabelSpec(task=labels["task"], names=tuple(labels["names"])),
                      "build": BuildSettings(**data["build"])})

    def with_size(self, size: int) -> BuilderSpec:
        """The same sub-dataset at another MedMNIST resolution; the paper preset follows the size."""
        sizes = {int(s) for s in self.source.md5} if self.source.kind == "medmnist" else {size}  # phantoms: any
        if size not in sizes:
            raise ConfigError(f"size = {size} is not available for {self.name}: expected one of "
                              f"{sorted(sizes)}; pick a MedMNIST size that exists")
        preset = self.preset
        if preset.startswith("2d-") and preset.removeprefix("2d-") in ("64", "128", "224") and size in (64, 128, 224):
            preset = f"2d-{size}"  # the paper's configuration for that resolution (Table 3)
        return dataclasses.replace(self, source=dataclasses.replace(self.source, size=size), preset=preset)


def _builtin_files() -> dict[str, Any]:
    folder = resources.files("mednf.builders")
    return {p.name.removesuffix(".toml"): p for p in folder.iterdir()
            if p.name.endswith(".toml") and p.name != "registry.toml"}


def builder_names() -> list[str]:
    """Display names of the shipped builders (paper's first, then the others)."""
    specs = [load_builder(key) for key in sorted(_builtin_files())]
    specs.sort(key=lambda s: (not s.paper, s.source.kind != "phantom", s.name))
    return [s.name for s in specs]


def _get(table: dict[str, Any], key: str, where: str, kind: type | tuple[type, ...], default: Any = ...) -> Any:
    if key not in table:
        if default is ...:
            raise ConfigError(f"{where}: key {key!r} is missing; add it to the builder file")
        return default
    value = table[key]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ConfigError(f"{where}: {key} = {value!r} is invalid: expected {getattr(kind, '__name__', kind)}; fix the builder file")
    return value


def parse_builder(data: dict[str, Any], where: str) -> BuilderSpec:
    """Validate the parsed TOML of a builder file (``where`` names it in errors)."""
    src = _get(data, "source", where, dict)
    kind = _get(src, "kind", f"{where} [source]", str)
    if kind not in _SOURCE_KINDS:
        raise ConfigError(f"{where} [source]: kind = {kind!r} is invalid: expected one of {_SOURCE_KINDS}")
    source = SourceSpec(
        kind=kind,
        size=_get(src, "size", f"{where} [source]", int),
        channels=_get(src, "channels", f"{where} [source]", int),
        dims=_get(src, "dims", f"{where} [source]", int, 2),
        license=_get(src, "license", f"{where} [source]", str, ""),
        flag=_get(src, "flag", f"{where} [source]", str, "" if kind == "phantom" else ...),
        url=_get(src, "url", f"{where} [source]", str, ""),
        md5={str(k): str(v) for k, v in _get(src, "md5", f"{where} [source]", dict, {}).items()},
    )
    if source.channels not in (1, 3) or source.dims not in (2, 3) or source.size < 4:
        raise ConfigError(f"{where} [source]: channels={source.channels}, dims={source.dims}, size={source.size} "
                          "is invalid: expected channels 1 or 3, dims 2 or 3, size ≥ 4")
    lab = _get(data, "labels", where, dict)
    task = _get(lab, "task", f"{where} [labels]", str)
    if task not in _TASKS:
        raise ConfigError(f"{where} [labels]: task = {task!r} is invalid: expected one of {_TASKS}")
    names = tuple(str(n) for n in _get(lab, "names", f"{where} [labels]", list))
    if len(names) < 2:
        raise ConfigError(f"{where} [labels]: names has {len(names)} entries: expected at least 2 label names")
    splits_t = _get(data, "splits", where, dict)
    splits = {}
    for s in SPLITS:
        n = _get(splits_t, s, f"{where} [splits]", int)
        if n < 1:
            raise ConfigError(f"{where} [splits]: {s} = {n} is invalid: expected a count ≥ 1")
        splits[s] = n
    eng = dict(_get(data, "engine", where, dict))
    preset = _get(eng, "preset", f"{where} [engine]", str)
    overrides = {k: dict(v) for k, v in eng.items() if k != "preset"}
    build_t = _get(data, "build", where, dict, {})
    known = {f.name for f in dataclasses.fields(BuildSettings)}
    if set(build_t) - known:
        raise ConfigError(f"{where} [build]: keys {sorted(set(build_t) - known)} are unknown: expected {sorted(known)}")
    for k, v in build_t.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ConfigError(f"{where} [build]: {k} = {v!r} is invalid: expected an integer ≥ 1")
    spec = BuilderSpec(
        name=_get(data, "name", where, str),
        description=_get(data, "description", where, str, ""),
        modality=_get(data, "modality", where, str, ""),
        source=source,
        labels=LabelSpec(task=task, names=names),  # type: ignore[arg-type]
        splits=splits,
        preset=preset,
        engine_overrides=overrides,
        build=BuildSettings(**build_t),
        seed=_get(data, "seed", where, int, 0),
        paper=_get(data, "paper", where, bool, False),
        path=where,
    )
    resolve_engine(spec)  # fail now, not after the data is loaded
    return spec


def load_builder(name_or_path: str | Path) -> BuilderSpec:
    """A shipped builder by name (case-insensitive) or a builder file by path."""
    text_name = str(name_or_path)
    path = Path(text_name)
    if text_name.endswith(".toml") or path.is_file():
        if not path.is_file():
            raise ConfigError(f"builder file {text_name!r} does not exist: give the path of a .toml builder file")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"builder file {text_name!r} is not valid TOML ({err}); fix its syntax") from None
        return parse_builder(data, str(path))
    files = _builtin_files()
    key = text_name.lower()
    if key not in files:
        close = difflib.get_close_matches(key, files, n=1, cutoff=0.5)
        known = ", ".join(builder_names())
        hint = f"; did you mean {load_builder(close[0]).name!r}?" if close else ""
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
        sections.setdefault(key, {}).update(values)
    sections.setdefault("field", {}).update(in_dims=spec.source.dims, out_dims=spec.source.channels)
    return cfg.replace(**sections)
