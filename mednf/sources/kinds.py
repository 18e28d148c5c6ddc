"""Source kinds: the values of ``[source] kind`` and everything that depends on them.

One object per kind ("medmnist", "phantom", and a user's own files: "images", "nifti", "table1d") knows which ``[source]`` keys a builder file may set, which
sizes exist, how to read a spec's three splits, how the manifest describes the source, and how to get the
original images of a built dataset back (evaluation, plots, the pixel baseline). Other modules ask
:func:`get_kind` / :func:`kind_of` instead of comparing kind names; adding a kind is a
:class:`~mednf.sources.kind.SourceKind` (here, or in its own module) registered in ``_KINDS``.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any


from mednf.errors import ConfigError, SourceError, did_you_mean
from mednf.sources.base import SourceData, SplitData
from mednf.sources.folder_images import ImagesKind
from mednf.sources.kind import Root, SourceKind
from mednf.sources.medmnist import expected_md5, file_md5, locate_medmnist, medmnist_root, read_npz, source_url
from mednf.sources.nifti import NiftiKind
from mednf.sources.phantoms import GENERATOR_VERSION, phantom_source
from mednf.sources.table1d import Table1DKind

if TYPE_CHECKING:
    from mednf.sources.spec import BuilderSpec, SourceSpec

__all__ = ["Root", "SourceKind", "get_kind", "images_unavailable", "kind_names", "kind_of", "local_splits",
           "official_description", "recorded_source", "source_card_line"]
_FLAG = re.compile(r"[a-z0-9_]+\Z")
_MD5 = re.compile(r"[0-9a-f]{32}\Z")


class MedMNISTKind(SourceKind):
    """A MedMNIST(+) npz: official (md5 in the builder file), downloaded when missing, or the user's own."""

    name = "medmnist"
    source_keys = ("flag", "url", "md5")
    required_keys = ("flag",)

    def check_source(self, source: SourceSpec, where: str) -> None:
        if source.channels not in (1, 3) or source.dims not in (2, 3):
            raise ConfigError(f"{where}: channels = {source.channels}, dims = {source.dims} is invalid for kind "
                              "'medmnist': expected channels 1 or 3 and dims 2 or 3")
        if not _FLAG.match(source.flag):
            raise ConfigError(f"{where}: flag = {source.flag!r} is invalid: expected a MedMNIST flag of lowercase "
                              "letters, digits and underscores, e.g. 'chestmnist'")
        if source.url:
            try:
                source.url.format(file="x.npz")
            except (KeyError, IndexError, ValueError):
                raise ConfigError(f"{where}: url = {source.url!r} is invalid: expected a URL whose only placeholder "
                                  "is {file}") from None
            if "{file}" not in source.url:
                raise ConfigError(f"{where}: url = {source.url!r} is invalid: expected a {{file}} placeholder for "
                                  "the file name; add it")
        for size, md5 in source.md5.items():
            if not size.isdigit() or not _MD5.match(md5):
                raise ConfigError(f"{where}: md5 {size!r} = {md5!r} is invalid: expected a size (e.g. \"64\") mapped "
                                  "to 32 lowercase hex digits")
        sizes = self.sizes(source)
        if sizes is not None and source.size not in sizes:
            raise ConfigError(f"{where}: size = {source.size} has no md5: expected one of {sizes}; pick one of those "
                              "sizes or add its md5")

    def sizes(self, source: SourceSpec) -> list[int] | None:
        return sorted(int(s) for s in source.md5) or None  # no md5 at all: a user's own files, any size

    def load(self, spec: BuilderSpec, *, root: Root, source_npz: Root, download_missing: bool, progress: bool,
             warn: Callable[[str], None]) -> SourceData:

        expected = spec.source.md5.get(str(spec.source.size))
        if source_npz is not None:
            path = Path(source_npz).expanduser()
            if not path.is_file():
                raise SourceError(f"--source-npz {path} does not exist; give the path of a MedMNIST-layout .npz")
            md5 = file_md5(path)
        else:
            path, md5 = locate_medmnist(spec, root, download_missing=download_missing, progress=progress)
        splits = read_npz(path, spec)
        official = md5 == expected
        counts = {s: len(d.images) for s, d in splits.items()}
        if official and counts != spec.splits:
            raise SourceError(f"{path} has split counts {counts}, but {spec.path} expects {spec.splits}; "
                              "fix [splits] in the builder file")
        if not official:
            warn(f"{path} is not the official {spec.source.file_name} (md5 {md5}, official {expected or 'unknown'}); "
                 f"building from it anyway with split counts {counts}")
        return SourceData(splits, self._describe(spec, md5, official), origin=str(path))

    def local_splits(self, spec: BuilderSpec, root: Root = None) -> dict[str, SplitData] | None:
        try:
            path, _ = locate_medmnist(spec, root, download_missing=False, progress=False)
        except SourceError:
            return None
        return read_npz(path, spec)

    def description(self, spec: BuilderSpec) -> dict[str, Any]:
        return self._describe(spec, expected_md5(spec), True)

    @staticmethod
    def _describe(spec: BuilderSpec, md5: str, official: bool) -> dict[str, Any]:
        return {"kind": "medmnist", "flag": spec.source.flag, "size": spec.source.size,
                "file": spec.source.file_name, "md5": md5, "official": official, "url": source_url(spec),
                "license": spec.source.license}

    def recorded(self, data: SourceData) -> dict[str, Any]:
        """The description plus ``path``, the absolute path of the npz the build read, so that evaluation
        and plots find it again without being told where it is."""
        return {**data.description, "path": str(Path(data.origin).expanduser().absolute())}

    def _candidates(self, spec: BuilderSpec, source: dict[str, Any], root: Root) -> list[Path]:
        """Where the built-from npz may be: ``root`` (else ``$MEDMNIST_ROOT``, ``~/.medmnist``), then the path
        the build recorded."""
        paths = [medmnist_root(root) / spec.source.file_name]
        if source.get("path") and Path(source["path"]) not in paths:
            paths.append(Path(source["path"]))
        return paths

    def built_split(self, spec: BuilderSpec, source: dict[str, Any], split: str, root: Root) -> SplitData | None:
        for path in self._candidates(spec, source, root):
            if path.is_file() and file_md5(path) == source["md5"]:
                return read_npz(path, spec)[split]
        return None

    def images_unavailable(self, name: str, source: dict[str, Any], root: Root) -> str:
        path = medmnist_root(root) / source["file"]
        problem = "has another md5" if path.is_file() else "is missing"
        recorded = source.get("path")
        also = f" (as is {recorded}, where the build read it)" if recorded and Path(recorded) != path else ""
        return (f"{path} {problem}{also} ({name} was built from {source['file']}, md5 {source['md5']}): download "
                f"{source.get('url', source['file'])} there, pass --medmnist-root DIR (medmnist_root=) or set "
                "$MEDMNIST_ROOT")

    def card_line(self, source: dict[str, Any]) -> str:
        official = "official release" if source["official"] else "NOT the official release"
        return f"MedMNIST+ `{source['file']}` (md5 {source['md5']}, {official})"


class PhantomKind(SourceKind):
    """Procedural head phantoms drawn from the builder's seed (:mod:`mednf.sources.phantoms`)."""

    name = "phantom"
    embedded = True

    def check_source(self, source: SourceSpec, where: str) -> None:
        if source.channels != 1 or source.dims != 2:
            raise ConfigError(f"{where}: channels = {source.channels}, dims = {source.dims} is invalid for kind "
                              "'phantom': expected channels = 1, dims = 2 (the phantoms are gray 2D images)")

    def sizes(self, source: SourceSpec) -> list[int] | None:
        return None

    def load(self, spec: BuilderSpec, *, root: Root, source_npz: Root, download_missing: bool, progress: bool,
             warn: Callable[[str], None]) -> SourceData:

        if source_npz is not None:
            raise ConfigError(f"--source-npz {source_npz} is invalid for {spec.name}: its images are generated from "
                              "the seed, not read from a file; drop --source-npz")
        return SourceData(phantom_source(spec), self.description(spec),
                          origin=f"the {spec.name} phantoms (seed {spec.seed})")

    def local_splits(self, spec: BuilderSpec, root: Root = None) -> dict[str, SplitData] | None:
        return phantom_source(spec)

    def description(self, spec: BuilderSpec) -> dict[str, Any]:
        return {"kind": "phantom", "size": spec.source.size, "seed": spec.seed, "generator": GENERATOR_VERSION,
                "official": True}

    def built_split(self, spec: BuilderSpec, source: dict[str, Any], split: str, root: Root) -> SplitData | None:
        if source.get("generator") != GENERATOR_VERSION:
            return None  # drawn by another version of mednf.sources.phantoms
        return phantom_source(spec, (split,))[split]

    def images_unavailable(self, name: str, source: dict[str, Any], root: Root) -> str:
        return (f"{name} was built from phantoms of another mednf version (phantom generator version "
                f"{source.get('generator')}, this mednf draws version {GENERATOR_VERSION}); rebuild it with "
                f"`mednf build {name.lower()} --restart`")

    def outdated(self, source: dict[str, Any]) -> str | None:
        if source.get("generator") == GENERATOR_VERSION:
            return None
        return (f"its phantoms were drawn by generator version {source.get('generator')}, this mednf draws "
                f"version {GENERATOR_VERSION}")

    def card_line(self, source: dict[str, Any]) -> str:
        return f"procedural phantoms generated by mednf (seed {source['seed']}, no download)"


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
    """The manifest ``source`` record a build writes for ``data`` read by :func:`mednf.sources.loader.load_source`:
    its description and, for a MedMNIST npz, where it was read (``path``), so ``mednf decode`` / ``eval`` find
    the images again without --medmnist-root. (Not part of the description a resumed build compares: the
    same file moved elsewhere is the same source.)"""
    kind = kind_of(spec)
    return kind.recorded(data) if isinstance(kind, MedMNISTKind) else dict(data.description)


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
