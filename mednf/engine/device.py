"""The device a command runs on: ``--gpu N`` (``gpu=N``) checked against what this machine has."""

from __future__ import annotations

import torch

from mednf.errors import ConfigError


def resolve_device(gpu: int | None) -> torch.device:
    """``--gpu N`` → cuda:N (checked), None → CPU."""
    if gpu is None:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ConfigError(f"--gpu {gpu} was given but CUDA is not available (torch {torch.__version__}); "
                          "drop --gpu to build on the CPU, or install a CUDA build of torch")
    count = torch.cuda.device_count()
    if not 0 <= gpu < count:
        raise ConfigError(f"--gpu {gpu} is out of range: this machine has {count} GPU(s), 0..{count - 1}")
    return torch.device("cuda", gpu)
