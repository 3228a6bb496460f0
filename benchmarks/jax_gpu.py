r"""The GPU check: the train step on Keras' JAX backend, timed, then a short robust training.

Needs JAX and keras, not TensorFlow. From the repository root, on a machine
with a GPU (`benchmarks/device_run.sh` runs it on the borrowed H200):

    KERAS_BACKEND=jax python -m benchmarks.jax_gpu --data=mnist.npz --out=jax_gpu.json

1. Times one jitted train step (ms per batch: the median of `--repeats`
   after 2 warm-up steps) of each method at each K, dtype policy and batch
   size, as `benchmarks.train_step` does on TensorFlow; and, in float32, a
   hand-written PGD-AT gradient step in plain JAX (`plain_pgd_at_ms`), the
   floor keras_lfr's step should come close to.
2. Trains each method with the fast recipe's settings (Adam 1e-3 with a
   1-epoch warm-up and cosine decay, K = 5 steps of ε/3, ε ramped over the
   first quarter of the epochs, bfloat16) for `--epochs` epochs on MNIST's
   60,000 training images, and reports the wall time per epoch, the clean
   accuracy on the test set and PGD-40 (ε = 0.3, step 0.01) accuracy on the
   first `--examples` test images.

Everything is printed and written as JSON to `--out`. `--data` is an npz
with `x_train`, `y_train`, `x_test`, `y_test` (uint8 images, as in
`../shared/device/mnist.npz`).
"""

import json
import os
import platform
import time

import keras
import numpy as np
from absl import app, flags

import keras_lfr

FLAGS = flags.FLAGS


def load(path, train_examples):
    data = np.load(path)
    scale = lambda images: images.astype("float32")[..., :28, :28].reshape(-1, 28, 28, 1) / 255.0  # noqa: E731
    x_train, y_train = scale(data["x_train"]), data["y_train"].astype("int32")
    if train_examples:
        x_train, y_train = x_train[:train_examples], y_train[:train_examples]
    return x_train, y_train, scale(data["x_test"]), data["y_test"].astype("int32")


def step_ms(method, steps, dtype, batch_size, repeats):
    """Median ms of one jitted `train_on_batch` on random MNIST-shaped data."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(batch_size, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, batch_size).astype("int32")
    cnn = keras_lfr.models.small_cnn(dtype=None if dtype == "float32" else dtype)
    hyperparameters = {} if method == "standard" else {"steps": steps}
    model = keras_lfr.wrap(cnn, method=method, **hyperparameters)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=True)
    for _ in range(2):
        model.train_on_batch(x, y)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        logs = model.train_on_batch(x, y, return_dict=True)
        float(logs["loss"])  # waits for the device
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def plain_pgd_at_ms(steps, batch_size, repeats):
    """Median ms of a hand-written PGD-AT gradient step: nested `jax.grad` through `stateless_call`.

    The same SmallCNN, K sign steps of 0.1 at ε = 0.3 and the weight
    gradient, without keras_lfr or the optimizer update: the floor that
    keras_lfr's step should come close to.
    """
    import jax
    import jax.numpy as jnp

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(size=(batch_size, 28, 28, 1)).astype("float32"))
    y = jnp.asarray(rng.integers(0, 10, batch_size).astype("int32"))
    cnn = keras_lfr.models.small_cnn()
    trainable = [v.value for v in cnn.trainable_variables]
    non_trainable = [v.value for v in cnn.non_trainable_variables]

    def loss(weights, images, training):
        logits, _ = cnn.stateless_call(weights, non_trainable, images, training=training)
        log_p = jax.nn.log_softmax(logits.astype("float32"))
        return -jnp.take_along_axis(log_p, y[:, None], 1).sum()

    @jax.jit
    def step(weights):
        def ascend(_, x_adv):
            gradient = jax.grad(loss, argnums=1)(weights, x_adv, False)
            return jnp.clip(jnp.clip(x_adv + 0.1 * jnp.sign(gradient), x - 0.3, x + 0.3), 0, 1)

        x_adv = jax.lax.stop_gradient(jax.lax.fori_loop(0, steps, ascend, x))
        return jax.grad(loss)(weights, x_adv, True)

    jax.block_until_ready(step(trainable))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(step(trainable))
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def train(method, data, epochs, batch_size, examples):
    """The fast recipe's settings for `epochs` epochs; returns times and accuracies."""
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(0)
    steps_per_epoch = len(x_train) // batch_size
    schedule = keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=max(1, (epochs - 1) * steps_per_epoch),
        warmup_target=1e-3,
        warmup_steps=steps_per_epoch,
    )
    model = keras_lfr.wrap(
        keras_lfr.models.small_cnn(dtype="mixed_bfloat16", dropout=0.0),
        method=method,
        epsilon=0.3,
        step_size=0.1,
        steps=5,
        epsilon_warmup=max(1, epochs * steps_per_epoch // 4),
    )
    model.compile(optimizer=keras.optimizers.Adam(schedule), metrics=["accuracy"])
    epoch_times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)

    history = model.fit(
        x_train, y_train, batch_size=batch_size, epochs=epochs, verbose=2, callbacks=[Timer()]
    )
    classifier = keras_lfr.models.small_cnn(dropout=0.0)
    classifier.set_weights(model.unwrap().get_weights())
    clean = np.mean(np.argmax(classifier.predict(x_test, batch_size=1000, verbose=0), 1) == y_test)
    x, y = x_test[:examples], y_test[:examples]
    correct = 0
    for start in range(0, len(x), 500):
        x_adv = keras_lfr.attacks.pgd(
            classifier,
            x[start : start + 500],
            y[start : start + 500],
            epsilon=0.3,
            step_size=0.01,
            steps=40,
        )
        correct += int(
            np.sum(np.argmax(classifier.predict(x_adv, verbose=0), 1) == y[start : start + 500])
        )
    return {
        "method": method,
        "epochs": epochs,
        "seconds_per_epoch": epoch_times,
        "final_loss": float(history.history["loss"][-1]),
        "clean_accuracy": float(clean),
        "pgd40_accuracy": correct / len(x),
        "pgd40_examples": len(x),
    }


def main(argv):
    del argv
    import jax

    result = {
        "backend": keras.backend.backend(),
        "devices": [str(d) for d in jax.devices()],
        "jax": jax.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "steps": [],
        "training": [],
    }
    print(result)
    for batch_size in FLAGS.batch_sizes:
        for dtype in FLAGS.dtypes:
            for steps in FLAGS.steps:
                for method in FLAGS.methods:
                    ms = step_ms(method, int(steps), dtype, int(batch_size), FLAGS.repeats)
                    row = {
                        "method": method,
                        "K": int(steps),
                        "dtype": dtype,
                        "batch": int(batch_size),
                        "ms": round(ms, 2),
                    }
                    print(row, flush=True)
                    result["steps"].append(row)
            if dtype == "float32":
                for steps in FLAGS.steps:
                    ms = plain_pgd_at_ms(int(steps), int(batch_size), FLAGS.repeats)
                    row = {"method": "pgd_at (plain JAX)", "K": int(steps), "dtype": dtype}
                    row.update(batch=int(batch_size), ms=round(ms, 2))
                    print(row, flush=True)
                    result["steps"].append(row)
    if FLAGS.epochs:
        data = load(FLAGS.data, FLAGS.train_examples)
        for method in FLAGS.train_methods:
            row = train(method, data, FLAGS.epochs, 128, FLAGS.examples)
            print(row, flush=True)
            result["training"].append(row)
    if FLAGS.out:
        os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
        with open(FLAGS.out, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    flags.DEFINE_string("data", None, "npz with x_train, y_train, x_test, y_test (uint8 MNIST).")
    flags.DEFINE_string("out", None, "JSON file for the results.")
    flags.DEFINE_list("methods", ["pgd_at", "lfr"], "Methods whose step is timed.")
    flags.DEFINE_list("steps", ["5", "10"], "Inner steps K of the timed steps.")
    flags.DEFINE_list("dtypes", ["float32", "mixed_bfloat16"], "Dtype policies of the timed steps.")
    flags.DEFINE_list("batch_sizes", ["128", "1024"], "Batch sizes of the timed steps.")
    flags.DEFINE_integer("repeats", 20, "Timed steps per configuration.")
    flags.DEFINE_list("train_methods", ["lfr", "pgd_at"], "Methods to train.")
    flags.DEFINE_integer("epochs", 3, "Training epochs per method (0: no training).")
    flags.DEFINE_integer("train_examples", 0, "Use only this many training images (0: all).")
    flags.DEFINE_integer("examples", 1000, "Test images of the PGD-40 evaluation.")
    app.run(main)
