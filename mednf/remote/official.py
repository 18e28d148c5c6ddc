"""Read the official MedNF release (the MedFuncta research code's layout) safely, and import it.

Layout of one sub-dataset::

    DIR/model.pt                        whole pickled models.inrs.LatentModulatedSIREN (or a state dict)
    DIR/{train,val,test}/datapoint_{i}.pt   torch.save({'modulations': Tensor[P], 'label': Tensor})

Official forward: hidden layer k computes ``sin(w0_k · (W_k x + b_k + shift_k(φ)))`` with
``w0_k = w0 + k·increment``, residual connections after the first layer, linear output + 0.5. That is
mednf's field with ``shift_mode="inside"``: ``layers.{k}.linear`` → ``layers.{k}``, the stacked
``layers.{k}.modulate_shift_layer`` → ``shift``, ``last_layer.linear`` → ``last`` (the official
``last_layer.modulate_shift_layer`` is never used by the forward and is dropped).

**Safety.** Nothing from a release is unpickled by Python's ``pickle``. Datapoints are read with
``torch.load(weights_only=True)`` (tensors, dicts, numbers only). ``model.pt`` is first scanned with
``torch.serialization.get_unsafe_globals_in_checkpoint`` (it lists the classes and functions the pickle
names without running it); anything outside :data:`ALLOWED_GLOBALS` is refused. The allowed names are then
bound to *inert stand-ins* (:class:`_Inert`: they only store the attributes the pickle gives them) and the
file is read by torch's own weights-only unpickler, so no code of the official repository, or of anyone
else, runs. We use torch's unpickler (a well-kept, fuzzed implementation) rather than writing our own.

``torch.save`` of a row of a batch tensor stores the whole batch's storage; ``torch.load`` returns the row
as a view of it, which is copied out here, never read by raw offsets.
"""

from __future__ import annotations

import pickle
import re
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from mednf.engine.config import FieldConfig, param_shapes
from mednf.errors import OfficialFormatError

SPLITS = ("train", "val", "test")
_DATAPOINT = re.compile(r"^datapoint_(\d+)\.pt$")
_MAX_SAMPLES = 10**9  # an index beyond any dataset (and beyond int64 arithmetic) is not a sample

# Every global a whole pickled official model may name beyond torch's own weights-only allow-list.
ALLOWED_GLOBALS = (
    "models.inrs.LatentModulatedSIREN",
    "models.layers.LatentModulatedSIRENLayer",
    "torch.nn.modules.container.ModuleList",
    "torch.nn.modules.linear.Linear",
)




class _Inert:
    """Stand-in for an allowed class: keeps the attributes it is given, has no behaviour."""

    def __repr__(self) -> str:
        return f"<stand-in for {type(self).__qualname__}>"


@dataclass
class OfficialModel:
    """The official code's ``model.pt`` in mednf's terms: θ, the field configuration and each sine layer's ω."""

    theta: dict[str, Tensor]  # mednf layout (see mednf.engine.field), float32 on CPU
    field: FieldConfig
    w0s: tuple[float, ...]  # ω of every sine layer, as read (or as given)
    whole_module: bool  # model.pt held a pickled module (else a plain state dict)


# ------------------------------------------------------------------------------------------ model.pt


def _scan_globals(path: Path) -> list[str]:
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(path))
    except (RuntimeError, ValueError, OSError, zipfile.BadZipFile, EOFError, pickle.UnpicklingError) as err:
        raise OfficialFormatError(f"{path} is not a readable torch.save file ({str(err).splitlines()[0]}); "
                                  "expected the official release's model.pt") from None


def _load_restricted(path: Path, names: list[str]) -> Any:
    stand_ins = [(type(name.rsplit(".", 1)[1], (_Inert,), {"__module__": name.rsplit(".", 1)[0]}), name)
                 for name in names]
    try:
        with torch.serialization.safe_globals(stand_ins):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (the restricted unpickler refuses with several exception types)
        raise OfficialFormatError(f"{path} could not be read with the weights-only unpickler "
                                  f"({str(err).splitlines()[0]}); it is not an official MedNF model.pt") from None


def _flatten_module(obj: Any, prefix: str = "", seen: set[int] | None = None
                    ) -> tuple[dict[str, Tensor], dict[str, dict[str, Any]]]:
    """State dict and per-module plain attributes of an inert module tree (``_parameters``/``_modules``)."""
    seen = set() if seen is None else seen
    if not isinstance(obj, _Inert) or id(obj) in seen or prefix.count(".") > 64:
        raise OfficialFormatError(f"model.pt has a malformed module tree at {prefix.rstrip('.') or 'the top'!r} "
                                  "(a cycle or a non-module child); it is not an official MedNF model.pt")
    seen.add(id(obj))
    tensors: dict[str, Tensor] = {}
    attributes: dict[str, dict[str, Any]] = {prefix.rstrip("."): {k: v for k, v in vars(obj).items()
                                                                   if not k.startswith("_")}}
    for store in ("_parameters", "_buffers", "_modules"):
        if not isinstance(getattr(obj, store, None) or {}, dict):
            raise OfficialFormatError(f"model.pt: {prefix or 'the model'}{store} is not a dict; it is not an official "
                                      "MedNF model.pt")
    for store in ("_parameters", "_buffers"):
        for key, value in (getattr(obj, store, None) or {}).items():
            if isinstance(value, Tensor):
                tensors[prefix + key] = value
    for key, child in (getattr(obj, "_modules", None) or {}).items():
        if child is not None:
            sub_tensors, sub_attributes = _flatten_module(child, f"{prefix}{key}.", seen)
            tensors.update(sub_tensors)
            attributes.update(sub_attributes)
    return tensors, attributes


def _linear_schedule(w0s: list[float], path: Path) -> tuple[float, float | None]:
    step = w0s[1] - w0s[0] if len(w0s) > 1 else 0.0
    for k, w in enumerate(w0s):
        if not np.isclose(w, w0s[0] + k * step, rtol=1e-6, atol=1e-9):
            raise OfficialFormatError(f"{path} has layer w0s {w0s}: expected a linear schedule (w0 + k·increment); "
                                      "mednf's field cannot express this one")
    return float(w0s[0]), float(step) if len(w0s) > 1 else None


def read_official_model(path: str | Path, *, w0: float | None = None, w0_increment: float | None = None
                        ) -> OfficialModel:
    """θ and the field configuration of an official ``model.pt`` (whole pickled module or state dict).

    ``w0``/``w0_increment`` are needed only for a plain state dict (a pickled module carries each layer's
    ``w0``); when both are present they must agree.
    """
    path = Path(path)
    if not path.is_file():
        state = "is not a regular file" if path.exists() or path.is_symlink() else "does not exist"
        raise OfficialFormatError(f"{path} {state}; the official release has model.pt beside train/ val/ test/")
    names = _scan_globals(path)
    foreign = [n for n in names if n not in ALLOWED_GLOBALS]
    if foreign:
        raise OfficialFormatError(f"{path} references {', '.join(foreign)}, which is not part of the official "
                                  f"MedNF model (allowed: {', '.join(ALLOWED_GLOBALS)}); refused without unpickling it")
    obj = _load_restricted(path, names)
    whole = isinstance(obj, _Inert)
    if whole:
        state, attributes = _flatten_module(obj)
    elif isinstance(obj, dict) and obj and all(isinstance(k, str) and isinstance(v, Tensor) for k, v in obj.items()):
        state, attributes = dict(obj), {}
    else:
        raise OfficialFormatError(f"{path} holds a {type(obj).__name__}: expected a pickled LatentModulatedSIREN "
                                  "or its state dict (name → tensor)")

    hidden = sorted({int(m.group(1)) for k in state if (m := re.match(r"layers\.(\d+)\.linear\.weight$", k))})
    required = [f"layers.{k}.{part}.{p}" for k in hidden for part in ("linear", "modulate_shift_layer")
                for p in ("weight", "bias")] + ["last_layer.linear.weight", "last_layer.linear.bias"]
    missing = [k for k in required if k not in state]
    missing += [f"layers.{k}.linear.weight" for k in range(len(hidden)) if k not in hidden]
    if not hidden or hidden != list(range(len(hidden))) or missing:
        raise OfficialFormatError(f"{path} lacks {', '.join(missing[:4]) or 'layers.0.linear.weight'}: expected the "
                                  "state dict of LatentModulatedSIREN (layers.{k}.linear, "
                                  "layers.{k}.modulate_shift_layer, last_layer.linear)")
    if any(".modulate_scale_layer." in k for k in state):
        raise OfficialFormatError(f"{path} uses scale modulation (modulate_scale_layer); MedNF and mednf's field "
                                  "use shift modulation only")
    if whole and attributes.get("", {}).get("enable_skip_connections", True) is False:
        raise OfficialFormatError(f"{path} was trained without skip connections; MedNF's field is residual")

    layer_w0s = [attributes.get(f"layers.{k}", {}).get("w0") for k in hidden]
    if all(isinstance(w, (int, float)) for w in layer_w0s):
        w0s = [float(w) for w in layer_w0s]
        if (w0 is not None and not np.isclose(w0, w0s[0])) or (
                w0_increment is not None and len(w0s) > 1 and not np.isclose(w0_increment, w0s[1] - w0s[0])):
            raise OfficialFormatError(f"--w0 {w0} / --w0-increment {w0_increment} disagree with the w0s stored in "
                                      f"{path} ({w0s[0]:g} + {w0s[1] - w0s[0] if len(w0s) > 1 else 0:g}·k); "
                                      "leave them out")
    elif w0 is None or (w0_increment is None and len(hidden) > 1):
        kind = "a module without its layers' w0" if whole else "a plain state dict without the layers' w0"
        raise OfficialFormatError(f"{path} is {kind}; give both --w0 and --w0-increment (the official 2D configs use "
                                  "10 and 5)")
    else:
        w0s = [w0 + k * (w0_increment or 0.0) for k in range(len(hidden))]
    omega_first, increment = _linear_schedule(w0s, path)

    f32 = {k: v.detach().to(torch.float32).clone() for k, v in state.items()}
    first = f32["layers.0.linear.weight"]
    field = FieldConfig(in_dims=first.shape[1], out_dims=f32["last_layer.linear.weight"].shape[0],
                        num_layers=len(hidden) + 1, hidden_dim=first.shape[0],
                        latent_dim=f32["layers.0.modulate_shift_layer.weight"].shape[1],
                        omega_first=omega_first, omega_last=None,
                        omega_increment=increment, shift_mode="inside")
    theta: dict[str, Tensor] = {}
    for k in hidden:
        theta[f"layers.{k}.weight"] = f32[f"layers.{k}.linear.weight"]
        theta[f"layers.{k}.bias"] = f32[f"layers.{k}.linear.bias"]
    theta["shift.weight"] = torch.cat([f32[f"layers.{k}.modulate_shift_layer.weight"] for k in hidden])
    theta["shift.bias"] = torch.cat([f32[f"layers.{k}.modulate_shift_layer.bias"] for k in hidden])
    theta["last.weight"] = f32["last_layer.linear.weight"]
    theta["last.bias"] = f32["last_layer.linear.bias"]
    for name, shape in param_shapes(field).items():
        if tuple(theta[name].shape) != shape:
            raise OfficialFormatError(f"{path}: {name} has shape {tuple(theta[name].shape)}, expected {shape} for "
                                      f"K={field.num_layers} L={field.hidden_dim} P={field.latent_dim}")
    return OfficialModel(theta, field, tuple(w0s), whole)


# ------------------------------------------------------------------------------------------ datapoints


@dataclass
class OfficialSplit:
    """One split of the official release's datapoints: source indices ``[n]``, latents ``[n, P]``, labels."""

    indices: np.ndarray  # [n] int64, sorted: the datapoint numbers (source indices)
    latents: np.ndarray  # [n, P] float32
    labels: np.ndarray  # [n, label width] int64


def datapoint_files(split_dir: Path) -> dict[int, Path]:
    """``datapoint_{i}.pt`` files of one split directory, by i."""
    found = {}
    for path in split_dir.iterdir():
        match = _DATAPOINT.match(path.name)
        if match:
            index = int(match.group(1))
            if index >= _MAX_SAMPLES:
                raise OfficialFormatError(f"{split_dir} has {path.name}: index {match.group(1)[:24]} is larger than "
                                          f"any split (< {_MAX_SAMPLES}); remove the file that does not belong")
            if index in found:
                raise OfficialFormatError(f"{split_dir} has both {found[index].name} and {path.name} for sample "
                                          f"{index}; remove the one that does not belong")
            found[index] = path
    return found


def read_datapoint(path: Path) -> tuple[Tensor, Tensor]:
    """(modulations ``[P]``, label ``[width]``) of one datapoint file, weights-only."""
    try:
        item = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (weights-only refusals and damaged zips raise several types)
        raise OfficialFormatError(f"{path} could not be read with torch.load(weights_only=True) "
                                  f"({str(err).splitlines()[0]}); refusing it") from None
    if not isinstance(item, dict) or not {"modulations", "label"} <= set(item):
        keys = sorted(item) if isinstance(item, dict) else type(item).__name__
        raise OfficialFormatError(f"{path} holds {keys}: expected a dict with 'modulations' and 'label'")
    latent, label = item["modulations"], item["label"]
    if not isinstance(latent, Tensor) or latent.dim() not in (1, 2) or (latent.dim() == 2 and latent.shape[0] != 1):
        raise OfficialFormatError(f"{path}: 'modulations' is {getattr(latent, 'shape', type(latent).__name__)}, "
                                  "expected a tensor [P]")
    try:
        label = torch.as_tensor(label).reshape(-1)
    except (TypeError, ValueError, RuntimeError):
        raise OfficialFormatError(f"{path}: 'label' is {type(label).__name__}, expected integer class ids") from None
    if label.is_floating_point() and not torch.equal(label, label.round()):
        raise OfficialFormatError(f"{path}: 'label' holds non-integer values {label[:4].tolist()}; expected class ids")
    return latent.reshape(-1).to(torch.float32).clone(), label.to(torch.int64).clone()


def read_split(split_dir: Path, latent_dim: int, *, progress: Callable[[int], None] | None = None) -> OfficialSplit:
    """Every datapoint of one split, in index order."""
    files = datapoint_files(split_dir)
    if not files:
        raise OfficialFormatError(f"{split_dir} has no datapoint_{{i}}.pt files; expected the official layout")
    indices = np.array(sorted(files), dtype=np.int64)
    latents = np.empty((len(indices), latent_dim), dtype=np.float32)
    labels: list[np.ndarray] = []
    for row, index in enumerate(indices):
        latent, label = read_datapoint(files[int(index)])
        if latent.numel() != latent_dim:
            raise OfficialFormatError(f"{files[int(index)]} has {latent.numel()} modulations, expected P = "
                                      f"{latent_dim} (from model.pt)")
        if labels and label.numel() != labels[0].size:
            raise OfficialFormatError(f"{files[int(index)]} has a label of {label.numel()} values, the first file "
                                      f"{labels[0].size}; the split mixes datasets")
        latents[row] = latent.numpy()
        labels.append(label.numpy())
        if progress is not None:
            progress(1)
    if not np.isfinite(latents).all():
        raise OfficialFormatError(f"{split_dir} has non-finite modulations; the release is damaged")
    return OfficialSplit(indices, latents, np.stack(labels))


def missing_indices(present: np.ndarray, count: int) -> list[int]:
    """Source indices 0..count-1 without a datapoint (the official fit dropped the last incomplete batch)."""
    mask = np.ones(count, dtype=bool)
    mask[present[present < count]] = False
    return np.flatnonzero(mask).tolist()


def find_release_root(directory: Path) -> Path:
    """The folder of an unpacked release that holds ``model.pt`` and ``train/`` (itself or one below)."""
    candidates = [p.parent for p in [directory / "model.pt", *directory.rglob("model.pt")] if p.is_file()]
    candidates = list(dict.fromkeys(c for c in candidates if (c / "train").is_dir()))
    if len(candidates) != 1:
        what = "no folder" if not candidates else f"{len(candidates)} folders ({', '.join(map(str, candidates[:3]))})"
        raise OfficialFormatError(f"{directory} has {what} with model.pt and train/; expected one official "
                                  "MedNF sub-dataset (model.pt, train/, val/, test/)")
    return candidates[0]
