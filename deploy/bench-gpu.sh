#!/usr/bin/env bash
# `make bench-gpu`: on a bare GPU machine whose python3 already has CUDA torch, numba,
# pyarrow, fsspec, tokenizers and pytest. What it lacks (ray, zstandard) comes from the
# wheels in .whl/ that `make gpu-wheels` fetched on a machine with PyPI; they go into a
# private directory on PYTHONPATH, nothing is installed into the system. Prints one
# JSON object (pipeline/bench_gpu.py says what is in it); arguments are passed on.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
SITE=${SITE:-/tmp/proxycomp-site}
WHEELS=${WHEELS:-.whl}
if compgen -G "$WHEELS/*.whl" > /dev/null; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
  export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export RAY_USAGE_STATS_ENABLED=0 PYTHONUNBUFFERED=1
if ! "$PY" -c "import ray, zstandard, torch, numba, pyarrow, fsspec, yaml, tqdm" 2>/dev/null; then
  "$PY" -c "import ray, zstandard, torch, numba, pyarrow, fsspec, yaml, tqdm" || true
  echo "bench-gpu: a package is missing (above); run 'make gpu-wheels' where PyPI is reachable and bring .whl/" >&2
  exit 2
fi
exec "$PY" -m benchmarks.gpu "$@"
