#!/usr/bin/env bash
# GPU check of remflow's restoration: throughput, memory, TF32 vs float32, and how far GPU
# arithmetic moves fitted column positions. Prints one JSON object (see check.py).
#
#   tests/gpu/check.sh          on a machine with an NVIDIA GPU: installs what it needs into
#                               .venv-gpu (remflow + tensorflow[and-cuda]), then measures;
#                               about 5 minutes on one GPU, well inside 10.
#   tests/gpu/check.sh --dry    on a CPU, tiny sizes, no installs: checks the script itself
#                               (CI runs this: tests/test_gpu_check.py).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
export PYTHONPATH="$REPO/scripts:$REPO/tests/benchmarks${PYTHONPATH:+:$PYTHONPATH}"
export TF_CPP_MIN_LOG_LEVEL=2

if [[ "${1:-}" == "--dry" ]]; then
    # $PYTHON if given, else the project's .venv, else python3.
    if [[ -z "${PYTHON:-}" ]]; then
        if [[ -x "$REPO/.venv/bin/python" ]]; then PYTHON="$REPO/.venv/bin/python"; else PYTHON="$(command -v python3)"; fi
    fi
    exec "$PYTHON" "$HERE/check.py" --dry
fi

if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L >/dev/null 2>&1; then
    echo '{"error": "no NVIDIA GPU visible (nvidia-smi); use --dry on a CPU"}'
    exit 2
fi
VENV="${REMFLOW_GPU_VENV:-$REPO/.venv-gpu}"
if [[ ! -x "$VENV/bin/python" ]]; then
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
fi
if ! "$VENV/bin/python" -c "import remflow, tensorflow as tf, sys; sys.exit(0 if tf.config.list_physical_devices('GPU') else 1)" 2>/dev/null; then
    # remflow's own pins (tk_r_em, atomap, hyperspy, ...) plus TensorFlow with its CUDA libraries.
    "$VENV/bin/python" -m pip install --quiet -e "$REPO" 'tensorflow[and-cuda]>=2.16' >&2
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >&2
exec timeout 600 "$VENV/bin/python" "$HERE/check.py"
