"""Runs one training step under MirroredStrategy in a fresh process.

Usage: python tests/helpers/mirrored_step.py REPLICAS JIT METHOD OUT.npz [START:STOP]

START:STOP trains on that slice of the 16 examples only (the whole batch by
default).

Logical CPUs must be configured before TensorFlow initialises, hence a
separate process. Writes the weights after the step and the logged loss.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

replicas, jit, method, out = int(sys.argv[1]), sys.argv[2] == "1", sys.argv[3], sys.argv[4]
start, stop = (int(i) for i in (sys.argv[5] if len(sys.argv) > 5 else "0:16").split(":"))
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras_lfr  # noqa: E402

rng = np.random.default_rng(0)
x = rng.uniform(size=(16, 28, 28, 1)).astype("float32")
y = rng.integers(0, 10, size=16).astype("int32")
devices = [f"/cpu:{i}" for i in range(replicas)]
strategy = tf.distribute.MirroredStrategy(devices)
with strategy.scope():
    keras.utils.set_random_seed(1)
    cnn = keras_lfr.models.small_cnn(dropout=0.0)
    cnn.get_layer("fc3").kernel.assign(rng.normal(size=(200, 10)).astype("float32") * 0.1)
    hyper = {} if method == "standard" else {"steps": 2, "epsilon": 0.1}
    if method == "lfr":
        # The random start is drawn per replica; start at x to compare exactly.
        hyper["random_start"] = "none"
        hyper["lam"] = 0.5
    if method in ("adr", "lsp"):
        # Random starts are drawn per replica: a ball of 1e-6 makes them negligible,
        # and a large weight makes the batch-wide term dominate.
        hyper.update(epsilon=1e-6, step_size=1e-7)
        hyper["global_weight" if method == "adr" else "weight"] = 10.0
    model = keras_lfr.wrap(cnn, method=method, **hyper)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit)
initial = [w.copy() for w in model.get_weights()]
batches = tf.data.Dataset.from_tensor_slices((x[start:stop], y[start:stop])).batch(16)
history = model.fit(batches, verbose=0, shuffle=False)
moved = sum(np.abs(a - b).sum() for a, b in zip(model.get_weights(), initial, strict=True))
# Which XLA path ran: Keras compiles the whole step on one replica; on several,
# the wrapper compiles only the per-replica gradient function.
if model.jit_compile:
    xla = "step"
else:
    xla = "gradients" if model._gradient_fn != model.compute_gradients else "none"
weights = {f"arr_{i}": w for i, w in enumerate(model.get_weights())}
np.savez(out, loss=history.history["loss"][0], moved=moved, xla=xla, **weights)
print("replicas", strategy.num_replicas_in_sync, "jit", model.jit_compile, history.history)
