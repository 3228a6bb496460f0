"""Trains 3 LFR steps with `distributed_fit`, as one of two workers or alone.

Usage: python tests/helpers/multi_worker_run.py OUT.npz [TASK_INDEX PORT0 PORT1]

With a task index, runs as that worker of a 2-worker MultiWorkerMirroredStrategy
cluster on localhost; without, as a single process. Either way the same global
batches of 16 are used: each worker takes its contiguous half of every batch.
"""

import json
import os
import sys

out = sys.argv[1]
if len(sys.argv) > 2:
    index, ports = int(sys.argv[2]), sys.argv[3:5]
    os.environ["TF_CONFIG"] = json.dumps(
        {
            "cluster": {"worker": [f"localhost:{p}" for p in ports]},
            "task": {"type": "worker", "index": index},
        }
    )
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import keras_lfr  # noqa: E402

GLOBAL_BATCH, STEPS = 16, 3
multi_worker = len(sys.argv) > 2
strategy = (
    tf.distribute.MultiWorkerMirroredStrategy() if multi_worker else tf.distribute.get_strategy()
)
rng = np.random.default_rng(0)
x = rng.uniform(size=(GLOBAL_BATCH * STEPS, 28, 28, 1)).astype("float32")
y = rng.integers(0, 10, size=GLOBAL_BATCH * STEPS).astype("int32")
fc3 = (rng.normal(size=(200, 10)) * 0.1).astype("float32")


def per_worker_batches(context):
    size = context.get_per_replica_batch_size(GLOBAL_BATCH)
    start = context.input_pipeline_id * size
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(GLOBAL_BATCH)
    return batches.map(
        lambda images, labels: (images[start : start + size], labels[start : start + size])
    )


with strategy.scope():
    keras.utils.set_random_seed(1)
    cnn = keras_lfr.models.small_cnn(dropout=0.0)
    cnn.get_layer("fc3").kernel.assign(fc3)
    # The random start is drawn per replica: start at x to compare exactly.
    model = keras_lfr.wrap(cnn, epsilon=0.1, steps=2, lam=0.5, random_start="none")
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9))
history = keras_lfr.distributed.distributed_fit(
    model, per_worker_batches, epochs=1, steps_per_epoch=STEPS, verbose=0
)
weights = {f"arr_{i}": w for i, w in enumerate(model.get_weights())}
np.savez(out, loss=history["loss"][-1], steps=int(model.optimizer.iterations.numpy()), **weights)
print("replicas", strategy.num_replicas_in_sync, history)
