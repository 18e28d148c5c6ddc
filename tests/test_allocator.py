"""The CPU allocator setting around meta-iterations (mednf.engine.allocator): in effect inside, glibc's
mmap back on after, skipped on request. In a fresh process, so that the test run's allocator is left alone."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

SCRIPT = """
import torch
import mednf.engine.allocator as allocator
from mednf.engine.meta import MetaLearner
from mednf.engine.config import FieldConfig, MetaConfig
seen = []
original = allocator.graph_memory
def spy():
    cm = original()
    class Wrapped:
        def __enter__(self):
            seen.append(cm.__enter__())
        def __exit__(self, *exc):
            return cm.__exit__(*exc)
    return Wrapped()
import mednf.engine.meta as meta
meta.graph_memory = spy
learner = MetaLearner(FieldConfig(num_layers=3, hidden_dim=8, latent_dim=4), MetaConfig(steps=2, batch_size=2), seed=0)
learner.step(torch.rand(2, 1, 4, 4))
learner.step(torch.rand(2, 1, 4, 4))
print(*seen)
"""


def _run(env_extra: dict[str, str]) -> list[str]:
    env = {**os.environ, **env_extra}
    done = subprocess.run([sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_every_cpu_meta_iteration_runs_with_the_setting():
    assert _run({}) == ["True", "True"]


def test_system_allocator_on_request():
    assert _run({"MEDNF_MALLOC": "system"}) == ["False", "False"]
