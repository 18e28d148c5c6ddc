"""One build's fixed settings, handed to every stage (:mod:`mednf.building.pipeline` lists them)."""

from __future__ import annotations

import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from mednf.building.buildlog import say
from mednf.building.distributed import Dist
from mednf.building.options import BuildOptions
from mednf.engine.config import EngineConfig
from mednf.engine.memory import MemoryBudget
from mednf.format.layout import WORK
from mednf.sources.spec import BuilderSpec


@dataclass(frozen=True)
class BuildRun:
    """A build in ``out`` (for a continuation: its scratch folder) with its spec, engine, options, device,
    ranks and memory budget, all settled before the first stage."""

    out: Path
    spec: BuilderSpec
    cfg: EngineConfig
    options: BuildOptions
    device: torch.device
    dist: Dist
    budget: MemoryBudget
    started: float = field(default_factory=time.perf_counter)

    @property
    def work(self) -> Path:
        """The resumable state of the unfinished build (``.partial``)."""
        return self.out / WORK

    @property
    def device_name(self) -> str:
        """The device as build.log and the manifest name it."""
        if self.device.type == "cuda":
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        threads = torch.get_num_threads()
        return f"cpu ({platform.processor() or platform.machine()}, {threads} thread{'s' if threads != 1 else ''})"

    def say(self, message: str) -> None:
        """To build.log and, on rank 0, the console (:func:`mednf.building.buildlog.say`)."""
        say(message, self.dist)
