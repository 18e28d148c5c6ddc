"""The registry of published datasets (``builders/registry.toml``; ``$MEDNF_REGISTRY`` replaces it): per
name the Zenodo record / HF repository and the checksums a download must match.
"""

from __future__ import annotations

import os
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

from mednf.errors import DownloadError
from mednf.format.store import unfinished_build


def registry() -> dict[str, dict[str, Any]]:
    """Name → entry of every published dataset (keys as written, e.g. ``DermaNF``)."""
    override = os.environ.get("MEDNF_REGISTRY")
    if override:
        text = Path(override).read_text(encoding="utf-8")
    else:
        text = resources.files("mednf.builders").joinpath("registry.toml").read_text(encoding="utf-8")
    return tomllib.loads(text)


def is_registered(name: str) -> bool:
    return any(key.lower() == name.lower() for key in registry())


def registry_entry(name: str) -> tuple[str, dict[str, Any]]:
    for key, entry in registry().items():
        if key.lower() == name.lower():
            return key, entry
    raise DownloadError(f"no published copy of {name!r} is registered (known: {', '.join(registry()) or 'none'}); "
                        f"build it with `mednf build {name.lower()}`")


def offline_check(what: str, url: str, target: Path) -> None:
    if os.environ.get("MEDNF_OFFLINE", "") not in ("", "0"):
        raise DownloadError(f"{what} is not in the cache and MEDNF_OFFLINE is set; download {url} and unpack it "
                            f"to {target}, or unset MEDNF_OFFLINE")

def check_target(target: Path) -> None:
    if unfinished_build(target):
        raise DownloadError(f"{target} holds an unfinished `mednf build`; finish it (rerun the build) or remove it, "
                            "or download into another --root")
