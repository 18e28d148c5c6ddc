"""The split names of every MedNF dataset, their aliases, and the one check of a split argument.

Every source has the three splits of :data:`SPLITS`, in that order. Hugging Face calls the validation split
``"validation"``: :data:`SPLIT_ALIASES` accepts that name wherever a split is given, and :func:`hf_split`
gives it back where Hugging Face conventions apply (exports, ``DatasetDict``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
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


# ------------------------------------------------------------------------ Hugging Face split syntax

_PART = re.compile(r"\s*(?P<split>[A-Za-z_]\w*)\s*"
                   r"(?:\[\s*(?P<start>-?\d+%?)?\s*:\s*(?P<stop>-?\d+%?)?\s*\])?\s*", re.ASCII)
_MAX_DIGITS = 12  # a row bound longer than this is no row of any split (and int() of 10⁶ digits is slow)


@dataclass(frozen=True)
class SplitPart:
    """Rows ``[start, stop)`` of one split (absolute, resolved against its length)."""

    split: str
    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start


def _bound(text: str | None, n: int, default: int, spec: str) -> int:
    """A slice bound of HF's split syntax: rows (``10``, ``-10``) or percent of ``n`` (``10%``, rounded to
    the closest row, as ``datasets`` does by default), clipped to ``[0, n]``."""
    if text is None:
        return default
    percent = text.endswith("%")
    digits = text.rstrip("%")
    if len(digits.lstrip("-")) > _MAX_DIGITS:
        raise ConfigError(f"split {spec!r} is invalid: {text} is no row bound; expected e.g. train[:1000] or "
                          "train[:10%]")
    value = int(digits)
    if percent:
        if not -100 <= value <= 100:
            raise ConfigError(f"split {spec!r} is invalid: {text} is outside -100%..100%; expected e.g. "
                              "train[:10%]")
        value = round(value * n / 100)
    if value < 0:
        value += n
    return min(max(value, 0), n)


def parse_split_spec(spec: str, lengths: dict[str, int]) -> list[SplitPart]:
    """The parts of a split given in Hugging Face's syntax: ``"train"``, ``"train[:100]"``,
    ``"train[10%:20%]"``, ``"train[-50:]"``, ``"train+validation"``, ``"train[:10%]+test[:5]"``;
    ``lengths`` maps each split (its canonical name) to its row count. A one-line ConfigError otherwise."""
    if not isinstance(spec, str) or not spec.strip():
        raise ConfigError(f"split = {spec!r} is invalid: expected a split name such as 'train', optionally "
                          "sliced ('train[:10%]') or joined ('train+validation')")
    parts = []
    for text in spec.split("+"):
        match = _PART.fullmatch(text)
        if match is None:
            raise ConfigError(f"split {spec!r} is invalid: {text.strip()!r} is not NAME, NAME[START:STOP] or "
                              "NAME[START%:STOP%]; e.g. 'train[:10%]+validation'")
        name = check_split(match["split"], lengths, "split")
        n = lengths[name]
        start = _bound(match["start"], n, 0, spec)
        stop = _bound(match["stop"], n, n, spec)
        parts.append(SplitPart(name, start, max(start, stop)))
    return parts
