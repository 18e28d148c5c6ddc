"""``mednf.build``: everything ``mednf build`` does, from Python.

:func:`build_options` checks and assembles the settings (the CLI uses it too, so both refuse the same
mistakes with the same line); :func:`build` runs the build (or resumes it, or confirms it is complete, or
continues it) and returns the finished dataset's three splits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from mednf.arguments import CLI, PYTHON, Wording, is_int
from mednf.building.options import BuildOptions
from mednf.building.pipeline import build as run_build
from mednf.dataset import MedNFDatasetDict
from mednf.engine.memory import parse_memory
from mednf.errors import ConfigError
from mednf.loading import load

_SHORTCUTS = (("steps", "meta", "steps"), ("batch_size", "meta", "batch_size"), ("latent_dim", "field", "latent_dim"),
              ("fit_steps", "fit", "steps"), ("precision", "field", "precision"))


def _sections(overrides: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """``{"meta.inner_steps": 5}`` or ``{"meta": {"inner_steps": 5}}`` → ``{"meta": {"inner_steps": 5}}``."""
    sections: dict[str, dict[str, Any]] = {}
    for key, value in (overrides or {}).items():
        if not isinstance(key, str):
            raise ConfigError(f"overrides key {key!r} is invalid: expected 'section.key' or a section name")
        section, dot, name = key.partition(".")
        if dot and name:
            sections.setdefault(section, {})[name] = value
        elif isinstance(value, Mapping):
            sections.setdefault(key, {}).update(value)
        else:
            raise ConfigError(f"overrides {key!r} = {value!r} is invalid: expected 'section.key' = value (e.g. "
                              "'meta.inner_steps': 5) or a section mapped to a dict")
    return sections


def _path(path: str | Path | None) -> Path | None:
    return None if path is None else Path(path).expanduser()


def _check_types(values: dict[str, Any], wording: Wording) -> None:
    """A one-line ConfigError naming the first keyword of ``values`` whose value has the wrong type, before any
    work: not a TypeError from deep inside the build (the ranges are checked where the values are used)."""
    def name(key: str) -> str:
        return wording.label(key).removesuffix(" =")

    for key in ("max_samples", "continue_to", "steps", "batch_size", "latent_dim", "fit_steps", "size", "gpu"):
        if values[key] is not None and not is_int(values[key]):
            raise ConfigError(f"{name(key)} = {values[key]!r} is invalid: expected an integer")
    for key in ("preset", "precision"):
        if values[key] is not None and not isinstance(values[key], str):
            raise ConfigError(f"{name(key)} = {values[key]!r} is invalid: expected a name (a string)")
    for key in ("out", "medmnist_root", "source_npz", "tensorboard"):
        if values[key] is not None and not isinstance(values[key], (str, os.PathLike)):
            raise ConfigError(f"{name(key)} = {values[key]!r} is invalid: expected a path (a string or a Path)")
    if values["overrides"] is not None and not isinstance(values["overrides"], Mapping):
        raise ConfigError(f"{name('overrides')} = {values['overrides']!r} is invalid: expected a dict such as "
                          "{'meta.inner_steps': 5}")


def _gpu(device: str | int | torch.device | None) -> int | None:
    """``None``/``"cpu"`` → None (CPU); ``"cuda"``/``"cuda:N"``/``N`` → the GPU index."""
    if device is None:
        return None
    if isinstance(device, int) and not isinstance(device, bool):
        return device
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device = {device!r} is invalid: expected 'cpu', 'cuda', 'cuda:N' or a GPU index") from None
    if device.type == "cpu":
        return None
    if device.type != "cuda":
        raise ConfigError(f"device = {str(device)!r} is invalid: mednf builds on 'cpu' or 'cuda[:N]'")
    return device.index or 0


def build_options(*, out: str | Path | None = None, gpu: int | None = None, steps: int | None = None,
                  batch_size: int | None = None, latent_dim: int | None = None, fit_steps: int | None = None,
                  precision: str | None = None, size: int | None = None, preset: str | None = None,
                  overrides: Mapping[str, Any] | None = None, medmnist_root: str | Path | None = None,
                  source_npz: str | Path | None = None, max_samples: int | None = None, download: bool = True,
                  restart: bool = False, continue_to: int | None = None, memory_budget: str | int | None = None,
                  progress: bool = True, tensorboard: str | Path | None = None,
                  wording: Wording = CLI) -> BuildOptions:
    """The checked :class:`~mednf.building.options.BuildOptions` of a build (see :func:`build`); ``wording``:
    how its messages name the options (the CLI's flags, or :func:`build`'s keywords)."""
    _check_types({"out": out, "gpu": gpu, "steps": steps, "batch_size": batch_size, "latent_dim": latent_dim,
                  "fit_steps": fit_steps, "precision": precision, "size": size, "preset": preset,
                  "overrides": overrides, "medmnist_root": medmnist_root, "source_npz": source_npz,
                  "max_samples": max_samples, "continue_to": continue_to, "tensorboard": tensorboard}, wording)
    max_samples, continue_to = (None if n is None else int(n) for n in (max_samples, continue_to))  # NumPy ints too
    if memory_budget is not None:
        parse_memory(memory_budget, wording.label("memory_budget"))  # a bad value ends here, before any work
    sections = _sections(overrides)
    build_overrides = sections.pop("build", {})
    shortcuts = {"steps": steps, "batch_size": batch_size, "latent_dim": latent_dim, "fit_steps": fit_steps,
                 "precision": precision}
    for name, section, key in _SHORTCUTS:
        if shortcuts[name] is not None:
            sections.setdefault(section, {})[key] = shortcuts[name]
    for key, value in build_overrides.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ConfigError(f"build.{key} = {value!r} is invalid: expected an integer ≥ 1")
    return BuildOptions(out=_path(out), gpu=gpu, size=size, preset=preset, overrides=sections,
                        build_overrides=build_overrides, medmnist_root=_path(medmnist_root),
                        source_npz=_path(source_npz), max_samples=max_samples, download=download, restart=restart,
                        progress=progress, memory_budget=memory_budget, continue_to=continue_to,
                        tensorboard=_path(tensorboard), wording=wording)


def build(name_or_toml: str | Path, *, out: str | Path | None = None, device: str | int | torch.device | None = None,
          steps: int | None = None, batch_size: int | None = None, latent_dim: int | None = None,
          fit_steps: int | None = None, precision: str | None = None, size: int | None = None,
          preset: str | None = None, overrides: Mapping[str, Any] | None = None,
          medmnist_root: str | Path | None = None, source_npz: str | Path | None = None,
          max_samples: int | None = None, download: bool = True, restart: bool = False,
          continue_to: int | None = None, memory_budget: str | int | None = None, progress: bool = True,
          tensorboard: str | Path | None = None) -> MedNFDatasetDict:
    """Build a MedNF dataset (what ``mednf build`` does) and return its splits.

    Args:
        name_or_toml: a builder name (``"phantomnf"``, see ``mednf list``) or the path of a builder file.
        out: the dataset folder [default: ``$MEDNF_HOME/<Name>``].
        device: ``"cpu"`` (default), ``"cuda"``, ``"cuda:N"`` or a GPU index.
        steps: ``meta.steps`` (this and the next four are the CLI's shortcuts).
        batch_size: ``meta.batch_size``.
        latent_dim: ``field.latent_dim``.
        fit_steps: ``fit.steps``.
        precision: ``field.precision``.
        size: the MedMNIST resolution.
        preset: an engine preset instead of the builder's ``[engine]``.
        overrides: any engine or build setting, ``{"meta.inner_steps": 5, "build.val_every": 100}`` or
            ``{"meta": {"inner_steps": 5}}`` (the CLI's ``--set``).
        medmnist_root: the folder with the MedMNIST npz files (``--medmnist-root``).
        source_npz: build from this npz (MedMNIST layout) instead (``--source-npz``).
        max_samples: the first N samples per split only.
        download: whether a missing source file may be downloaded.
        restart: discard an earlier build in ``out``.
        continue_to: continue a finished build to that many meta-iterations (:mod:`mednf.building.continuation`).
        memory_budget: e.g. ``"8GB"`` (default: 60 % of the available RAM / 80 % of free GPU memory).
        progress: progress bars.
        tensorboard: a folder for a TensorBoard log of the training curves and validation reconstructions
            (needs ``pip install tensorboard``).

    Returns:
        The finished dataset, all three splits (:class:`mednf.dataset.MedNFDatasetDict`). Rerunning the same
        call resumes an interrupted build, or returns the complete one without work.
    """
    options = build_options(out=out, gpu=_gpu(device), steps=steps, batch_size=batch_size, latent_dim=latent_dim,
                            fit_steps=fit_steps, precision=precision, size=size, preset=preset, overrides=overrides,
                            medmnist_root=medmnist_root, source_npz=source_npz, max_samples=max_samples,
                            download=download, restart=restart, continue_to=continue_to,
                            memory_budget=memory_budget, progress=progress, tensorboard=tensorboard,
                            wording=PYTHON)
    return load(run_build(name_or_toml, options), split=None)
