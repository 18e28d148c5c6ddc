"""The manifest (``mednf.json``), typed: what a dataset is, how it was made, and the checksum of every file.

:class:`Manifest` is the one definition of the manifest's fields: the writer fills it, the reader parses
and checks it (:meth:`Manifest.from_json`), and every other module reads attributes, never string keys.
Adding a field is a change here (and, if the writer computes it, in :mod:`mednf.format.writer`).

The open sections ``meta_training``, ``fit`` and ``origin`` are typed records
(:mod:`mednf.format.records`). Sections that mirror typed objects of other layers stay plain JSON here:
``engine`` is :meth:`EngineConfig.to_dict` (:attr:`Manifest.engine_config`), ``builder`` is the builder file
as parsed (``BuilderSpec.to_dict`` in :mod:`mednf.sources.spec`, which reads it back), ``source`` is what the
source kind recorded. The format checks their shape, not their meaning, so that it needs no source kind.
"""

from __future__ import annotations

import dataclasses
import json
import math
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mednf.engine.config import EngineConfig, param_shapes
from mednf.errors import ConfigError, FormatError
from mednf.format.layout import DATASET_NAME, FORMAT_VERSION, INDEX, LATENTS, MANIFEST, MAX_SAMPLES, MODEL
from mednf.format.records import FitRecord, MetaTraining, Origin
from mednf.format.splits import check_split
from mednf.io import jsonsafe
from mednf.version import __version__

INDEX_BYTES_PER_ROW = 4096  # a row's name, source path, labels and metrics; real ones take 50–300 bytes


@dataclass(frozen=True)
class FileEntry:
    """One file of a dataset folder as the manifest lists it: its sha256 and size in bytes."""

    sha256: str
    size: int


@dataclass(frozen=True)
class LabelInfo:
    """The label task and the name of each class (each label when multi-label), in index order."""

    task: str  # "multi-class" | "multi-label" | "ordinal"
    names: tuple[str, ...]


@dataclass(frozen=True)
class LatentInfo:
    """How the latents are stored: ``[rows, dim]`` of ``dtype`` in the Zarr store ``store``."""

    dim: int  # P
    chunk_rows: int  # rows per Zarr chunk
    dtype: str = "float32"
    store: str = LATENTS


@dataclass(frozen=True)
class SplitStats:
    """One split's row count, reconstruction quality and the digests of its latents and index."""

    count: int
    psnr_mean: float | None  # None: not measured (e.g. an imported release)
    psnr_std: float | None
    ssim_mean: float | None
    latents_sha256: str  # sha256 of the raw little-endian float32 rows, independent of compression
    index_sha256: str | None = None  # sha256 of the split's index rows (writer.index_digest); None: older mednf
    # PSNR without per-sample latents (mednf.engine.baselines): mean_image_psnr, zero_latent_psnr; None: not known
    baselines: dict[str, float] | None = None


def _baselines(stats: dict[str, Any], split: str) -> dict[str, float]:
    value = stats["baselines"]
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(x, (int, float))
                                              and not isinstance(x, bool) for k, x in value.items()):
        raise FormatError(f"manifest field splits.{split}.baselines is invalid: expected names mapped to numbers")
    return {k: float(x) for k, x in value.items()}


@dataclass(frozen=True)
class Manifest:
    """A dataset's ``manifest.json``: what was built, from what, how, and the digests of its files."""

    name: str
    builder: dict[str, Any]  # the builder file as parsed (BuilderSpec.to_dict())
    engine: dict[str, Any]  # EngineConfig.to_dict()
    seed: int
    fit_seed: int  # rescaling subsets of the fit are keyed by (fit_seed, row within the split, step)
    source: dict[str, Any]  # what the data was read from: kind, file, md5, official, ...
    labels: LabelInfo
    latent: LatentInfo
    splits: dict[str, SplitStats]
    meta_training: MetaTraining
    fit: FitRecord | None
    software: dict[str, str]
    device: str
    world_size: int
    build_seconds: float
    created: str
    files: dict[str, FileEntry] = field(default_factory=dict)
    origin: Origin | None = None  # where a downloaded or imported copy came from
    format: str = "mednf"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        # producers may hand the open sections as plain objects: they are records from here on
        for name, record in (("meta_training", MetaTraining), ("fit", FitRecord), ("origin", Origin)):
            value = getattr(self, name)
            if value is not None and not isinstance(value, record):
                object.__setattr__(self, name, record.from_json(value, "manifest"))

    # ------------------------------------------------------------------ typed views
    @property
    def engine_config(self) -> EngineConfig:
        """The engine configuration."""
        return EngineConfig.from_dict(self.engine)

    @property
    def multi_label(self) -> bool:
        """Each sample may have several labels (``labels.task == "multi-label"``)."""
        return self.labels.task == "multi-label"

    @property
    def total(self) -> int:
        """Samples over all splits."""
        return sum(s.count for s in self.splits.values())

    @property
    def size_bytes(self) -> int:
        """Bytes of the files the manifest lists."""
        return sum(f.size for f in self.files.values())

    @property
    def license(self) -> str:
        """The source data's license as the builder names it ("" if it names none)."""
        return str(self.builder.get("source", {}).get("license", ""))

    def check_split(self, split: str, what: str = "split") -> str:
        """``split`` if the dataset has it, else a ConfigError naming the splits it has."""
        return check_split(split, self.splits, what)

    def replace(self, **changes: Any) -> Manifest:
        """A copy with the given fields changed."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ JSON
    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON-ready data, keys in a fixed order (format first, files last)."""
        data = dataclasses.asdict(self)
        data["labels"]["names"] = list(self.labels.names)
        for name in ("meta_training", "fit", "origin"):
            record = getattr(self, name)
            data[name] = record.to_json() if record is not None else None
        head = {"format": data.pop("format"), "format_version": data.pop("format_version")}
        files = data.pop("files")
        origin = data.pop("origin")
        return {**head, **data, **({"origin": origin} if origin is not None else {}), "files": files}

    def dumps(self) -> str:
        """:meth:`to_json` as indented UTF-8 JSON text, newline-terminated."""
        return json.dumps(self.to_json(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, data: Any, where: str | Path) -> Manifest:
        """Parse and check manifest JSON; any missing or mistyped field is a one-line FormatError."""
        if not isinstance(data, dict):
            raise FormatError(f"{where} holds a JSON {type(data).__name__}, expected an object; "
                              "rebuild or download the dataset again")
        if data.get("format") != "mednf" or data.get("format_version") != FORMAT_VERSION:
            raise FormatError(f"{where}: format {data.get('format')!r} version {data.get('format_version')!r} "
                              f"is not supported: expected mednf version {FORMAT_VERSION}; upgrade mednf")
        try:
            manifest = cls(
                name=_typed(data, "name", str),
                builder=_typed(data, "builder", dict),
                engine=_typed(data, "engine", dict),
                seed=_typed(data, "seed", int),
                fit_seed=_typed(data, "fit_seed", int),
                source=_typed(data, "source", dict),
                labels=LabelInfo(task=_typed(_typed(data, "labels", dict), "task", str),
                                 names=tuple(str(n) for n in _typed(data["labels"], "names", list))),
                latent=LatentInfo(dim=_typed(_typed(data, "latent", dict), "dim", int),
                                  chunk_rows=_typed(data["latent"], "chunk_rows", int),
                                  dtype=_typed(data["latent"], "dtype", str),
                                  store=_typed(data["latent"], "store", str)),
                splits={str(s): SplitStats(count=_typed(v, "count", int),
                                           psnr_mean=_typed(v, "psnr_mean", (int, float), optional=True),
                                           psnr_std=_typed(v, "psnr_std", (int, float), optional=True),
                                           ssim_mean=_typed(v, "ssim_mean", (int, float), optional=True),
                                           latents_sha256=_typed(v, "latents_sha256", str),
                                           index_sha256=_typed(v, "index_sha256", str, optional=True)
                                           if "index_sha256" in v else None,
                                           baselines=_baselines(v, s) if v.get("baselines") is not None else None)
                        for s, v in _typed(data, "splits", dict).items()},
                meta_training=MetaTraining.from_json(_typed(data, "meta_training", dict), "meta_training"),
                fit=_record(FitRecord, _typed(data, "fit", dict, optional=True)),
                software=_typed(data, "software", dict),
                device=_typed(data, "device", str),
                world_size=_typed(data, "world_size", int),
                build_seconds=float(_typed(data, "build_seconds", (int, float))),
                created=_typed(data, "created", str),
                files={str(k): FileEntry(sha256=_typed(v, "sha256", str), size=_typed(v, "size", int))
                       for k, v in _typed(data, "files", dict).items()},
                origin=_record(Origin, _typed(data, "origin", dict, optional=True) if "origin" in data else None),
            )
        except (_FieldError, FormatError) as err:
            raise FormatError(f"{where}: {err}; the manifest is damaged, rebuild or download the dataset "
                              "again") from None
        manifest._check_consistent(where)
        return manifest

    def _check_consistent(self, where: str | Path) -> None:
        """The sections agree with each other: builder and engine parse, P matches, the labels have names."""
        try:
            builder_name = _check_builder(self.builder)
            field = self.engine_config.field
        except (_FieldError, ConfigError, TypeError, KeyError, ValueError) as err:
            raise FormatError(f"{where}: the builder or engine section does not parse ({str(err)[:120]}); the "
                              "manifest is damaged, rebuild or download the dataset again") from None
        problems = []
        if field.latent_dim != self.latent.dim:
            problems.append(f"latent.dim {self.latent.dim} differs from the engine's latent_dim {field.latent_dim}")
        if self.labels.task not in ("multi-class", "multi-label", "ordinal") or not self.labels.names:
            problems.append(f"labels {self.labels.task!r} with {len(self.labels.names)} names is not a label schema")
        if self.latent.dtype != "float32" or self.latent.chunk_rows < 1:
            problems.append(f"latent dtype {self.latent.dtype!r} / chunk_rows {self.latent.chunk_rows} are not "
                            "supported")
        if builder_name != self.name:
            problems.append(f"name {self.name!r} differs from the builder's {builder_name!r}")
        if not DATASET_NAME.match(self.name):  # it names folders and archive members: never a path
            problems.append(f"name {self.name[:40]!r} is not a dataset name (letters, digits, underscores)")
        big = [s for s, stats in self.splits.items() if not 0 <= stats.count <= MAX_SAMPLES]
        if big:
            problems.append(f"split {big[0]!r} counts {self.splits[big[0]].count} samples, beyond any dataset")
        if not problems:
            problems = self._oversized_files(field)
        if problems:
            raise FormatError(f"{where}: {problems[0]}; the manifest is damaged, rebuild or download the dataset again")

    def _oversized_files(self, field: Any) -> list[str]:
        """Files whose declared size is beyond what a dataset of this shape can hold: a forged manifest must not
        make a reader buffer gigabytes for θ, the index or a latent chunk (each is read whole into memory)."""
        slack = 1 << 20  # headers, metadata, compression overhead
        ceilings = {MODEL: 4 * sum(math.prod(s) for s in param_shapes(field).values()) + slack,
                    INDEX: INDEX_BYTES_PER_ROW * self.total + 16 * slack}
        chunk = 4 * self.latent.chunk_rows * self.latent.dim + slack
        problems = []
        for rel, entry in self.files.items():
            in_store = rel.startswith(f"{self.latent.store}/")
            ceiling = (slack if rel.endswith(".json") else chunk) if in_store else ceilings.get(rel)
            if ceiling is not None and entry.size > ceiling:
                problems.append(f"{rel} is said to have {entry.size} bytes, more than a dataset of this shape can "
                                f"need ({ceiling})")
        return problems

    @classmethod
    def read(cls, root: str | Path) -> Manifest:
        """The manifest of dataset directory ``root`` (FormatError if absent, not JSON, or malformed)."""
        path = Path(root) / MANIFEST
        if not path.is_file():
            raise FormatError(f"{root} has no {MANIFEST}: it is not a complete MedNF dataset (an unfinished build "
                              "resumes when you run the same `mednf build` again)")
        data = jsonsafe.loads(path.read_bytes(), str(path), "rebuild or download the dataset again")
        return cls.from_json(data, path)


class _FieldError(Exception):
    pass


def _record(kind: type[FitRecord] | type[Origin], value: dict[str, Any] | None) -> Any:
    return None if value is None else kind.from_json(value, kind._section())


def _check_builder(builder: dict[str, Any]) -> str:
    """The name of a manifest's ``builder`` section, after checking the shape every reader relies on."""
    source = _typed(builder, "source", dict)
    for key in ("kind", "license"):
        _typed(source, key, str)
    for key in ("size", "channels", "dims"):
        _typed(source, key, int)
    _typed(_typed(builder, "labels", dict), "names", list)
    _typed(builder, "splits", dict)
    _typed(builder, "build", dict)
    return _typed(builder, "name", str)


def _typed(table: Any, key: str, kind: type | tuple[type, ...], *, optional: bool = False) -> Any:
    if not isinstance(table, dict):
        raise _FieldError(f"a section holding {key!r} is a {type(table).__name__}, expected an object")
    if key not in table:
        raise _FieldError(f"field {key!r} is missing")
    value = table[key]
    if value is None and optional:
        return None
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise _FieldError(f"field {key!r} = {str(value)[:40]!r} has type {type(value).__name__}")
    return value


def software_versions() -> dict[str, str]:
    """Versions recorded in a manifest: mednf, torch, zarr, numcodecs, pyarrow, python."""
    import numcodecs
    import pyarrow
    import torch
    import zarr

    return {"mednf": __version__, "torch": torch.__version__, "zarr": zarr.__version__,
            "numcodecs": numcodecs.__version__, "pyarrow": pyarrow.__version__, "python": platform.python_version()}


def now() -> str:
    """The manifest's ``created`` timestamp (local time with offset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def new_manifest(spec: Any, engine: Any, *, source: dict[str, Any], chunk_rows: int,
                 meta_training: MetaTraining | dict[str, Any], fit: FitRecord | dict[str, Any] | None, device: str,
                 world_size: int, build_seconds: float, origin: Origin | dict[str, Any] | None = None) -> Manifest:
    """The manifest of a dataset made from builder ``spec`` (BuilderSpec) with ``engine`` (EngineConfig),
    before :meth:`DatasetWriter.finish` fills ``splits`` and ``files``."""
    return Manifest(
        name=spec.name, builder=spec.to_dict(), engine=engine.to_dict(), seed=spec.seed, fit_seed=spec.seed,
        source=source, labels=LabelInfo(task=spec.labels.task, names=tuple(spec.labels.names)),
        latent=LatentInfo(dim=engine.field.latent_dim, chunk_rows=chunk_rows), splits={},
        meta_training=meta_training, fit=fit,  # type: ignore[arg-type]  # records from __post_init__ on
        software=software_versions(), device=device, world_size=world_size, build_seconds=build_seconds,
        created=now(), origin=origin)  # type: ignore[arg-type]
