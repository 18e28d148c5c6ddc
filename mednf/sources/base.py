"""What a source hands to a build: the three splits' images, labels and source indices, and a description;
and how a source says that its data is usable but not the official release (:class:`SourceWarning`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

Warn = Callable[[str], None]  # receives one line: a data problem that does not stop the build


@dataclass
class SplitData:
    """One split of a source: images, labels and where each sample came from."""
    images: np.ndarray  # [N, D, *spatial] uint8 or float32 in [0, 1] (may be a non-contiguous view)
    labels: np.ndarray  # [N, L] int64 (L = 1, or the number of labels for multi-label)
    source_index: np.ndarray  # [N] int64: index in the source split (MedMNIST), row of the CSV / file (own data)


@dataclass
class SourceData:
    """Every split of a source, the manifest's description of it, and where it came from."""
    splits: dict[str, SplitData]
    description: dict[str, object]  # what was read: kind, file, md5, official or not, URL
    origin: str = ""  # where the data came from, for messages: a path, or "the PhantomNF phantoms (seed 0)"

    def counts(self) -> dict[str, int]:
        """The number of samples per split."""
        return {s: len(d.images) for s, d in self.splits.items()}


class SourceWarning(UserWarning):
    """The data is usable but is not the official release (e.g. a user's own smaller npz)."""


def no_warnings(message: str) -> None:
    """A :data:`Warn` that drops every message (rereading data that was already read and warned about)."""
