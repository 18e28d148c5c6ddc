"""Which wheels travel to the GPU machine: mednf's dependencies that its image lacks, and theirs.

The GPU machine is offline and has a fixed image (``image-packages.txt`` beside this file). Everything mednf
requires (``pyproject.toml``'s ``[project].dependencies``) that the image does not hold has to travel as a
wheel, and so does every dependency of such a wheel that the image does not hold either. This module works
that list out from the wheels' own METADATA (``Requires-Dist``, its environment markers evaluated for CPython
3.12 on Linux x86-64, ``extra ==`` requirements skipped), downloading each wheel with ``pip download
--no-deps`` for the target interpreter, and checks it against the pinned list ``wheels.txt``.

Commands (``python benchmarks/gpu/wheels.py …``, run by ``benchmarks/gpu/prepare.sh``)::

    resolve DEST [--python 3.12]   download the wheels into DEST; exit 1 if the resolution and wheels.txt differ
    list                           print wheels.txt's pins, one ``name==version`` a line

Only the standard library and ``packaging`` are imported, so that the test can use it with no network.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tomllib
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from email.parser import Parser
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
IMAGE_FILE = HERE / "image-packages.txt"
PINS_FILE = HERE / "wheels.txt"
PYPROJECT = REPO / "pyproject.toml"
# pip matches a manylinux tag exactly: the tags a current wheel for x86-64 Linux is published under
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_24_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64", "manylinux_2_31_x86_64", "manylinux_2_34_x86_64",
             "manylinux_2_35_x86_64", "linux_x86_64")


def _lines(path: Path) -> list[str]:
    """The non-empty lines of ``path`` without ``#`` comments."""
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def image_packages(path: Path = IMAGE_FILE) -> set[str]:
    """Canonical names of the distributions on the GPU machine's image."""
    return {canonicalize_name(name) for name in _lines(path)}


def pinned(path: Path = PINS_FILE) -> dict[str, str]:
    """``wheels.txt``: canonical name → pinned version."""
    pins = {}
    for line in _lines(path):
        name, _, version = line.partition("==")
        if not version:
            raise ValueError(f"{path}: {line!r} is not name==version")
        pins[canonicalize_name(name)] = version.strip()
    return pins


def mednf_requirements(pyproject: Path = PYPROJECT) -> list[Requirement]:
    """mednf's required dependencies (``[project].dependencies``; extras are not needed on the GPU machine)."""
    with pyproject.open("rb") as f:
        return [Requirement(text) for text in tomllib.load(f)["project"]["dependencies"]]


def target_environment(python: str = "3.12") -> dict[str, str]:
    """Marker values of CPython ``python`` on Linux x86-64 (the GPU machine, or its rehearsal here)."""
    env = dict(default_environment())
    env.update(python_version=python, python_full_version=f"{python}.0", sys_platform="linux",
               platform_system="Linux", platform_machine="x86_64", os_name="posix", implementation_name="cpython",
               platform_python_implementation="CPython")
    return env


def applies(req: Requirement, env: dict[str, str]) -> bool:
    """Whether ``req`` is needed on the target: its marker holds there with no extra selected."""
    return req.marker is None or req.marker.evaluate({**env, "extra": ""})


def wheel_requirements(wheel: Path) -> list[Requirement]:
    """The ``Requires-Dist`` lines of a wheel's METADATA."""
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.count("/") == 1 and n.endswith(".dist-info/METADATA"))
        meta = Parser().parsestr(zf.read(name).decode("utf-8"))
    return [Requirement(text) for text in meta.get_all("Requires-Dist") or []]


def needed(requirements: Iterable[Requirement], image: set[str], env: dict[str, str]) -> list[Requirement]:
    """The requirements that apply on the target and that the image does not satisfy."""
    return [r for r in requirements if applies(r, env) and canonicalize_name(r.name) not in image]


@dataclass
class Resolution:
    """What :func:`resolve` found: the wheels (name → file), who needed each, and what went wrong."""

    wheels: dict[str, Path] = field(default_factory=dict)
    needed_by: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def pins(self) -> dict[str, str]:
        """name → version of the downloaded wheels."""
        return {name: str(parse_wheel_filename(path.name)[1]) for name, path in self.wheels.items()}


def download(spec: str, dest: Path, python: str) -> Path:
    """``pip download --no-deps`` of one wheel for CPython ``python`` on manylinux x86-64 into ``dest``."""
    before = set(dest.glob("*.whl"))
    platforms = [arg for platform in PLATFORMS for arg in ("--platform", platform)]
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
           "--python-version", python, "--implementation", "cp", *platforms, "--progress-bar", "off",
           "-d", str(dest), spec]
    subprocess.run(cmd, check=True)
    name = canonicalize_name(Requirement(spec).name)
    new = [p for p in set(dest.glob("*.whl")) - before] or list(dest.glob("*.whl"))
    matches = [p for p in new if canonicalize_name(parse_wheel_filename(p.name)[0]) == name]
    if not matches:
        raise RuntimeError(f"pip download {spec} left no wheel of {name} in {dest}")
    return max(matches, key=lambda p: p.stat().st_mtime)


def resolve(dest: Path, python: str = "3.12", image: set[str] | None = None,
            pins: dict[str, str] | None = None) -> Resolution:
    """Download, breadth first, every wheel mednf needs on the target that the image lacks (the pinned
    version where ``wheels.txt`` names one, else the newest that satisfies who asked for it)."""
    image = image_packages() if image is None else image
    pins = pinned() if pins is None else pins
    env = target_environment(python)
    dest.mkdir(parents=True, exist_ok=True)
    out = Resolution()
    queue = [(r, "mednf") for r in needed(mednf_requirements(), image, env)]
    while queue:
        req, parent = queue.pop(0)
        name = canonicalize_name(req.name)
        out.needed_by.setdefault(name, []).append(f"{parent} ({req})")
        if name in out.wheels:
            version = out.pins()[name]
            if req.specifier and not req.specifier.contains(version, prereleases=True):
                out.problems.append(f"{parent} needs {req}, but {name}=={version} is carried")
            continue
        spec = f"{name}=={pins[name]}" if name in pins else f"{name}{req.specifier}"
        if name in pins and req.specifier and not req.specifier.contains(pins[name], prereleases=True):
            out.problems.append(f"{parent} needs {req}, but wheels.txt pins {name}=={pins[name]}")
        try:
            wheel = download(spec, dest, python)
        except (subprocess.CalledProcessError, RuntimeError) as err:
            out.problems.append(f"pip could not download {spec} for CPython {python}: {err}")
            continue
        out.wheels[name] = wheel
        queue += [(r, name) for r in needed(wheel_requirements(wheel), image, env)]
    return out


def compare(found: dict[str, str], pins: dict[str, str]) -> list[str]:
    """The differences between a resolution's name → version and ``wheels.txt``, one line each."""
    lines = [f"needed but not in wheels.txt: {n}=={v}" for n, v in sorted(found.items()) if n not in pins]
    lines += [f"in wheels.txt but not needed: {n}=={v}" for n, v in sorted(pins.items()) if n not in found]
    lines += [f"version differs: wheels.txt {n}=={pins[n]}, resolved {v}" for n, v in sorted(found.items())
              if n in pins and pins[n] != v]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    """``resolve DEST [--python X.Y]`` or ``list``; see the module docstring."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n", 1)[0])
    sub = parser.add_subparsers(dest="command", required=True)
    res = sub.add_parser("resolve", help="download the wheels into DEST and check them against wheels.txt")
    res.add_argument("dest", type=Path)
    res.add_argument("--python", default="3.12", help="target CPython version (3.12: the GPU machine)")
    sub.add_parser("list", help="print wheels.txt's pins")
    args = parser.parse_args(argv)
    pins = pinned()
    if args.command == "list":
        print("\n".join(f"{n}=={v}" for n, v in pins.items()))
        return 0
    result = resolve(args.dest, args.python, pins=pins)
    for name, path in result.wheels.items():
        print(f"  {path.name:70s} {path.stat().st_size / 2**20:7.2f} MiB  needed by {result.needed_by[name][0]}")
    problems = result.problems + compare(result.pins(), pins)
    for line in problems:
        print(f"wheels.py: {line}", file=sys.stderr)
    if problems:
        print(f"wheels.py: the resolution for CPython {args.python} does not match {PINS_FILE}; fix it",
              file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
