#!/usr/bin/env bash
# The GPU check, for a machine with an NVIDIA GPU and CuPy but possibly no package index:
#   bash bench/gpu_check.sh
# If Dask is missing, wheels in bench/wheels/ (or .whl/ at the repository root) are installed into
# /tmp/site first. Runs the CuPy tests, then bench/gpu_check.py (equivalence and throughput).
# Bounded to 8 minutes in all.
set -uo pipefail
cd "$(dirname "$0")/.."
if ! python3 -c "import dask, distributed" 2>/dev/null; then
  wheels=$(ls bench/wheels/*.whl .whl/*.whl 2>/dev/null)
  [ -n "$wheels" ] || { echo "Dask is missing and no wheels were found in bench/wheels/"; exit 1; }
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site $wheels || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
python3 -c "import cupy; print('CuPy', cupy.__version__, 'devices:', cupy.cuda.runtime.getDeviceCount())"
status=0
timeout 240 python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py -o addopts="" \
  -W "ignore::DeprecationWarning" || status=1
timeout 240 python3 bench/gpu_check.py || status=1
exit $status
