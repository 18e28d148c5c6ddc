#!/usr/bin/env bash
# The GPU run of mednf, in one command that ends inside 9 minutes (run on the GPU machine, from anywhere).
#
# The GPU machine is offline, and mednf is not pip-installed there: this script installs the wheels that
# benchmarks/gpu/prepare.sh fetched (.whl/, carried) into a temporary folder with --no-index --no-deps, puts
# that folder and the checkout on PYTHONPATH, points every cache of mednf, Hugging Face, matplotlib, Triton
# and Inductor into temporary folders, and runs, each step timed and cut off before the budget is spent (a
# step that fails or is cut off is recorded, and the next one runs):
#   1. preflight  imports torch, the carried packages and mednf from the checkout; sees the GPU (stops here
#                 with exit 3 when something is missing, so a fixed rerun still fits the device time)
#   2. build      the main command on the real BreastMNIST 64² file (.gpudata/, carried), all 780 images:
#                 `mednf build breastnf --gpu 0 --steps 300`, capped at 180 s
#   3. use        what the build wrote, through the CLI: `mednf decode` (test images 0-15 beside their
#                 inputs, decode.png) and `mednf eval --split all` (load, decode every latent, PSNR / SSIM
#                 against the source images, eval.png), each capped at 60 s; their results join build.json
#   4. check      benchmarks/gpu_check.py (exactness, memory budget, determinism, engine speed / memory / PSNR
#                 per precision and arm, roofline and profile, decode) with the time left; it rewrites its
#                 results after every part
# Results, written as they come (a run cut short returns what it measured), in $OUT (else --out, else
# benchmarks/gpu_check_results/): run.log, environment.txt, build.json, build.log, training.png, decode.png,
# eval.png, gpu_check.json, gpu_check.md. benchmarks/README.md says how to call it and how to read them.
#
# Usage: benchmarks/gpu/run.sh [--dry-run] [--budget S] [--no-build] [--wheels DIR] [--out DIR] [-- CHECK_ARGS]
#   --dry-run     the same flow on a CPU, with tiny sizes (under a minute): the rehearsal of a GPU run
#   --budget S    seconds for the whole run (default 540; dry run 300)
#   --no-build    skip steps 2 and 3 (a shorter rerun)
#   --wheels DIR  the wheels to install (default .whl for Python 3.12, else .whl-cpXY from prepare.sh --rehearsal)
#   --out DIR     results folder when $OUT is unset
#   -- ARGS       passed on to gpu_check.py (e.g. -- --precisions bf16)
# Environment: PYTHON (default python3), the interpreter that holds torch.
# Exit code: gpu_check.py's when it is not 0, else 4 when the build, decode or eval failed, else 0; 3 when the
# preflight failed.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$REPO"
PYTHON="${PYTHON:-python3}"
DRY=0
BUDGET=""
BUILD=1
WHEELS=""
OUT_DIR="${OUT:-}"
CHECK_ARGS=()
while (($#)); do
    case "$1" in
        --) shift; CHECK_ARGS=("$@"); break ;;
        --dry-run) DRY=1 ;;
        --budget) BUDGET="$2"; shift ;;
        --no-build) BUILD=0 ;;
        --wheels) WHEELS="$2"; shift ;;
        --out) [[ -n "${OUT:-}" ]] || OUT_DIR="$2"; shift ;;
        -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
        *) echo "run.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done
BUDGET="${BUDGET:-$([[ "$DRY" == 1 ]] && echo 300 || echo 540)}"
OUT_DIR="${OUT_DIR:-$REPO/benchmarks/gpu_check_results}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
START=$SECONDS
left() { echo $((BUDGET - (SECONDS - START))); }

RESULTS=(run.log environment.txt build.json build.log training.png decode.png eval.png gpu_check.json
         gpu_check.md)
for file in "${RESULTS[@]}"; do rm -f "${OUT_DIR:?}/$file"; done  # no stale result from an earlier run

# everything printed also goes to run.log, line by line as it comes
exec > >(tee "$OUT_DIR/run.log") 2>&1
TEE_PID=$!
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mednf-gpu.XXXXXX")"
# shellcheck disable=SC2329  # finish is the EXIT trap
finish() {  # scratch removed, run.log complete
    local code=$?
    rm -rf "$WORK"
    exec >&- 2>&-
    wait "$TEE_PID" 2>/dev/null || true
    exit "$code"
}
trap finish EXIT
echo "run.sh: $(date -Is), budget ${BUDGET} s, dry run: $DRY, results in $OUT_DIR, scratch $WORK"

# ------------------------------------------------------------------------------------------- environment
PYVER="$("$PYTHON" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
if [[ -z "$WHEELS" ]]; then
    WHEELS="$([[ "$PYVER" == 3.12 ]] && echo .whl || echo ".whl-cp${PYVER/./}")"
fi
shopt -s nullglob
wheels=("$WHEELS"/*.whl)
shopt -u nullglob
if ((${#wheels[@]} == 0)); then
    echo "run.sh: no wheels in $REPO/$WHEELS: run benchmarks/gpu/prepare.sh (--rehearsal for Python $PYVER)" \
         "and name the folder in the call's carry" >&2
    exit 3
fi
SITE="$WORK/site"
"$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    "${wheels[@]}"
echo "installed ${#wheels[@]} wheels from $WHEELS into $SITE: ${wheels[*]##*/}"

# mednf.builders and mednf.cards are the top-level folders builders/ and cards/, mapped into the package by
# pyproject.toml's package-dir: only an install has them. The build step therefore imports mednf from a view
# of the checkout (symbolic links to its files) that adds them; the check imports the checkout itself.
VIEW="$WORK/src"
mkdir -p "$VIEW/mednf"
for entry in "$REPO"/mednf/*; do ln -s "$entry" "$VIEW/mednf/"; done
for extra in builders cards; do [[ -e "$VIEW/mednf/$extra" ]] || ln -s "$REPO/$extra" "$VIEW/mednf/$extra"; done

export PYTHONPATH="$SITE:$REPO" PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 PYTHONNOUSERSITE=1
export MEDNF_HOME="$WORK/mednf-home" MEDMNIST_ROOT="$REPO/.gpudata/medmnist"
export HF_HOME="$WORK/hf" HF_DATASETS_CACHE="$WORK/hf/datasets" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
export XDG_CACHE_HOME="$WORK/cache" MPLCONFIGDIR="$WORK/matplotlib" MPLBACKEND=Agg
export TORCHINDUCTOR_CACHE_DIR="$WORK/inductor" TRITON_CACHE_DIR="$WORK/triton"
unset MEDNF_REGISTRY
mkdir -p "$MEDNF_HOME" "$HF_HOME" "$XDG_CACHE_HOME" "$MPLCONFIGDIR"

{
    echo "date: $(date -Is)"
    echo "host: $(uname -srm)"
    echo "python: $("$PYTHON" -VV | tr '\n' ' ') at $(command -v "$PYTHON")"
    echo "PYTHONPATH: $PYTHONPATH"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    echo "carried wheels:"
    printf '  %s\n' "${wheels[@]##*/}"
    echo "installed distributions (name==version):"
    "$PYTHON" -m pip list --format=freeze 2>/dev/null | sed 's/^/  /'
} >"$OUT_DIR/environment.txt" 2>&1 || true

# ------------------------------------------------------------------------------------------- 1. preflight
echo "== 1. preflight ($(left) s left)"
if ! MEDNF_GPU_DRY="$DRY" timeout -k 5 90 "$PYTHON" - "$REPO" <<'PY'
"""Imports of the GPU run, from the checkout, with nothing of mednf installed: one line each."""
import ast
import importlib
import importlib.metadata
import os
import sys
from pathlib import Path

repo = Path(sys.argv[1]).resolve()
dry = os.environ["MEDNF_GPU_DRY"] == "1"
failed = []


def check(what, fn):
    try:
        print(f"  ok    {what}: {fn()}")
    except Exception as err:  # noqa: BLE001 - every failure is listed, then the run stops
        failed.append(what)
        print(f"  FAIL  {what}: {type(err).__name__}: {err}")


import torch  # noqa: E402

cuda = torch.cuda.is_available()
print(f"  ok    torch {torch.__version__} (CUDA {torch.version.cuda}), cuda available: {cuda}")
if cuda:
    print(f"  ok    device 0: {torch.cuda.get_device_name(0)}")
elif not dry:
    failed.append("cuda")
    print("  FAIL  torch sees no CUDA device")
installed = [d for d in importlib.metadata.distributions(name="mednf")
             if not Path(str(d.locate_file(""))).resolve().is_relative_to(repo)]  # not the checkout's egg-info
if installed:
    where = ", ".join(str(d.locate_file("")) for d in installed)
    print(f"  note  mednf is also pip-installed ({where}); the checkout comes first on PYTHONPATH")
else:
    print("  ok    mednf is not pip-installed: it is imported from the checkout")


def from_checkout():
    import mednf

    if not Path(mednf.__file__).resolve().is_relative_to(repo):
        raise ImportError(f"mednf came from {mednf.__file__}, not from {repo}")
    return mednf.__file__


check("mednf from the checkout", from_checkout)
for name in ("zarr", "numcodecs", "donfig", "google_crc32c"):  # the build writes its latents with zarr
    check(f"carried {name}", lambda name=name: getattr(importlib.import_module(name), "__file__", "?"))
tree = ast.parse((repo / "benchmarks" / "gpu_check.py").read_text(encoding="utf-8"))
engine = sorted({n.module for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and (n.module or "").startswith("mednf")})
for name in [*engine, "mednf.building.api", "mednf.format.writer", "mednf.cli"]:  # the check's, then the build's
    check(f"import {name}", lambda name=name: importlib.import_module(name).__name__)
try:
    importlib.import_module("datasets")
    print("  ok    carried datasets (Dataset.to_hf only)")
except Exception as err:  # noqa: BLE001 - the run does not need it
    print(f"  note  datasets does not import ({type(err).__name__}: {err}); only Dataset.to_hf needs it")
try:
    importlib.import_module("mednf.builders")
    print("  ok    mednf.builders imports from the checkout")
except ImportError:
    print("  note  mednf.builders does not import from the checkout (builders/ is mapped in by an install); "
          "the build step uses a view of the checkout that adds builders/ and cards/")
if failed:
    sys.exit(f"preflight failed: {', '.join(failed)}")
PY
then
    echo "run.sh: preflight failed; nothing else ran ($((SECONDS - START)) s)" >&2
    exit 3
fi

# ------------------------------------------------------------------------------------------- 2. build, 3. use
# record STEP STATUS|CODE SECONDS COMMAND PATH: build.json gets STEP's record (exit code, seconds, command): the
# build's (PATH its dataset folder: files and manifest) replaces the file, decode's and eval's (PATH the step's
# stdout, parsed as JSON) join it under their names. STATUS "skipped" with the reason as COMMAND.
record() {
    "$PYTHON" - "$OUT_DIR/build.json" "$@" <<'PY' || true
"""One step's record in build.json."""
import json
import sys
from pathlib import Path

out, step, code, seconds, command, path = Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), *sys.argv[5:]
path = Path(path)
if code == "skipped":
    record = {"status": "skipped", "note": command}
else:
    status = "ok" if code == "0" else ("timeout" if code in ("124", "137") else "error")
    record = {"status": status, "exit_code": int(code), "seconds": seconds, "command": command}
if step == "build":
    files = {p.relative_to(path).as_posix(): p.stat().st_size for p in sorted(path.rglob("*")) if p.is_file()}
    manifest = path / "mednf.json"
    record |= {"files": files if len(files) <= 200 else f"{len(files)} files",
               "manifest": json.loads(manifest.read_text(encoding="utf-8")) if manifest.is_file() else None}
    document = record
else:
    text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
    try:
        record["result"] = json.loads(text)
    except ValueError:
        record["output_tail"] = text[-2000:]
    document = json.loads(out.read_text(encoding="utf-8")) if out.is_file() else {}
    document[step] = record
out.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
print(f"{step}: {record['status']}" + (f" (exit {code}) in {seconds} s" if code != "skipped" else f": {command}"))
PY
}

# run_cli CAP OUTPUT ARGS...: `python -m mednf.cli ARGS` from $WORK with the view of the checkout, cut off
# after CAP seconds, its stdout into OUTPUT; sets STEP_CODE and STEP_SECONDS. From $WORK: `python -m` puts the
# working folder first on sys.path, and the checkout's own mednf/ (without builders/) must not shadow the view.
run_cli() {
    local cap=$1 output=$2
    shift 2
    local cmd=("$PYTHON" -m mednf.cli "$@")
    STEP_COMMAND="${cmd[*]}"
    echo "+ cd $WORK; PYTHONPATH=$SITE:$VIEW timeout ${cap} ${cmd[*]} > ${output}"
    local t0=$SECONDS
    STEP_CODE=0
    (cd "$WORK" && PYTHONPATH="$SITE:$VIEW" timeout -k 10 "$cap" "${cmd[@]}" >"$output") || STEP_CODE=$?
    STEP_SECONDS=$((SECONDS - t0))
}

# cap_for WANTED KEEP: WANTED seconds, or fewer so that KEEP seconds of the budget remain after the step
cap_for() { local cap=$1 room=$(($(left) - $2)); echo $((cap < room ? cap : room)); }

BUILD_CODE=0
USE_CODE=0
if [[ "$BUILD" == 1 ]]; then
    echo "== 2. build: mednf build breastnf ($(left) s left)"
    data="$MEDMNIST_ROOT/breastmnist_64.npz"
    if [[ "$DRY" == 1 ]]; then
        on=(--threads 1)
        args=(--cpu --steps 3 --max-samples 8 --batch-size 4 --fit-steps 2
              --set field.num_layers=3 --set field.hidden_dim=16 --set field.latent_dim=8)
        keep=120  # for decode, eval and the check
    else
        on=(--gpu 0)
        args=(--steps 300)  # about 0.1 s per paper-config meta-iteration on an H100 (modelled), all 780 images fitted
        keep=240
    fi
    cap=$(cap_for 180 "$keep")
    dataset="$WORK/BreastNF"
    if [[ ! -f "$data" ]]; then
        echo "build skipped: $data is absent (run benchmarks/gpu/prepare.sh and carry .gpudata)"
        record build skipped 0 "$data is absent" "$dataset"
    elif ((cap < 20)); then
        echo "build skipped: ${cap} s left for it"
        record build skipped 0 "time budget spent" "$dataset"
    else
        run_cli "$cap" "$WORK/build.out" build breastnf "${on[@]}" "${args[@]}" --no-download \
            --medmnist-root "$MEDMNIST_ROOT" --out "$dataset" --quiet
        BUILD_CODE=$STEP_CODE
        cat "$WORK/build.out"  # --quiet: nothing but errors (they are on stderr, in run.log already)
        for file in build.log training.png; do
            if [[ -f "$dataset/$file" ]]; then cp "$dataset/$file" "$OUT_DIR/"; fi
        done
        record build "$BUILD_CODE" "$STEP_SECONDS" "$STEP_COMMAND" "$dataset"
    fi

    echo "== 3. use: mednf decode, mednf eval ($(left) s left)"
    for step in decode eval; do
        cap=$(cap_for 60 $((keep - 60)))
        if [[ ! -f "$dataset/mednf.json" ]]; then
            record "$step" skipped 0 "the build wrote no complete dataset" "-"
            continue
        elif ((cap < 15)); then
            record "$step" skipped 0 "time budget spent" "-"
            continue
        fi
        if [[ "$step" == decode ]]; then
            run_cli "$cap" "$WORK/decode.json" decode "$dataset" "${on[@]}" --split test --indices 0:16 \
                --out "$OUT_DIR/decode.png" --medmnist-root "$MEDMNIST_ROOT" --json
        else
            run_cli "$cap" "$WORK/eval.json" eval "$dataset" "${on[@]}" --split all --out "$WORK/eval" \
                --plot "$OUT_DIR/eval.png" --medmnist-root "$MEDMNIST_ROOT" --json
        fi
        ((STEP_CODE == 0)) || USE_CODE=$STEP_CODE
        record "$step" "$STEP_CODE" "$STEP_SECONDS" "$STEP_COMMAND" "$WORK/$step.json"
    done
fi

# ------------------------------------------------------------------------------------------- 4. check
CHECK_CODE=0
remaining=$(left)
check_budget=$((remaining - 60))  # imports and CUDA start come before gpu_check.py's own clock starts
if [[ "$DRY" == 1 ]] && ((check_budget > 90)); then check_budget=90; fi
echo "== 4. check: benchmarks/gpu_check.py (${remaining} s left, --time-budget ${check_budget})"
if ((check_budget < 60)); then
    echo "check skipped: too little time left"
    CHECK_CODE=2
else
    cmd=("$PYTHON" benchmarks/gpu_check.py --out "$OUT_DIR" --medmnist-root "$MEDMNIST_ROOT"
         --time-budget "$check_budget")
    if [[ "$DRY" == 1 ]]; then cmd+=(--dry-run); fi
    cmd+=("${CHECK_ARGS[@]}")
    echo "+ timeout $((remaining - 10)) ${cmd[*]}"
    timeout -k 5 $((remaining - 10)) "${cmd[@]}" || CHECK_CODE=$?
fi

echo "run.sh: build exit $BUILD_CODE, decode/eval exit $USE_CODE, check exit $CHECK_CODE," \
     "$((SECONDS - START)) s of $BUDGET; results in $OUT_DIR"
if ((CHECK_CODE != 0)); then exit "$CHECK_CODE"; fi
if ((BUILD_CODE != 0 || USE_CODE != 0)); then exit 4; fi
exit 0
