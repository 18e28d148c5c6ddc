"""The base of the kinds that read a folder of files listed in a labels CSV ("images", "nifti"):
:class:`FolderKind`.

Its :meth:`FolderKind.read` is the whole flow, written once: read and check the CSV, warn about files it
does not list, labels and splits from its columns, every listed file read once (its bytes go into the
digest) and turned into one sample by the kind's :meth:`FolderKind.decode`, then the splits and the
manifest record. A kind adds the file suffixes, its own ``[source]`` keys, the decoding of one file and the
rules it records (modelled on Hugging Face ``datasets``' ``FolderBasedBuilder`` with its ``imagefolder`` /
``niftifolder`` subclasses). The CSV, label and split rules: :mod:`mednf.sources.userdata`.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from mednf.sources.base import SourceData, Warn, no_warnings
from mednf.sources.kinds.userfiles import UserDataKind
from mednf.sources.userdata import (
    Digest,
    describe,
    label_rows,
    make_splits,
    parse_csv_name,
    parse_split_ratio,
    read_bytes,
    read_label_csv,
    split_of,
    warn_unlisted,
)

if TYPE_CHECKING:
    from mednf.sources.spec import BuilderSpec, SourceSpec


class FolderKind(UserDataKind):
    """A folder of files of one format and a labels CSV (``[source] path``, ``csv``, ``split_ratio``)."""

    suffixes: ClassVar[tuple[str, ...]]  # the file names a CSV may list (lowercase, e.g. ".png")

    def parse_options(self, table: dict[str, Any], where: str) -> dict[str, Any]:
        """``csv``, the kind's own keys (:meth:`format_options`), then ``split_ratio``."""
        return {"csv": parse_csv_name(table, where), **self.format_options(table, where),
                "split_ratio": parse_split_ratio(table, where)}

    @abstractmethod
    def format_options(self, table: dict[str, Any], where: str) -> dict[str, Any]:
        """The kind's own ``[source]`` keys (between ``csv`` and ``split_ratio`` in the options), checked, with
        their defaults."""

    def check_libraries(self) -> None:
        """Raise one line (SourceError) when a library that :meth:`decode` needs is missing; run before
        anything is read."""

    @abstractmethod
    def decode(self, raw: bytes, path: Path, source: SourceSpec) -> np.ndarray:
        """One file's bytes → one sample ``[C, *spatial]`` of ``source``'s channels and size: uint8 (0..255)
        or float32 in [0, 1]. Errors are one SourceError line naming ``path``."""

    @abstractmethod
    def rules(self, source: SourceSpec) -> dict[str, Any]:
        """What the manifest records, after ``csv``, about how files became samples (in record order)."""

    def read(self, spec: BuilderSpec, warn: Warn = no_warnings) -> SourceData:
        """Every listed file of the folder, decoded, labelled and split, with the description."""
        self.check_libraries()
        source, csv_name = spec.source, spec.source.options["csv"]
        folder = Path(source.path)
        table = read_label_csv(folder, csv_name, self.suffixes, self.what)
        warn_unlisted(folder, table, self.suffixes, warn)

        def where(i: int) -> str:
            return f"{table.csv_path} line {table.lines[i]}"

        origin = str(table.csv_path)
        labels = label_rows(table.labels, spec, origin, where)  # [N, L]
        split, how = split_of(table.splits, len(table.files), spec, source.options["split_ratio"], origin, where)
        digest = Digest()
        digest.add(f"csv:{csv_name}", table.raw)
        samples: np.ndarray | None = None  # [N, C, *spatial], allocated at the first file
        for i, name in enumerate(table.files):
            raw = read_bytes(folder / name, f"listed on {where(i)}", "add the file or remove its row")
            digest.add(f"file:{name}", raw)
            sample = self.decode(raw, folder / name, source)  # [C, *spatial]
            if samples is None:
                samples = np.empty((len(table.files), *sample.shape), sample.dtype)
            elif samples.dtype == np.uint8 and sample.dtype != np.uint8:
                samples = _as_float(samples)  # once one sample is float, the whole set is float32 in [0, 1]
            samples[i] = _as_float(sample) if samples.dtype != sample.dtype else sample
        assert samples is not None  # read_label_csv refuses a CSV that lists no file
        description = describe(self.name, spec, folder, len(samples), digest.hexdigest(), how, csv=csv_name,
                               **self.rules(source))
        return SourceData(make_splits(samples, labels, split), description, origin=origin)


def _as_float(pixels: np.ndarray) -> np.ndarray:
    """uint8 0..255 → float32 in [0, 1]; any other array as float32."""
    return pixels.astype(np.float32) / 255.0 if pixels.dtype == np.uint8 else pixels.astype(np.float32)
