"""``[source] kind = "medmnist"``: a MedMNIST(+) npz, the official one (md5 in the builder file, downloaded
when missing) or the user's own (``--source-npz``). Files are found, fetched and read by
:mod:`mednf.sources.medmnist`; this module is what a build and a built dataset ask of them.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mednf.arguments import CLI, Wording
from mednf.errors import ConfigError, SourceError
from mednf.sources.base import SourceData, SplitData
from mednf.sources.kinds.base import ReadContext, Root, SourceKind
from mednf.sources.medmnist import expected_md5, file_md5, locate_medmnist, medmnist_root, read_npz, source_url

if TYPE_CHECKING:
    from mednf.sources.spec import BuilderSpec, SourceSpec

_FLAG = re.compile(r"[a-z0-9_]+\Z")
_MD5 = re.compile(r"[0-9a-f]{32}\Z")


class MedMNISTKind(SourceKind):
    """A MedMNIST(+) npz: official (md5 in the builder file), downloaded when missing, or the user's own."""

    name = "medmnist"
    source_keys = ("flag", "url", "md5")
    required_keys = ("flag",)

    def check_source(self, source: SourceSpec, where: str) -> None:
        """Channels 1 or 3, dims 2 or 3, a MedMNIST flag, a URL template with ``{file}``, an md5
        per size, and a size that has one."""
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
        """The sizes the builder file has an md5 for (None without md5s: a user's own files)."""
        return sorted(int(s) for s in source.md5) or None  # no md5 at all: a user's own files, any size

    def load(self, spec: BuilderSpec, context: ReadContext) -> SourceData:
        """The npz of ``--source-npz`` (warned about when not official), else the official file, located
        and verified (downloaded when missing and allowed)."""
        expected = spec.source.md5.get(str(spec.source.size))
        if context.source_npz is not None:
            path = Path(context.source_npz).expanduser()
            if not path.is_file():
                raise SourceError(f"{context.wording.option('source_npz', path)} does not exist; give the path of a "
                                  "MedMNIST-layout .npz")
            md5 = file_md5(path)
        else:  # a continued build's file where it was read (or in root), before any download
            found = None if context.recorded is None else self._built_file(spec, context.recorded, context.root)
            if found is not None:
                path, md5 = found, str(context.recorded["md5"])
            else:
                path, md5 = locate_medmnist(spec, context.root, download_missing=context.download_missing,
                                            progress=context.progress)
        splits = read_npz(path, spec)
        official = md5 == expected
        counts = {s: len(d.images) for s, d in splits.items()}
        if official and counts != spec.splits:
            raise SourceError(f"{path} has split counts {counts}, but {spec.path} expects {spec.splits}; "
                              "fix [splits] in the builder file")
        if not official:
            context.warn(f"{path} is not the official {spec.source.file_name} (md5 {md5}, official "
                         f"{expected or 'unknown'}); building from it anyway with split counts {counts}")
        return SourceData(splits, self._describe(spec, md5, official), origin=str(path))

    def local_splits(self, spec: BuilderSpec, root: Root = None) -> dict[str, SplitData] | None:
        """The official file if it is on disk with its md5, else None (no download)."""
        try:
            path, _ = locate_medmnist(spec, root, download_missing=False, progress=False)
        except SourceError:
            return None
        return read_npz(path, spec)

    def description(self, spec: BuilderSpec) -> dict[str, Any]:
        """The official file of the spec's size: its md5 from the builder file."""
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

    def _built_file(self, spec: BuilderSpec, source: dict[str, Any], root: Root) -> Path | None:
        """The first candidate file (:meth:`_candidates`) with the recorded md5, or None."""
        for path in self._candidates(spec, source, root):
            if path.is_file() and file_md5(path) == source["md5"]:
                return path
        return None

    def built_split(self, spec: BuilderSpec, source: dict[str, Any], split: str, root: Root) -> SplitData | None:
        """The split from the first candidate file with the recorded md5 (:meth:`_built_file`)."""
        path = self._built_file(spec, source, root)
        return None if path is None else read_npz(path, spec)[split]

    def provide_again(self, name: str, source: dict[str, Any], wording: Wording = CLI) -> str:
        """Where the build read its npz and how to point at it."""
        where = source.get("path") or source["file"]
        return (f"put the file {name} was built from back at {where} (md5 {source['md5']}), or give its folder with "
                f"{wording.option('medmnist_root')} or the file with {wording.option('source_npz')}")

    def images_unavailable(self, name: str, source: dict[str, Any], root: Root) -> str:
        """Where the file was looked for, why it did not do, and how to provide it."""
        path = medmnist_root(root) / source["file"]
        problem = "has another md5" if path.is_file() else "is missing"
        recorded = source.get("path")
        also = f" (as is {recorded}, where the build read it)" if recorded and Path(recorded) != path else ""
        return (f"{path} {problem}{also} ({name} was built from {source['file']}, md5 {source['md5']}): download "
                f"{source.get('url', source['file'])} there, pass --medmnist-root DIR (medmnist_root=) or set "
                "$MEDMNIST_ROOT")

    def card_line(self, source: dict[str, Any]) -> str:
        """The file, its md5, and whether it is the official release."""
        official = "official release" if source["official"] else "NOT the official release"
        return f"MedMNIST+ `{source['file']}` (md5 {source['md5']}, {official})"
