r"""Where a step's time goes, in float32 and mixed bfloat16: its parts, and second derivatives.

1. The parts of a PGD-AT and an LFR train step on the SmallCNN (batch 128,
   K steps of 0.1 at ε = 0.3, graph mode): the whole inner maximisation, one
   of its gradients with respect to the input (PGD-AT: ∇ₓ CE; LFR: ∇ₓ‖∇ₓ CE‖₁,
   a gradient of a gradient), and the weight gradient of the loss.
2. First and second derivatives of the SmallCNN's elementwise layers alone
   (ReLU and 2×2 max pooling on its first feature map, 128×24×24×32), which
   LFR's double backprop runs and PGD-AT's single one does not.

    python -m benchmarks.step_parts --steps=5 --repeats=15

Prints two markdown tables of median ms.
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_lfr  # noqa: E402
from keras_lfr import backend, ops  # noqa: E402
from keras_lfr.methods.lfr import flatness  # noqa: E402

FLAGS = flags.FLAGS
DTYPES = ("float32", "mixed_bfloat16")


def median_ms(fn, repeats):
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        tf.nest.map_structure(lambda t: t.numpy(), fn())
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def part_functions(cnn, name, steps, x, y):
    """The three compiled parts of `name`'s step on `cnn`."""
    method = keras_lfr.methods.get_method(name, steps=steps, step_size=0.1)
    perturb = tf.function(lambda: method.perturb(cnn, x, y, ops.as_seed(0)))
    x_adv = perturb()
    if name == "pgd_at":
        objective = ops.attack_loss(cnn, y)
    else:
        objective = lambda z: flatness(cnn, z, y)  # noqa: E731
    one = tf.function(lambda: backend.value_and_gradient(lambda z: (objective(z), None), x)[1])
    loss = lambda: (method.loss(cnn, x, y, x_adv)[1], None)  # noqa: E731
    weights = tf.function(
        lambda: backend.value_and_weight_gradients(loss, cnn.trainable_variables)[0]
    )
    return perturb, one, weights


def step_parts(repeats, steps):
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(128, 28, 28, 1)).astype("float32"))
    y = tf.constant(rng.integers(0, 10, 128).astype("int32"))
    print("| dtype | method | inner max (K steps) | one input gradient | weight gradient |")
    print("|---|---|---|---|---|")
    for dtype in DTYPES:
        cnn = keras_lfr.models.small_cnn(dtype=None if dtype == "float32" else dtype)
        for name in ("pgd_at", "lfr"):
            times = [median_ms(f, repeats) for f in part_functions(cnn, name, steps, x, y)]
            print(f"| {dtype} | {name} | " + " | ".join(f"{t:.0f}" for t in times) + " |")


def derivatives(layer, a):
    """Compiled first and second derivatives of `layer` at `a`."""

    def first():
        with tf.GradientTape() as tape:
            tape.watch(a)
            value = tf.reduce_sum(tf.cast(layer(a), tf.float32) ** 2)
        return tape.gradient(value, a)

    def second():
        with tf.GradientTape() as tape:
            tape.watch(a)
            norm = tf.reduce_sum(tf.abs(tf.cast(first(), tf.float32)))
        return tape.gradient(norm, a)

    return tf.function(first), tf.function(second)


def elementwise(repeats):
    print("\n| dtype | ReLU grad | ReLU grad of grad | max pool grad | max pool grad of grad |")
    print("|---|---|---|---|---|")
    pool = lambda t: tf.nn.max_pool2d(t, 2, 2, "VALID")  # noqa: E731
    for dtype in (tf.float32, tf.bfloat16):
        a = tf.cast(tf.random.stateless_uniform((128, 24, 24, 32), [0, 0]), dtype)
        row = [median_ms(f, repeats) for layer in (tf.nn.relu, pool) for f in derivatives(layer, a)]
        print(f"| {dtype.name} | " + " | ".join(f"{t:.1f}" for t in row) + " |")


def main(argv):
    del argv
    step_parts(FLAGS.repeats, FLAGS.steps)
    elementwise(FLAGS.repeats)


if __name__ == "__main__":
    flags.DEFINE_integer("steps", 5, "Inner steps K.")
    flags.DEFINE_integer("repeats", 15, "Timed calls per figure.")
    app.run(main)
