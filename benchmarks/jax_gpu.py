r"""The GPU check: the train step on Keras' JAX backend, timed, then the paper's LFR setting.

Needs JAX and keras, not TensorFlow. From the repository root, on a machine
with a GPU (`benchmarks/device_run.sh` runs it on the borrowed H200):

    KERAS_BACKEND=jax python -m benchmarks.jax_gpu --data=mnist.npz --out=jax_gpu.json

1. Times one jitted train step (ms per batch: the median of `--repeats`
   after 2 warm-up steps) of standard training, PGD-AT and LFR at each K and
   dtype policy, at batch 128, with the LFR / PGD-AT ratio; and, in float32,
   a hand-written PGD-AT gradient step in plain JAX (`plain_pgd_at_ms`), the
   floor keras_lfr's step should come close to.
2. Trains LFR in the paper's MNIST setting (SmallCNN, ε = 0.3, K = 40 steps
   of 0.01, λ = 0.02, SGD 0.01 with momentum 0.9, batch 128, float32) for
   `--epochs` epochs on the 60,000 training images, and reports the seconds
   per epoch, the projected time of the paper's 100 epochs, the clean test
   accuracy and PGD-40 accuracy (ε = 0.3, step 0.01) on the first
   `--examples` test images.
3. Times the steps again at the larger batch sizes of `--big_batch_sizes`.

Results are printed and rewritten to `--out` (JSON) after every row, so a
run stopped by a time limit keeps what it measured. `--data` is an npz in
`keras.datasets`' format, `x_train`, `y_train`, `x_test`, `y_test` (uint8
images, as in `../shared/device/mnist.npz`), read as
`keras_lfr.data.load(..., data_npz=...)` reads it.
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
    """The npz's first `train_examples` training images (all for 0) and its test images.

    As float32 arrays in [0, 1] and int32 labels: `x_train, y_train, x_test,
    y_test`, read by `keras_lfr.data.load(..., data_npz=path)`.
    """

    def arrays(split):
        every = keras_lfr.data.dataset_info("mnist").train_size  # one batch: the whole split
        batches = keras_lfr.data.load(
            "mnist", split, batch_size=every, shuffle=False, data_npz=path
        )
        return next(iter(batches))

    train = f"train[:{train_examples}]" if train_examples else "train"
    return (*arrays(train), *arrays("test"))


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


def train_paper_lfr(data, epochs, examples, steps=40):
    """The paper's LFR setting for `epochs` epochs; returns times and accuracies.

    `steps` (K) other than the paper's 40 is for the CPU mode's tiny runs.
    """
    x_train, y_train, x_test, y_test = data
    keras.utils.set_random_seed(0)
    # The paper's defaults: ε 0.3, step 0.01, λ 0.02.
    model = keras_lfr.wrap(keras_lfr.models.small_cnn(), method="lfr", steps=steps)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), metrics=["accuracy"])
    epoch_times = []

    class Timer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            epoch_times.append(time.perf_counter() - self.start)

    history = model.fit(
        x_train, y_train, batch_size=128, epochs=epochs, verbose=2, callbacks=[Timer()]
    )
    classifier = model.unwrap()
    logits = classifier.predict(x_test, batch_size=1000, verbose=0)
    clean = float(np.mean(np.argmax(logits, 1) == y_test))
    x, y = x_test[:examples], y_test[:examples]
    correct = 0
    for start in range(0, len(x), 500):
        xs, ys = x[start : start + 500], y[start : start + 500]
        x_adv = keras_lfr.attacks.pgd(classifier, xs, ys, epsilon=0.3, step_size=0.01, steps=40)
        correct += int(np.sum(np.argmax(classifier.predict(x_adv, verbose=0), 1) == ys))
    # The first epoch includes compiling the step.
    per_epoch = epoch_times[-1] if len(epoch_times) > 1 else epoch_times[0]
    return {
        "setting": f"paper LFR: K={steps} of 0.01, lambda 0.02, SGD 0.01 momentum 0.9, batch 128",
        "epochs": epochs,
        "seconds_per_epoch": epoch_times,
        "projected_100_epochs_minutes": round(100 * per_epoch / 60, 1),
        "final_loss": float(history.history["loss"][-1]),
        "clean_accuracy": clean,
        "pgd40_accuracy": correct / len(x),
        "pgd40_examples": len(x),
    }


def time_steps(result, batch_size, save):
    """Appends the step timings at `batch_size` to `result["steps"]`."""
    for dtype in FLAGS.dtypes:
        ms = {}
        for steps in FLAGS.steps:
            for method in FLAGS.methods:
                if method == "standard" and ("standard", dtype) in ms:
                    continue
                key = ("standard", dtype) if method == "standard" else (method, steps)
                ms[key] = step_ms(method, int(steps), dtype, batch_size, FLAGS.repeats)
                row = {"method": method, "K": None if method == "standard" else int(steps)}
                row.update(dtype=dtype, batch=batch_size, ms=round(ms[key], 2))
                if method == "lfr" and ("pgd_at", steps) in ms:
                    row["lfr_over_pgd_at"] = round(ms[key] / ms[("pgd_at", steps)], 2)
                print(row, flush=True)
                result["steps"].append(row)
                save()
            if dtype == "float32" and FLAGS.plain:
                row = {"method": "pgd_at (plain JAX)", "K": int(steps), "dtype": dtype}
                ms_plain = plain_pgd_at_ms(int(steps), batch_size, FLAGS.repeats)
                row.update(batch=batch_size, ms=round(ms_plain, 2))
                print(row, flush=True)
                result["steps"].append(row)
                save()


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
    print(result, flush=True)

    def save():
        if FLAGS.out:
            os.makedirs(os.path.dirname(os.path.abspath(FLAGS.out)), exist_ok=True)
            with open(FLAGS.out, "w") as f:
                json.dump(result, f, indent=1)

    time_steps(result, 128, save)
    if FLAGS.epochs:
        data = load(FLAGS.data, FLAGS.train_examples)
        row = train_paper_lfr(data, FLAGS.epochs, FLAGS.examples, FLAGS.train_steps)
        print(row, flush=True)
        result["training"].append(row)
        save()
    for batch_size in FLAGS.big_batch_sizes:
        time_steps(result, int(batch_size), save)


if __name__ == "__main__":
    flags.DEFINE_string("data", None, "npz with x_train, y_train, x_test, y_test (uint8 MNIST).")
    flags.DEFINE_string("out", None, "JSON file for the results.")
    flags.DEFINE_list("methods", ["standard", "pgd_at", "lfr"], "Methods whose step is timed.")
    flags.DEFINE_list("steps", ["5", "40"], "Inner steps K of the timed steps.")
    flags.DEFINE_list("dtypes", ["float32", "mixed_bfloat16"], "Dtype policies of the timed steps.")
    flags.DEFINE_list("big_batch_sizes", ["1024"], "Larger batch sizes, timed last.")
    flags.DEFINE_integer("repeats", 20, "Timed steps per configuration.")
    flags.DEFINE_bool("plain", True, "Also time the hand-written plain-JAX PGD-AT step.")
    flags.DEFINE_integer("epochs", 1, "Epochs of the paper's LFR setting (0: no training).")
    flags.DEFINE_integer("train_examples", 0, "Use only this many training images (0: all).")
    flags.DEFINE_integer("train_steps", 40, "Inner steps K of the training (the paper's: 40).")
    flags.DEFINE_integer("examples", 1000, "Test images of the PGD-40 evaluation.")
    app.run(main)
