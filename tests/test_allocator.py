"""The opt-in CPU allocator setting around meta-iterations (mednf.engine.allocator): off by default (it
makes results depend on buffer placement), in effect inside each meta-iteration with MEDNF_MALLOC=keep. In a fresh
process, so that the test run's allocator is left alone."""

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
def test_on_request_every_cpu_meta_iteration_runs_with_the_setting():
    assert _run({"MEDNF_MALLOC": "keep"}) == ["True", "True"]


def test_by_default_the_allocator_is_left_alone():
    env = {k: v for k, v in os.environ.items() if k != "MEDNF_MALLOC"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "False"]
