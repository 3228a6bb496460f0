r"""Times one training step (ms per batch) of standard training, PGD-AT and LFR.

Runs each method on random MNIST-shaped data with the SmallCNN, in graph mode
and/or XLA, float32 and/or mixed bfloat16, on 1 or more replicas, and prints a
markdown table (ms per batch, examples per second) plus the LFR/PGD-AT ratio at
equal K.

    python -m benchmarks.train_step --steps=40 --batch_size=128 --repeats=5
    python -m benchmarks.train_step --steps=10 --modes=graph --dtypes=float32,mixed_bfloat16
    python -m benchmarks.train_step --steps=10 --modes=graph --replicas=2
    python -m benchmarks.train_step --steps=5 --modes=graph --methods=trades,lfr --awp_gamma=0.005
    python -m benchmarks.train_step --steps=5 --modes=graph --methods=lfr \
        --dtypes=mixed_bfloat16 --activations=relu,softplus,gelu,silu
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import keras_lfr  # noqa: E402

FLAGS = flags.FLAGS


def time_step(
    method,
    jit_compile,
    steps,
    batch_size,
    repeats,
    dtype,
    strategy,
    awp_gamma=0.0,
    activation="relu",
):
    """Returns the median wall time in ms of one `train_on_batch` call."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch_size, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, size=batch_size).astype("int32")
    hyper = {} if method == "standard" else {"steps": steps}
    with strategy.scope():
        cnn = keras_lfr.models.small_cnn(
            dtype=None if dtype == "float32" else dtype, activation=activation
        )
        model = keras_lfr.wrap(cnn, method=method, awp_gamma=awp_gamma, **hyper)
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
    logging.set_verbosity(logging.WARNING)  # keep the progress bar readable
    strategy = tf.distribute.get_strategy()
    if FLAGS.replicas > 1:
        gpus = tf.config.list_physical_devices("GPU")
        if not gpus:
            cpu = tf.config.list_physical_devices("CPU")[0]
            tf.config.set_logical_device_configuration(
                cpu, [tf.config.LogicalDeviceConfiguration()] * FLAGS.replicas
            )
        kind = "GPU" if gpus else "CPU"
        strategy = tf.distribute.MirroredStrategy([f"/{kind}:{i}" for i in range(FLAGS.replicas)])
    devices = [d.device_type for d in tf.config.list_physical_devices()]
    print(
        f"TensorFlow {tf.__version__}, Keras {keras.__version__}, devices {devices}, "
        f"{os.cpu_count()} CPUs; batch {FLAGS.batch_size}, K={FLAGS.steps}, "
        f"{strategy.num_replicas_in_sync} replica(s), median of {FLAGS.repeats}\n"
    )
    print(
        "| method | activation | mode | dtype | ms / batch | examples / s |\n"
        "|---|---|---|---|---|---|"
    )
    results = {}
    for dtype in FLAGS.dtypes:
        for mode in FLAGS.modes:
            for activation in FLAGS.activations:
                for method in FLAGS.methods:
                    ms = time_step(
                        method,
                        mode == "xla",
                        FLAGS.steps,
                        FLAGS.batch_size,
                        FLAGS.repeats,
                        dtype,
                        strategy,
                        FLAGS.awp_gamma,
                        activation,
                    )
                    results[method, activation, mode, dtype] = ms
                    rate = FLAGS.batch_size / ms * 1000
                    name = f"{method}+awp" if FLAGS.awp_gamma else method
                    print(
                        f"| {name} | {activation} | {mode} | {dtype} | {ms:.0f} | {rate:.0f} |",
                        flush=True,
                    )
    for (method, activation, mode, dtype), ms in results.items():
        if method == "lfr" and ("pgd_at", activation, mode, dtype) in results:
            ratio = ms / results["pgd_at", activation, mode, dtype]
            print(f"\nLFR / PGD-AT at K={FLAGS.steps} ({activation}, {mode}, {dtype}): {ratio:.2f}")
    for (method, activation, mode, dtype), ms in results.items():
        if activation != "relu" and (method, "relu", mode, dtype) in results:
            ratio = ms / results[method, "relu", mode, dtype]
            print(f"{method} {activation} / relu ({mode}, {dtype}): {ratio:.2f}")


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_integer("steps", 40, "Inner steps K of PGD-AT and LFR.")
    flags.DEFINE_integer("batch_size", 128, "Examples per batch.")
    flags.DEFINE_integer("repeats", 5, "Timed steps per configuration (after 2 warm-up steps).")
    flags.DEFINE_list("methods", ["standard", "pgd_at", "lfr"], "Methods to time.")
    flags.DEFINE_float("awp_gamma", 0.0, "Time each method with AWP of this γ (0: without).")
    flags.DEFINE_list("modes", ["graph", "xla"], "Compilation modes: graph and/or xla.")
    flags.DEFINE_list(
        "activations", ["relu"], "SmallCNN activations: any of keras_lfr.models.ACTIVATIONS."
    )
    flags.DEFINE_list("dtypes", ["float32"], "Layer dtype policies: float32 and/or mixed_bfloat16.")
    flags.DEFINE_integer(
        "replicas", 1, "MirroredStrategy replicas (on a CPU-only machine: logical CPU devices)."
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
