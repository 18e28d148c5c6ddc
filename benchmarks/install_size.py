"""What an install of mednf weighs: the distributions its required dependencies pull in and their size on disk.

Usage::

    python benchmarks/install_size.py                # this checkout's pyproject.toml
    python benchmarks/install_size.py --pyproject OLD/pyproject.toml --extra hf

Read from the environment mednf is installed in (``importlib.metadata``): the closure of the required
dependencies (and of the extras named), each distribution's files as its RECORD lists them, sized on disk.
torch is reported apart (its CPU and CUDA builds differ by gigabytes, and every install needs it).
"""

from __future__ import annotations

import argparse
import re
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement


def _name(text: str) -> str:
    return re.sub(r"[-_.]+", "-", text).lower()


def closure(requirements: list[str], extras: set[str]) -> set[str]:
    """Names of every installed distribution the requirements need, transitively (markers evaluated)."""
    seen: set[str] = set()
    todo = [(Requirement(r), extras) for r in requirements]
    while todo:
        req, wanted = todo.pop()
        if req.marker is not None and not any(req.marker.evaluate({"extra": e}) for e in (wanted or {""})):
            continue
        name = _name(req.name)
        if name in seen or name == "mednf":
            for extra in req.extras if name == "mednf" else ():
                todo.extend((Requirement(r), {extra}) for r in _mednf_extras.get(extra, []))
            continue
        try:
            dist = metadata.distribution(req.name)
        except metadata.PackageNotFoundError:
            continue
        seen.add(name)
        todo.extend((Requirement(r), set(req.extras)) for r in dist.requires or [])
    return seen


def size_of(name: str) -> int:
    """Bytes of the files a distribution installed."""
    dist = metadata.distribution(name)
    total = 0
    for file in dist.files or []:
        path = Path(dist.locate_file(file))
        if path.is_file():
            total += path.stat().st_size
    return total


_mednf_extras: dict[str, list[str]] = {}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pyproject", type=Path, default=Path(__file__).resolve().parents[1] / "pyproject.toml")
    p.add_argument("--extra", action="append", default=[])
    a = p.parse_args()
    project = tomllib.loads(a.pyproject.read_text())["project"]
    _mednf_extras.update(project.get("optional-dependencies", {}))
    requirements = list(project["dependencies"])
    for extra in a.extra:
        requirements += _mednf_extras[extra]
    names = closure(requirements, set())
    sizes = {n: size_of(n) for n in names}
    torch = sizes.pop("torch", 0)
    print(f"{a.pyproject} {'+'.join(a.extra) or '(required only)'}: {len(names)} distributions, "
          f"{sum(sizes.values()) / 2**20:.0f} MiB without torch (torch {torch / 2**20:.0f} MiB here)")
    for n, s in sorted(sizes.items(), key=lambda kv: -kv[1])[:12]:
        print(f"  {n:28s} {s / 2**20:8.1f} MiB")


if __name__ == "__main__":
    main()
