#!/usr/bin/env bash
# Prepares the GPU run on a machine with network (run from anywhere; works in the repository root).
#
# The GPU machine is offline, has Python 3.12 with a fixed set of packages (benchmarks/gpu/image-packages.txt)
# and receives only the repository's working tree plus the ignored folders named in the call's `carry`. This
# script fills those folders, both listed in .git/info/exclude so that they are never committed:
#   .whl/      the cp312 manylinux x86-64 wheels of every package mednf needs that the image lacks, and of
#              their own missing dependencies, resolved from the wheels' METADATA (benchmarks/gpu/wheels.py;
#              fails when the result differs from the pins in benchmarks/gpu/wheels.txt)
#   .gpudata/  the real data files the run reads: medmnist/breastmnist_64.npz, copied from ../shared
# and prints the size of what a call carries (the working tree plus both folders; at most 64 MiB a call).
#
# Usage: benchmarks/gpu/prepare.sh [--rehearsal]
#   --rehearsal  also fetch the same wheels for this machine's Python into .whl-cpXY/, for
#                `benchmarks/gpu/run.sh --dry-run` in a fresh virtual environment here (see benchmarks/README.md)
# Environment: MEDNF_MEDMNIST_SOURCE  folder holding breastmnist_64.npz (default ../shared/data/medmnist)
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-python3}"
LIMIT_MIB=64
REHEARSAL=0
for arg in "$@"; do
    case "$arg" in
        --rehearsal) REHEARSAL=1 ;;
        -h|--help) sed -n '2,17p' "$0"; exit 0 ;;
        *) echo "prepare.sh: unknown argument $arg (see --help)" >&2; exit 2 ;;
    esac
done

# 1. the folders are ignored by this clone only (never committed, never in .gitignore's shared list)
exclude="$(git rev-parse --git-path info/exclude)"
mkdir -p "$(dirname "$exclude")"
touch "$exclude"
for pattern in /.whl/ /.gpudata/ "/.whl-cp*/"; do
    grep -qxF "$pattern" "$exclude" || echo "$pattern" >>"$exclude"
done

# 2. wheels: one version of each (a second one would stop the whole install), so start from an empty folder
fetch() {  # fetch FOLDER PYTHON_VERSION
    mkdir -p "$1"
    find "$1" -maxdepth 1 -name '*.whl' -delete
    echo "wheels for CPython $2 into $1/:"
    "$PYTHON" benchmarks/gpu/wheels.py resolve "$1" --python "$2"
}
fetch .whl 3.12
if [[ "$REHEARSAL" == 1 ]]; then
    here="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
    fetch ".whl-cp${here/./}" "$here"
fi

# 3. data: the BreastMNIST 64² file of the check's part 4 and of the build smoke test
source_dir="${MEDNF_MEDMNIST_SOURCE:-$REPO/../shared/data/medmnist}"
DATA_FILES=(breastmnist_64.npz)
mkdir -p .gpudata/medmnist
for file in "${DATA_FILES[@]}"; do
    if [[ ! -f "$source_dir/$file" ]]; then
        echo "prepare.sh: $source_dir/$file is absent; set MEDNF_MEDMNIST_SOURCE to the folder holding it" >&2
        exit 1
    fi
    cp -f "$source_dir/$file" .gpudata/medmnist/
    chmod u+w ".gpudata/medmnist/$file"
    echo "data: .gpudata/medmnist/$file ($(md5sum ".gpudata/medmnist/$file" | cut -d' ' -f1))"
done

# 4. what one call carries: the working tree (tracked and untracked-not-ignored files) plus .whl and .gpudata
mib() { awk '{s += $1} END {printf "%.2f", s / 1048576}'; }
tree_mib="$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2>/dev/null | mib)"
whl_mib="$(find .whl -type f -printf '%s\n' | mib)"
data_mib="$(find .gpudata -type f -printf '%s\n' | mib)"
total="$(echo "$tree_mib $whl_mib $data_mib" | awk '{printf "%.2f", $1 + $2 + $3}')"
echo "size: working tree $tree_mib MiB + .whl $whl_mib MiB + .gpudata $data_mib MiB = $total MiB" \
     "(limit $LIMIT_MIB MiB a call)"
if awk -v t="$total" -v l="$LIMIT_MIB" 'BEGIN {exit !(t > l)}'; then
    echo "prepare.sh: $total MiB is over the $LIMIT_MIB MiB a call carries" >&2
    exit 1
fi
