"""Named tensors in safetensors files (θ of a dataset, build checkpoints): no pickle, byte-deterministic.

safetensors stores metadata as a string→string map whose order in the file is not stable between
processes (two identical builds gave different bytes). So all metadata goes into ONE key, ``"mednf"``,
holding JSON with sorted keys: the same tensors and metadata always give the same bytes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from mednf.errors import FormatError
from mednf.io.files import atomic_write_bytes

_KEY = "mednf"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, Any] | None = None) -> None:
    """``tensors`` (moved to CPU) and JSON ``meta`` as one safetensors file, written atomically."""
    from safetensors.torch import save

    cpu = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    atomic_write_bytes(path, save(cpu, metadata={_KEY: json.dumps(meta or {}, sort_keys=True)}))


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of a file written by :func:`save_tensors` (FormatError if unreadable)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as fh:
            tensors = {k: fh.get_tensor(k) for k in fh.keys()}  # noqa: SIM118 (not a dict)
            raw = dict(fh.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise FormatError(f"{path} is not a readable safetensors file ({str(err).splitlines()[0]}); "
                          "rebuild or download the dataset again") from None
    return tensors, _metadata(raw, path)


def tensors_from_bytes(data: bytes, where: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and metadata of the bytes of a file written by :func:`save_tensors` (e.g. fetched over HTTP)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        tensors = load(data)
        size = int.from_bytes(data[:8], "little")  # the format: 8-byte header length, then the JSON header
        raw = json.loads(data[8:8 + size]).get("__metadata__") or {}
    except (SafetensorError, ValueError, AttributeError) as err:
        raise FormatError(f"{where} is not a readable safetensors file ({(str(err).splitlines() or [''])[0]}); "
                          "rebuild or download the dataset again") from None
    return tensors, _metadata(raw, where)


def _metadata(raw: dict[str, str], where: str | Path) -> dict[str, Any]:
    """The JSON metadata of :func:`save_tensors` (older files: the string map as it is)."""
    try:
        meta = json.loads(raw[_KEY]) if _KEY in raw else raw
    except (json.JSONDecodeError, RecursionError, ValueError):
        raise FormatError(f"{where} has damaged metadata; rebuild or download the dataset again") from None
    if not isinstance(meta, dict):
        raise FormatError(f"{where} has damaged metadata (a JSON {type(meta).__name__}); rebuild or download "
                          "the dataset again")
    return meta
