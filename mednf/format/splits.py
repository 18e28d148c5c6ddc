"""The split names of every MedNF dataset, their aliases, and the one check of a split argument.

Every source has the three splits of :data:`SPLITS`, in that order. Hugging Face calls the validation split
``"validation"``: :data:`SPLIT_ALIASES` accepts that name wherever a split is given, and :func:`hf_split`
gives it back where Hugging Face conventions apply (exports, ``DatasetDict``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from mednf.errors import ConfigError

SPLITS = ("train", "val", "test")  # every source has these three, in this order
SPLIT_ALIASES = {"validation": "val"}  # the Hugging Face name of the validation split
HF_SPLITS = {"val": "validation"}  # what a split is called where Hugging Face conventions apply


def hf_split(split: str) -> str:
    """The Hugging Face name of one of :data:`SPLITS` (``"val"`` → ``"validation"``)."""
    return HF_SPLITS.get(split, split)


def canonical_split(split: str) -> str:
    """``split`` with an alias replaced by the name it stands for (``"validation"`` → ``"val"``)."""
    return SPLIT_ALIASES.get(split, split)


def check_split(split: Any, allowed: Iterable[str], what: str = "split") -> str:
    """The one check of a split name: ``split`` (an alias such as ``"validation"`` given as the name it stands
    for, ``"val"``) if it is in ``allowed``, else a one-line ConfigError."""
    allowed = list(allowed)
    split = canonical_split(split) if isinstance(split, str) else split
    if split not in allowed:
        given = f"{what} {split!r}" if what.startswith("--") else f"{what} = {split!r}"  # a CLI flag or a parameter
        raise ConfigError(f"{given} is invalid: expected one of {', '.join(allowed)}")
    return split
