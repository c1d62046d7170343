#!/usr/bin/env bash
# The GPU run of issue 15 in one go, on a machine with one H100 or H200: the gpu-marked tests,
# then benchmarks/gpu_edit.py on TANGO and on AudioLDM-m at full size, in 8 minutes at most.
# Everything lands in $OUT (default: gpu-run-out/): run.log, gpu-tests.xml, nvidia-smi.txt,
# tango-full.json and audioldm-full.json (each written as it grows, so a part cut off by its
# time limit still leaves what it measured).
#
#   bash benchmarks/gpu_run.sh wheels     # here, with the project's environment active and PyPI in reach
#   bash benchmarks/gpu_run.sh run        # there: tests, TANGO (main stages and variants), AudioLDM-m
#   bash benchmarks/gpu_run.sh compile    # there, a second run (5 min): TANGO's torch.compile and CUDA-graph
#                                         # variants, main stages shortened and extrapolated
#
# The GPU machine has Python 3.12 with torch, transformers, peft, accelerate, safetensors, numpy,
# scipy, numba and scikit-learn, and no network. `wheels` downloads what nrt needs beyond that
# (diffusers, soundfile, soxr, librosa and what they need) for Python 3.12 on x86-64, at the
# versions installed here, into .wheels-gpu/, which git is told to ignore (.git/info/exclude); the
# run installs them into /tmp/site. With the device tool: run `bash benchmarks/gpu_run.sh run`
# with carry [".wheels-gpu"].
#
# Time limits (each part is cut off by `timeout`; 470 s in all): installing 10 s, tests 90 s,
# TANGO 270 s (checkpoints written to /tmp, main stages capped at 30 s each and extrapolated
# past that, variants started only while the budget lasts), AudioLDM-m 100 s (main stages only).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=.wheels-gpu
# what nrt imports that the GPU machine's image lacks, and what those need that it lacks
PACKAGES=(diffusers importlib_metadata soundfile cffi pycparser soxr librosa audioread pooch decorator platformdirs)
MODELS=/tmp/nrt-gpu-models

wheels() {
    local exclude pins
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qxF "/$WHEELS/" "$exclude" 2>/dev/null || echo "/$WHEELS/" >>"$exclude"
    pins=$(python3 -c 'import sys, importlib.metadata as m; print(" ".join(f"{n}=={m.version(n)}" for n in sys.argv[1:]))' "${PACKAGES[@]}")
    rm -rf "$WHEELS"
    # shellcheck disable=SC2086  # one argument per pin
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$WHEELS" $pins
    du -sh "$WHEELS"
}

setup() {
    OUT=${OUT:-gpu-run-out}
    mkdir -p "$OUT"
    exec > >(tee -a "$OUT/run.log") 2>&1
    timeout 60 python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$WHEELS"/*.whl
    export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
    export NRT_CACHE=/tmp/nrt-cache
    nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1 || true
    python3 -c 'import torch, diffusers, transformers, peft; print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name() if torch.cuda.is_available() else "NO CUDA DEVICE", "diffusers", diffusers.__version__, "transformers", transformers.__version__, "peft", peft.__version__)' ||
        echo "== the Python stack does not import: see above"
}

part() {  # part NAME SECONDS COMMAND...: run with a time limit, say how it ended, go on either way
    local name=$1 limit=$2 started=$SECONDS
    shift 2
    echo "== $name (at most $limit s)"
    timeout "$limit" "$@" && echo "== $name: done in $((SECONDS - started)) s" ||
        echo "== $name: ended with status $? after $((SECONDS - started)) s"
}

run() {
    setup
    part "gpu tests" 90 python3 -m pytest -q -m gpu tests/test_gpu.py -p no:cacheprovider -rs \
        --junitxml="$OUT/gpu-tests.xml"
    part "TANGO" 270 python3 benchmarks/gpu_edit.py --backbone tango --size full --work-dir "$MODELS" \
        --stage-seconds 30 --budget 240 -o "$OUT/tango-full.json"
    part "AudioLDM-m" 100 python3 benchmarks/gpu_edit.py --backbone audioldm --size full --work-dir "$MODELS" \
        --stage-seconds 12 --variants none -o "$OUT/audioldm-full.json"
}

compile_run() {
    setup
    part "TANGO, compiled" 280 python3 benchmarks/gpu_edit.py --backbone tango --size full --work-dir "$MODELS" \
        --embed-steps 50 --tune-steps 100 --full-steps 20 --sample-steps 50 --variants compile,cuda_graphs \
        --budget 260 -o "$OUT/tango-compile.json"
}

case ${1:-} in
wheels) wheels ;;
run) run ;;
compile) compile_run ;;
*)
    echo "usage: bash benchmarks/gpu_run.sh wheels|run|compile" >&2
    exit 2
    ;;
esac
