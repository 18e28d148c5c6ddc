"""The base of the kinds read from a user's own files ("images", "nifti", "table1d"): :class:`UserDataKind`.

A subclass reads the files (:meth:`UserDataKind.read`); the rules every such kind follows are shared here:
``--source-npz`` is refused, ``[splits]`` must equal the counts found, and a built dataset gets its images
back only by reading the files again with the same digest. The rules for paths, CSVs, labels and splits:
:mod:`mednf.sources.userdata`.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from mednf.arguments import CLI, Wording
from mednf.errors import SourceError
from mednf.sources.base import SourceData, SplitData, Warn, no_warnings
from mednf.sources.kinds.base import ReadContext, Root, SourceKind
from mednf.sources.userdata import all_rows

if TYPE_CHECKING:
    from mednf.sources.spec import BuilderSpec


class UserDataKind(SourceKind):
    """A kind read from the user's own files: a subclass reads them in :meth:`read`; counts, rereading and
    the digest check are shared."""

    required_keys: ClassVar[tuple[str, ...]] = ("path",)
    location_keys: ClassVar[tuple[str, ...]] = ("path", "file")  # both the folder or file read (absolute)
    what: ClassVar[str] = "files"  # for messages: "images", "volumes", "signals"

    @abstractmethod
    def read(self, spec: BuilderSpec, warn: Warn = no_warnings) -> SourceData:
        """Every sample of ``spec``'s files, split, with the description (``sha256`` among it)."""

    def load(self, spec: BuilderSpec, context: ReadContext) -> SourceData:
        """The files read (:meth:`read`), with ``[splits]`` checked against the counts found."""
        context.refuse_source_npz(spec.name, f"its {self.what} are read from [source] path = {spec.source.path!r}")
        data = self.read(spec, context.warn)
        counts = data.counts()
        if counts != spec.splits:
            lines = ", ".join(f"{s} = {n}" for s, n in counts.items())
            raise SourceError(f"{data.origin} has split counts {counts}, but {spec.path or spec.name} [splits] says "
                              f"{spec.splits}; set [splits] {lines}")
        return data

    def local_splits(self, spec: BuilderSpec, root: Root = None) -> dict[str, SplitData] | None:
        """The files read again, or None if they cannot be read."""
        try:
            return self.read(spec).splits
        except SourceError:
            return None

    def description(self, spec: BuilderSpec) -> dict[str, Any]:
        """The record of the files as they are now (read again: the digest needs the bytes)."""
        return self.read(spec).description

    def built_split(self, spec: BuilderSpec, source: dict[str, Any], split: str, root: Root) -> SplitData | None:
        """All samples (indexed by ``source_index``) if the files on disk have the recorded digest."""
        if not Path(str(source.get("path", ""))).is_absolute():
            return None  # a published copy: the export kept only the folder's name (mednf.tasks.export)
        try:
            data = self.read(spec)
        except SourceError:
            return None  # moved, deleted or damaged since the build
        if data.description.get("sha256") != source.get("sha256"):
            return None
        return all_rows(data.splits)  # a sample's source_index is its row in the user's files, whatever the split

    def images_unavailable(self, name: str, source: dict[str, Any], root: Root) -> str:
        """A published copy, missing files, or files that changed since the build."""
        path = Path(source.get("path", "?"))
        digest = str(source.get("sha256", "?"))[:16]
        if not path.is_absolute():
            return (f"{name} is a published copy: it names its {self.what} ({path}, sha256 {digest}…) but not where "
                    "they are; the dataset works without them, only comparisons with the source need them")
        if not path.exists():
            return (f"{path} is missing ({name} was built from its {self.what}, sha256 {digest}…): put them back "
                    f"there, or point [source] path at their new place and rebuild {name}")
        return (f"the {self.what} under {path} are not the ones {name} was built from (sha256 {digest}…; changed, "
                f"damaged or unreadable since): restore them, or rebuild {name} with --restart")

    def provide_again(self, name: str, source: dict[str, Any], wording: Wording = CLI) -> str:
        """Restore the files as they were, or rebuild."""
        return (f"the {self.what} under {source.get('path', '?')} are not the ones {name} was built from (sha256 "
                f"{str(source.get('sha256', '?'))[:16]}…); restore them as they were, or rebuild {name} with "
                f"{wording.option('restart', True)}")

    def card_line(self, source: dict[str, Any]) -> str:
        """The path, the number of files, the digest and how the splits were made."""
        split = ("its split column" if source.get("split") == "column" else
                 f"a seeded split {source.get('split_ratio')} (seed {source.get('split_seed')})")
        return (f"the builder's own {self.what} from `{source.get('path')}` ({source.get('files')} files, "
                f"sha256 {str(source.get('sha256'))[:16]}…), split by {split}")
