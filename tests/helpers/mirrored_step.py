"""Runs training steps under MirroredStrategy in a fresh process, one per STEP.

Usage: python tests/helpers/mirrored_step.py OUT_DIR STEP [STEP ...]

Each STEP is `REPLICAS,JIT,METHOD,START:STOP`: one `fit` step of METHOD
(JIT: `1` to compile it with XLA) on the examples START:STOP of a fixed
batch of 16, on REPLICAS logical CPUs, from the same initial weights. The
i-th STEP writes `OUT_DIR/<i>.npz` (from 0): the weights after the step, the
logged loss, how far the weights moved and which XLA path ran.

Logical CPUs must be configured before TensorFlow initialises, hence a
separate process; it runs every step of a test module, to import TensorFlow
once.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

import keras_lfr  # noqa: E402


def run(step, out):
    replicas, jit, method, examples = step.split(",")
    replicas, jit = int(replicas), jit == "1"
    start, stop = (int(i) for i in examples.split(":"))
    keras.backend.clear_session()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(16, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=16).astype("int32")
    strategy = tf.distribute.MirroredStrategy([f"/cpu:{i}" for i in range(replicas)])
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
    print(step, strategy.num_replicas_in_sync, model.jit_compile, history.history)


if __name__ == "__main__":
    out_dir, *steps = sys.argv[1:]
    for i, step in enumerate(steps):
        run(step, os.path.join(out_dir, f"{i}.npz"))
