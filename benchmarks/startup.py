"""Start-up time of the commands that only read: ``import mednf``, ``mednf --help``, ``mednf list``,
``mednf info DATASET`` — two checkouts side by side, runs alternated so that load on the machine hits both.

    python benchmarks/startup.py OLD_CHECKOUT NEW_CHECKOUT DATASET_FOLDER [--runs 9]

Each command runs in a fresh interpreter with ``PYTHONPATH`` set to the checkout (builders/ and cards/ are read
from the checkout when it is not installed). Prints the median seconds of each and the ratio new/old, and which
of torch / zarr each imported.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

COMMANDS = {
    "import mednf": ["-c", "import mednf"],
    "mednf --help": ["-c", "from mednf.cli import main; main()", "--help"],
    "mednf list": ["-c", "from mednf.cli import main; main()", "list"],
    "mednf info DATASET": ["-c", "from mednf.cli import main; main()", "info", "{dataset}"],
}


def run(checkout: str, args: list[str], home: str) -> float:
    """Seconds of one run of ``args`` with ``checkout`` on the path."""
    env = dict(os.environ, PYTHONPATH=checkout, MEDNF_HOME=home)
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *args], env=env, cwd=home, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode:
        raise SystemExit(f"{args} failed in {checkout}: {done.stderr[-400:]}")
    return seconds


def loaded(checkout: str, args: list[str], home: str) -> str:
    """Which of torch / zarr the command imports."""
    code = "import sys; from mednf.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit: pass\n" \
           "print('torch' in sys.modules, 'zarr' in sys.modules, file=sys.stderr)"
    if args[:2] == ["-c", "import mednf"]:
        code = "import sys, mednf; print('torch' in sys.modules, 'zarr' in sys.modules, file=sys.stderr)"
    env = dict(os.environ, PYTHONPATH=checkout, MEDNF_HOME=home)
    done = subprocess.run([sys.executable, "-c", code, *args[2:]], env=env, cwd=home, capture_output=True, text=True)
    torch_, zarr_ = done.stderr.strip().splitlines()[-1].split()
    return "+".join(n for n, on in (("torch", torch_), ("zarr", zarr_)) if on == "True") or "neither"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("dataset")
    parser.add_argument("--runs", type=int, default=9)
    args = parser.parse_args()
    home = tempfile.mkdtemp(prefix="mednf-startup-")
    commands = {k: [a.format(dataset=args.dataset) for a in v] for k, v in COMMANDS.items()}
    times: dict[tuple[str, str], list[float]] = {(k, t): [] for k in commands for t in ("old", "new")}
    for _ in range(args.runs):
        for name, argv in commands.items():
            for tag, checkout in (("old", args.old), ("new", args.new)):
                times[(name, tag)].append(run(checkout, argv, home))
    print("| command | old (s) | new (s) | new/old | old imports | new imports |\n|---|---:|---:|---:|---|---|")
    for name, argv in commands.items():
        old, new = statistics.median(times[(name, "old")]), statistics.median(times[(name, "new")])
        print(f"| `{name}` | {old:.3f} | {new:.3f} | {new / old:.2f} | {loaded(args.old, argv, home)} | "
              f"{loaded(args.new, argv, home)} |")


if __name__ == "__main__":
    main()
