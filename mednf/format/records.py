"""Typed records of the manifest's open sections: ``meta_training``, ``fit`` and ``origin``.

Each section is a :class:`JsonRecord`: its known keys are typed attributes (checked when a manifest is read),
and it stays a read-only mapping of the JSON it was made from, in the recorded key order, so that a record
written and read back gives the same bytes, and keys a newer mednf adds are kept rather than dropped.
Absent keys read as None. Which keys a producer writes is its own business (a build writes the curves and
the memory plan, an import of the official release writes who trained it); the record only knows their
types.

The ``source`` section is not typed here: its keys belong to the source kind that wrote it
(:meth:`mednf.sources.kinds.SourceKind.description`), and typing it in the format would put every kind's
schema into the format layer.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator, Mapping
from typing import Any, ClassVar, TypeVar, get_args, get_origin

from mednf.errors import FormatError


def _json_types(hint: Any) -> tuple[type, ...]:
    """The runtime types a JSON value of annotation ``hint`` may have (a float may be written as an int)."""
    if get_origin(hint) in (typing.Union, types.UnionType):
        return tuple(t for arg in get_args(hint) for t in _json_types(arg))
    if hint is type(None):
        return (type(None),)
    if hint is float:
        return (int, float)
    origin = get_origin(hint)
    return (origin if isinstance(origin, type) else hint,)


def _is_instance(value: Any, expected: tuple[type, ...]) -> bool:
    return isinstance(value, expected) and not (isinstance(value, bool) and bool not in expected)


R = TypeVar("R", bound="JsonRecord")


class JsonRecord(Mapping[str, Any]):
    """A section of a manifest: typed attributes over an ordered JSON object (see the module docstring)."""

    _types: ClassVar[dict[str, tuple[type, ...]]] = {}  # key → the JSON types it may hold (from the annotations)

    def __init_subclass__(cls) -> None:
        super().__init_subclass__()
        hints = typing.get_type_hints(cls)
        cls._types = {key: _json_types(hint) for key, hint in hints.items() if not key.startswith("_")}

    def __init__(self, **values: Any) -> None:
        """A record of ``values`` in the order given (None values are written as JSON null)."""
        for key, value in values.items():
            expected = self._types.get(key)
            if expected is not None and not _is_instance(value, expected):
                raise FormatError(f"{self._section()}.{key} = {str(value)[:40]!r} has type {type(value).__name__}, "
                                  f"expected {' or '.join(t.__name__ for t in expected)}")
        self._data = dict(values)

    @classmethod
    def from_json(cls: type[R], data: Any, where: str) -> R:
        """The record of a parsed JSON object (a FormatError naming ``where`` if it is not one, or a known key
        holds the wrong type)."""
        if not isinstance(data, dict):
            raise FormatError(f"{where}: {cls._section()} is a {type(data).__name__}, expected an object")
        try:
            return cls(**data)
        except FormatError as err:
            raise FormatError(f"{where}: {err}") from None

    @classmethod
    def _section(cls) -> str:
        return cls.__name__

    def __getattr__(self, key: str) -> Any:
        if key in type(self)._types:
            return self._data.get(key)
        raise AttributeError(f"{type(self).__name__} has no field {key!r}")

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Mapping) and dict(self._data) == dict(other)

    __hash__ = None  # type: ignore[assignment]  # a mapping: unhashable, like the dict it stands for

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._data!r})"

    def to_json(self) -> dict[str, Any]:
        """The JSON object, keys in the recorded order."""
        return dict(self._data)

    def replace(self: R, **changes: Any) -> R:
        """A copy with ``changes`` (new keys go last)."""
        return type(self)(**{**self._data, **changes})


class MetaTraining(JsonRecord):
    """``meta_training``: how θ was meta-learned (or, for an import, by whom)."""

    steps: int | None  # meta-iterations done (None: not known, e.g. the official release)
    best_step: int | None  # the iteration of the kept θ (best validation PSNR)
    best_val_psnr: float | None
    val_samples: int | None  # size of the fixed validation subset
    history: list[Any]  # one object per validation: step, val_psnr, train_psnr, shift_rms, val_ssim
    seconds: float | None
    memory: dict[str, Any] | None  # the memory plan (mednf.engine.planner.MemoryPlan.to_dict) and the peak
    precision: dict[str, Any] | None  # requested / effective precision (mednf.engine.precision.Precision.to_dict)
    float32_products: str | None  # torch's float32 matmul precision mednf set: "highest" (IEEE) or "high" (TF32)
    curves: dict[str, Any] | None  # csv, png, complete: the training curves' files
    schedule: list[Any] | None  # the runs that made the θ: from, length (a --continue-to adds one)
    baseline_check: dict[str, Any] | None  # does the latent carry per-sample information (mednf.engine.baselines)
    compiled: dict[str, Any] | None  # the compiled meta-gradient's self-check (mednf.engine.compiled.CompileReport)
    recipe: dict[str, Any] | None  # a mednf recipe's changes against the paper (mednf.building.recipe.recipe_record)
    by: str | None  # who meta-trained θ, when not mednf
    note: str | None

    @classmethod
    def _section(cls) -> str:
        return "meta_training"


class FitRecord(JsonRecord):
    """``fit``: the test-time fit of every sample's latent."""

    seconds: float
    signals_per_second: float
    batch_size: int
    kernel: str  # "eager" | "compiled" (mednf.engine.fused_latent_grad.kernel_record)
    compiler: str | None
    why: str | None  # why a compiled kernel fell back to the eager one
    check: dict[str, Any] | None  # the compiled kernel's self-check (mednf.engine.compiled.CompileReport)
    preview: dict[str, Any] | None  # png, split, samples: the reconstruction grid

    @classmethod
    def _section(cls) -> str:
        return "fit"


class Origin(JsonRecord):
    """``origin``: where a downloaded or imported copy came from (absent for a dataset built here)."""

    kind: str | None  # "official-release" for an import of the MedFuncta authors' release
    doi: str | None
    folder: str | None
    zenodo_record: str | None
    zenodo: str | None
    hf_repo: str | None
    revision: str | None
    endpoint: str | None
    files: dict[str, Any] | None  # fetched file → how it was verified
    model_file: str | None
    w0s: list[Any] | None
    missing: dict[str, list[Any]] | None  # split → source indices without a latent
    missing_note: str | None
    measured: bool | None

    @classmethod
    def _section(cls) -> str:
        return "origin"
