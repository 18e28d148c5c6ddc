"""An official-format MedNF release, generated here from the layout the issue describes (no code of the
official repository is used): a whole pickled ``models.inrs.LatentModulatedSIREN`` in ``model.pt`` and one
``torch.save`` per sample in ``{train,val,test}/datapoint_{i}.pt``.

The classes are registered under the official module names only while saving, so the pickles reference
``models.inrs`` / ``models.layers`` exactly as the official files do, and nothing of them is importable when
mednf reads the files back. :func:`reference_forward` is the slow, obviously-correct forward written from
the description: ``sin(w0_k · (W x + b + shift))``, residual after the first layer, output + 0.5.
"""

from __future__ import annotations

import contextlib
import sys
import types
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn


class _Layer(nn.Module):
    def __init__(self, in_size: int, out_size: int, latent_dim: int, w0: float, is_last: bool = False,
                 modulate_scale: bool = False) -> None:
        super().__init__()
        self.w0 = w0
        self.is_last = is_last
        self.modulate_shift = True
        self.modulate_scale = modulate_scale
        self.linear = nn.Linear(in_size, out_size)
        self.modulate_shift_layer = nn.Linear(latent_dim, out_size)
        if modulate_scale:
            self.modulate_scale_layer = nn.Linear(latent_dim, out_size)


class _Siren(nn.Module):
    def __init__(self, in_size: int, out_size: int, hidden: int, num_layers: int, latent_dim: int, w0: float,
                 increment: float, skip: bool = True, modulate_scale: bool = False) -> None:
        super().__init__()
        layers = []
        for i in range(num_layers - 1):
            layers.append(_Layer(in_size if i == 0 else hidden, hidden, latent_dim, w0,
                                 modulate_scale=modulate_scale))
            w0 += increment
        self.layers = nn.ModuleList(layers)
        self.last_layer = _Layer(hidden, out_size, latent_dim, w0, is_last=True)
        self.enable_skip_connections = skip
        self.modulations = torch.zeros(latent_dim)


@contextlib.contextmanager
def official_module_names() -> Iterator[None]:
    """While active, the classes are ``models.layers.LatentModulatedSIRENLayer`` and
    ``models.inrs.LatentModulatedSIREN`` (what pickle records); afterwards ``models`` is gone again."""
    saved = {name: (cls.__module__, cls.__qualname__, cls.__name__) for name, cls in (("l", _Layer), ("s", _Siren))}
    package = types.ModuleType("models")
    inrs, layers = types.ModuleType("models.inrs"), types.ModuleType("models.layers")
    for cls, module, name in ((_Layer, layers, "LatentModulatedSIRENLayer"), (_Siren, inrs, "LatentModulatedSIREN")):
        cls.__module__, cls.__qualname__, cls.__name__ = module.__name__, name, name
        setattr(module, name, cls)
    sys.modules.update({"models": package, "models.inrs": inrs, "models.layers": layers})
    try:
        yield
    finally:
        for name in ("models", "models.inrs", "models.layers"):
            sys.modules.pop(name, None)
        for cls, key in ((_Layer, "l"), (_Siren, "s")):
            cls.__module__, cls.__qualname__, cls.__name__ = saved[key]


def make_model(*, in_size: int = 2, out_size: int = 1, hidden: int = 16, num_layers: int = 4, latent_dim: int = 12,
               w0: float = 10.0, increment: float = 5.0, seed: int = 0, **kwargs) -> nn.Module:
    torch.manual_seed(seed)
    model = _Siren(in_size, out_size, hidden, num_layers, latent_dim, w0, increment, **kwargs)
    with torch.no_grad():
        for p in model.parameters():
            p.uniform_(-0.3, 0.3)
    return model


def reference_forward(model: nn.Module, latent: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """One latent ``[P]``, coords ``[N, C]`` → ``[N, D]``, layer by layer as described."""
    x = coords
    for k, layer in enumerate(model.layers):
        shift = layer.modulate_shift_layer(latent)
        y = torch.sin(layer.w0 * (layer.linear(x) + shift))
        x = y if k == 0 else x + y
    return model.last_layer.linear(x) + 0.5


def write_release(root: Path, model: nn.Module, splits: dict[str, tuple[torch.Tensor, torch.Tensor]], *,
                  batch: int = 4, state_dict_only: bool = False) -> Path:
    """``root/model.pt`` and ``root/<split>/datapoint_{i}.pt`` for latents ``[N, P]`` and labels ``[N, …]``.

    Like the official fit, every file saves a *row of a batch tensor* (so its storage holds the whole batch)
    and the last incomplete batch is dropped.
    """
    root.mkdir(parents=True, exist_ok=True)
    with official_module_names():
        torch.save(model.state_dict() if state_dict_only else model, root / "model.pt")
    for split, (latents, labels) in splits.items():
        (root / split).mkdir(exist_ok=True)
        kept = len(latents) // batch * batch  # drop_last
        for start in range(0, kept, batch):
            block = latents[start:start + batch].clone()  # one storage per batch
            for j in range(batch):
                torch.save({"modulations": block[j], "label": labels[start + j]},
                           root / split / f"datapoint_{start + j}.pt")
    return root
