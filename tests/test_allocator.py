"""The CPU allocator setting (mednf.engine.allocator): applied once where glibc is the C library, skipped on
request; in a fresh process so that the test run's own allocator is left as it is."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

SCRIPT = """
import ctypes, torch
from mednf.engine.allocator import keep_freed_memory
from mednf.engine.meta import MetaLearner
from mednf.engine.config import FieldConfig, MetaConfig
before = keep_freed_memory.__globals__["_state"].get("applied")
MetaLearner(FieldConfig(num_layers=3, hidden_dim=8, latent_dim=4), MetaConfig(steps=1), seed=0)
print(before, keep_freed_memory(), keep_freed_memory())
"""


def _run(env_extra: dict[str, str]) -> str:
    env = {**os.environ, **env_extra}
    done = subprocess.run([sys.executable, "-c", SCRIPT], check=False, capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_meta_learner_applies_the_setting_once():
    assert _run({}) == ["None", "True", "True"]  # not at import; by the first CPU MetaLearner; stays


def test_system_allocator_on_request():
    assert _run({"MEDNF_MALLOC": "system"}) == ["None", "False", "False"]
