r"""Times the input pipeline of `keras_lfr.data.load` (batches and examples per second).

Iterates the train split as `fit` would, after one untimed warm-up epoch, in
the two forms keras_lfr uses: reshuffled epochs (the default dataset, iterated
once per epoch) and the resumable stream of `trainers.train` (a stateless
permutation per epoch). The one-off loading of the split into memory is not
timed. Compare the figures with `benchmarks.train_step`: the pipeline is not
the bottleneck when it delivers batches faster than the fastest step uses them.

    python -m benchmarks.data_pipeline --dataset=mnist --batch_size=128 --epochs=3
"""

import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import keras_lfr  # noqa: E402

FLAGS = flags.FLAGS


def seconds_per_epoch(batches, batches_per_epoch):
    """Wall time of each consecutive block of `batches_per_epoch` batches of an iterator."""
    times = []
    start = time.perf_counter()
    for i, (images, _) in enumerate(batches, start=1):
        images.numpy()  # wait for the batch itself, not only its handle
        if i % batches_per_epoch == 0:
            times.append(time.perf_counter() - start)
            start = time.perf_counter()
    return times


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    epochs = 1 + FLAGS.epochs
    default = keras_lfr.data.load(FLAGS.dataset, "train", batch_size=FLAGS.batch_size)
    stream = keras_lfr.data.load(FLAGS.dataset, "train", batch_size=FLAGS.batch_size, epochs=epochs)
    per_epoch = int(default.cardinality())
    pipelines = {
        "reshuffled epochs (default)": (batch for _ in range(epochs) for batch in default),
        "resumable stream (trainers.train)": iter(stream),
    }
    print(
        f"{FLAGS.dataset} train: {per_epoch} batches of {FLAGS.batch_size} per epoch, "
        f"median of {FLAGS.epochs} epochs after 1 warm-up\n"
    )
    print("| pipeline | s / epoch | batches / s | examples / s |\n|---|---|---|---|")
    for name, batches in pipelines.items():
        seconds = float(np.median(seconds_per_epoch(batches, per_epoch)[1:]))
        rate = per_epoch / seconds
        print(f"| {name} | {seconds:.2f} | {rate:.0f} | {rate * FLAGS.batch_size:.0f} |")


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_string("dataset", "mnist", "A dataset of `keras_lfr.data.DATASETS`.")
    flags.DEFINE_integer("batch_size", 128, "Examples per batch.")
    flags.DEFINE_integer("epochs", 3, "Timed epochs (after one warm-up epoch).")


if __name__ == "__main__":
    define_flags()
    app.run(main)
