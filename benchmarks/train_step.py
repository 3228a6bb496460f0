r"""Times one training step (ms per batch) of standard training, PGD-AT and LFR.

Runs each method on random MNIST-shaped data with the SmallCNN, graph mode
and XLA, and prints a markdown table plus the LFR/PGD-AT ratio at equal K.

    python -m benchmarks.train_step --steps=40 --batch_size=128 --repeats=5
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_lfr  # noqa: E402

FLAGS = flags.FLAGS
flags.DEFINE_integer("steps", 40, "Inner steps K of PGD-AT and LFR.")
flags.DEFINE_integer("batch_size", 128, "Examples per batch.")
flags.DEFINE_integer("repeats", 5, "Timed steps per configuration (after 2 warm-up steps).")
flags.DEFINE_list("methods", ["standard", "pgd_at", "lfr"], "Methods to time.")
flags.DEFINE_list("modes", ["graph", "xla"], "Compilation modes: graph and/or xla.")


def time_step(method, jit_compile, steps, batch_size, repeats):
    """Returns the median wall time in ms of one `train_on_batch` call."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch_size, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=batch_size).astype("int32")
    hyper = {} if method == "standard" else {"steps": steps}
    model = keras_lfr.wrap(keras_lfr.models.small_cnn(), method=method, **hyper)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit_compile)
    for _ in range(2):  # trace, compile, warm caches
        model.train_on_batch(x, y)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        model.train_on_batch(x, y)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def main(argv):
    del argv
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, devices {devices}, "
        f"{os.cpu_count()} CPUs; batch {FLAGS.batch_size}, K={FLAGS.steps}, "
        f"median of {FLAGS.repeats}\n"
    )
    print("| method | mode | ms / batch |\n|---|---|---|")
    results = {}
    for mode in FLAGS.modes:
        for method in FLAGS.methods:
            ms = time_step(method, mode == "xla", FLAGS.steps, FLAGS.batch_size, FLAGS.repeats)
            results[method, mode] = ms
            print(f"| {method} | {mode} | {ms:.0f} |", flush=True)
    for mode in FLAGS.modes:
        if ("lfr", mode) in results and ("pgd_at", mode) in results:
            ratio = results["lfr", mode] / results["pgd_at", mode]
            print(f"\nLFR / PGD-AT at K={FLAGS.steps} ({mode}): {ratio:.2f}")


if __name__ == "__main__":
    app.run(main)
