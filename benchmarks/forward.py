r"""What one attack query costs: SmallCNN's forward pass in float32 and bfloat16.

    python -m benchmarks.forward                   # batch 500, as the evaluations' chunks
    python -m benchmarks.forward --threads=1       # one core: the per-core rate
    python -m benchmarks.forward --batch_size=8 --calls=1 --repeats=1   # a smoke run

Square spends nearly all of its time in forward passes (5,000 per image still
robust), so their cost bounds the `autoattack` protocol's. This times a
compiled (graph-mode) forward pass of a batch of MNIST-sized images, in wall
and in CPU seconds of this process, and converts the CPU time into GFLOP/s
(SmallCNN: 19.9 MFLOP per image). The best of `--repeats` rounds of
`--calls` calls is reported. `--threads` caps TensorFlow's thread pools
(0: its default, one thread per core).
"""

import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import keras_lfr

FLAGS = flags.FLAGS
# Multiply-adds of SmallCNN per 28x28x1 image: four 3x3 convolutions, three dense layers.
MACS = (
    26 * 26 * 32 * 9
    + 24 * 24 * 32 * 9 * 32
    + 10 * 10 * 64 * 9 * 32
    + 8 * 8 * 64 * 9 * 64
    + 1024 * 200
    + 200 * 200
    + 200 * 10
)


def forward_seconds(dtype, batch_size, calls, repeats):
    """(wall, CPU) seconds of one compiled forward pass of `batch_size` images, best round."""
    model = keras_lfr.models.small_cnn(dtype=dtype)
    x = tf.constant(np.random.default_rng(0).uniform(size=(batch_size, 28, 28, 1)), "float32")
    forward = tf.function(lambda images: model(tf.cast(images, dtype), training=False))
    forward(x).numpy()  # trace and warm up
    rounds = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            forward(x).numpy()
        rounds.append(((time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls))
    return min(rounds)


def main(argv):
    del argv
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    print(f"TensorFlow threads: {FLAGS.threads or 'default'}")
    print(f"| dtype | wall ms / batch of {FLAGS.batch_size} | CPU ms | GFLOP/s per CPU-s |")
    print("|---|---|---|---|")
    for dtype in FLAGS.dtypes:
        wall, cpu = forward_seconds(dtype, FLAGS.batch_size, FLAGS.calls, FLAGS.repeats)
        rate = 2 * MACS * FLAGS.batch_size / cpu / 1e9
        print(f"| {dtype} | {1e3 * wall:.1f} | {1e3 * cpu:.1f} | {rate:.0f} |")


if __name__ == "__main__":
    flags.DEFINE_integer("batch_size", 500, "Images per forward pass.")
    flags.DEFINE_integer("calls", 20, "Forward passes per round.")
    flags.DEFINE_integer("repeats", 5, "Rounds; the best is reported.")
    flags.DEFINE_integer("threads", 0, "TensorFlow's intra- and inter-op threads; 0: default.")
    flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes of the model.")
    app.run(main)
