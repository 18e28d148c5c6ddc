"""Source kinds: the values of ``[source] kind`` and everything that depends on them.

One object per kind knows which ``[source]`` keys a builder file may set, which sizes exist, how to read a
spec's three splits, how the manifest describes the source, and how to get the original images of a built
dataset back (evaluation, plots, the pixel baseline). Other modules ask :func:`get_kind` / :func:`kind_of`
(or the functions below) instead of comparing kind names. One module per kind:

- ``base``: :class:`SourceKind`, the interface, and :class:`ReadContext`, what one read is given;
- ``medmnist``: MedMNIST(+) npz files; ``phantom``: the embedded generated phantoms;
- ``userfiles``: the base of a user's own files; ``folder``: its folder + labels-CSV flow, which ``images``
  (PNG / JPEG / TIFF) and ``nifti`` (3D volumes) fill in; ``table1d``: 1D signals from one table file.

Adding a kind is a :class:`SourceKind` in its own module, registered in ``_KINDS``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from mednf.arguments import CLI, Wording
from mednf.errors import ConfigError, did_you_mean
from mednf.sources.base import SourceData, SplitData
from mednf.sources.kinds.base import ReadContext, Root, SourceKind
from mednf.sources.kinds.images import ImagesKind
from mednf.sources.kinds.medmnist import MedMNISTKind
from mednf.sources.kinds.nifti import NiftiKind
from mednf.sources.kinds.phantom import PhantomKind
from mednf.sources.kinds.table1d import Table1DKind

if TYPE_CHECKING:
    from mednf.sources.spec import BuilderSpec

__all__ = ["ReadContext", "Root", "SourceKind", "get_kind", "identity_of", "images_unavailable", "kind_names",
           "kind_of", "local_splits", "official_description", "outdated_source", "provide_again", "recorded_source",
           "source_card_line"]

_KINDS: dict[str, SourceKind] = {kind.name: kind for kind in (MedMNISTKind(), PhantomKind(), ImagesKind(),
                                                                NiftiKind(), Table1DKind())}


def kind_names() -> tuple[str, ...]:
    """Every valid ``[source] kind``."""
    return tuple(_KINDS)


def get_kind(name: str, where: str = "[source]") -> SourceKind:
    """The kind called ``name`` (ConfigError naming ``where`` and the known kinds otherwise)."""
    if name not in _KINDS:
        raise ConfigError(f"{where}: kind = {name!r} is invalid: expected one of {', '.join(_KINDS)}"
                          f"{did_you_mean(name, _KINDS)}")
    return _KINDS[name]


def kind_of(spec: BuilderSpec) -> SourceKind:
    """The kind of a builder spec's source."""
    return get_kind(spec.source.kind, spec.path or spec.name)


def local_splits(spec: BuilderSpec, root: Root = None) -> dict[str, SplitData] | None:
    """The official splits of ``spec`` if on disk (MedMNIST, md5 verified, no download) or generated
    (phantoms); None otherwise."""
    return kind_of(spec).local_splits(spec, root)


def official_description(spec: BuilderSpec) -> dict[str, Any]:
    """The manifest ``source`` record ``mednf build`` writes for the official data of ``spec``."""
    return kind_of(spec).description(spec)


def recorded_source(spec: BuilderSpec, data: SourceData) -> dict[str, Any]:
    """The manifest ``source`` record a build writes for ``data`` read by :func:`mednf.sources.read.load_source`
    (:meth:`SourceKind.recorded`): its description and, for a MedMNIST npz, where it was read (``path``), so
    ``mednf decode`` / ``eval`` find the images again without --medmnist-root.

    The ``path`` is not part of the description a resumed build compares: the same file moved elsewhere is
    the same source.
    """
    return kind_of(spec).recorded(data)


def identity_of(source: Mapping[str, Any]) -> dict[str, Any]:
    """A source description or manifest ``source`` record without where its data was read (its kind's
    :attr:`SourceKind.location_keys`; ``path`` for a kind this mednf does not know): the same data read from
    elsewhere is the same source (:meth:`SourceKind.identity`)."""
    kind = _KINDS.get(str(source.get("kind")))
    return kind.identity(source) if kind is not None else {k: v for k, v in source.items() if k != "path"}


def provide_again(name: str, source: dict[str, Any], wording: Wording = CLI) -> str:
    """How to give a build of ``name`` the data of its manifest ``source`` again (its kind's words, one clause;
    :meth:`SourceKind.provide_again`)."""
    return get_kind(source.get("kind", ""), "manifest source").provide_again(name, source, wording)


def outdated_source(source: dict[str, Any]) -> str | None:
    """Why a built dataset's manifest ``source`` is not what this mednf would build from (a clause), or None
    (:meth:`SourceKind.outdated`)."""
    return get_kind(source.get("kind", ""), "manifest source").outdated(source)


def images_unavailable(manifest: Any, root: Root = None) -> str:
    """Why the source images of a built dataset (a :class:`~mednf.format.manifest.Manifest`) cannot be had
    and how to provide them: one clause, for messages such as "the source images of X are not available: …"."""
    return get_kind(manifest.source["kind"], "manifest source").images_unavailable(manifest.name, manifest.source, root)


def source_card_line(source: dict[str, Any]) -> str:
    """The dataset card's line on where the data came from, for a manifest ``source`` record (its kind's words)."""
    return get_kind(source["kind"], "manifest source").card_line(source)
