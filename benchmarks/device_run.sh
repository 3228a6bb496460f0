#!/usr/bin/env bash
# The GPU check on the borrowed H200 (Python 3.12, JAX with CUDA, no TensorFlow, no keras).
#
# Here, once per machine, copy what it needs into an ignored folder:
#   mkdir -p .device && cp -r ../shared/device/. .device/ && echo /.device/ >> .git/info/exclude
# Then, with the device tool:
#   run(command="bash benchmarks/device_run.sh", carry=[".device"], timeout_s=600)
# It installs the carried keras wheels and writes $OUT/jax_gpu.json and $OUT/log.txt.
set -euo pipefail
pip install -q --no-index --no-deps --target /tmp/pylib .device/wheels/*.whl
export PYTHONPATH="/tmp/pylib:$PWD" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv || true
# Stops itself before the call's 10-minute limit; the JSON holds every row measured by then.
timeout 540 python -m benchmarks.jax_gpu --data=.device/mnist.npz --out="${OUT:-.}/jax_gpu.json" "$@" 2>&1 | tee "${OUT:-.}/log.txt"
