#!/usr/bin/env bash
# The GPU check on the borrowed H200 (Python 3.12, JAX with CUDA, no TensorFlow, no keras).
#
# Here, once per machine, copy what it needs into an ignored folder:
#   mkdir -p .device && cp -r ../shared/device/. .device/ && echo /.device/ >> .git/info/exclude
#   cp ../shared/reference/lfr_official_mnist_smallcnn.npz .device/   # the authors' model
# Then, with the device tool:
#   run(command="bash benchmarks/device_run.sh", carry=[".device"], timeout_s=600)
# It installs the carried keras wheels and writes $OUT/mixed_precision.json,
# $OUT/jax_gpu.json and $OUT/log.txt.
set -euo pipefail
pip install -q --no-index --no-deps --target /tmp/pylib .device/wheels/*.whl
export PYTHONPATH="/tmp/pylib:$PWD" KERAS_BACKEND=jax PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv || true
# 1. The autoattack protocol in float32 and in mixed precision (bfloat16 search, float32
#    verdicts) on the authors' model, 500 test images, one after the other.
if [ -f .device/lfr_official_mnist_smallcnn.npz ]; then
  timeout 180 python -m benchmarks.mixed_precision --mode=timing --models=authors \
    --examples=500 --data_npz=.device/mnist.npz \
    --reference_weights=.device/lfr_official_mnist_smallcnn.npz \
    --out="${OUT:-.}/mixed_precision.json" 2>&1 | tee "${OUT:-.}/log.txt" || true
else
  echo "No .device/lfr_official_mnist_smallcnn.npz: the precision timing is skipped." | tee "${OUT:-.}/log.txt"
fi
# 2. Stops itself before the call's 10-minute limit; the JSON holds every row measured by then.
timeout 360 python -m benchmarks.jax_gpu --data=.device/mnist.npz --out="${OUT:-.}/jax_gpu.json" "$@" 2>&1 | tee -a "${OUT:-.}/log.txt"
