"""What a source hands to a build: the three splits' images, labels and source indices, and a description.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

@dataclass
class SplitData:
    images: np.ndarray  # [N, D, *spatial] uint8 or float32 in [0, 1] (may be a non-contiguous view)
    labels: np.ndarray  # [N, L] int64 (L = 1, or the number of labels for multi-label)
    source_index: np.ndarray  # [N] int64: index in the source split (MedMNIST), row of the CSV / file (own data)


@dataclass
class SourceData:
    splits: dict[str, SplitData]
    description: dict[str, object]  # what was read: kind, file, md5, official or not, URL
    origin: str = ""  # where the data came from, for messages: a path, or "the PhantomNF phantoms (seed 0)"

    def counts(self) -> dict[str, int]:
        return {s: len(d.images) for s, d in self.splits.items()}


class SourceWarning(UserWarning):
    """The data is usable but is not the official release (e.g. a user's own smaller npz)."""
