r"""Times the train step of two keras_lfr versions side by side, in one process.

Timings of separate processes on a shared 2-core machine differ by ±10%, more
than the 5% a change of the step may cost; here both versions' steps run in
turn in the same process, so that they see the same machine. The other
version is a checkout of keras_lfr (e.g. `git worktree add /tmp/before REV`);
its package is copied under another name and imported beside this one.

    git worktree add --detach /tmp/before 5e3bfef
    python -m benchmarks.compare_versions --before=/tmp/before --repeats=20

Prints a markdown table: per method, K and dtype policy, the median ms per
batch of 128 (graph mode, SGD with momentum) before and after, and their ratio.
"""

import os
import re
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

import keras_lfr  # noqa: E402

FLAGS = flags.FLAGS


def import_renamed(checkout, name="keras_lfr_before"):
    """Imports `checkout`'s keras_lfr package as `name`."""
    root = tempfile.mkdtemp()
    target = os.path.join(root, name)
    shutil.copytree(os.path.join(checkout, "keras_lfr"), target)
    for folder, _, files in os.walk(target):
        for file in files:
            if file.endswith(".py"):
                path = os.path.join(folder, file)
                with open(path) as f:
                    text = f.read()
                with open(path, "w") as f:
                    f.write(re.sub(r"\bkeras_lfr\b", name, text))
    sys.path.insert(0, root)
    return importlib.import_module(name)


def main(argv):
    del argv
    before = import_renamed(FLAGS.before)
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(FLAGS.batch_size, 28, 28, 1)).astype("float32")
    y = rng.integers(0, 10, FLAGS.batch_size).astype("int32")
    print("| method | K | dtype | before (ms) | after (ms) | after / before |")
    print("|---|---|---|---|---|---|")
    for steps in FLAGS.steps:
        for dtype in FLAGS.dtypes:
            for method in FLAGS.methods:
                models = []
                for lib in (before, keras_lfr):
                    keras.utils.set_random_seed(0)
                    cnn = lib.models.small_cnn(dtype=None if dtype == "float32" else dtype)
                    model = lib.wrap(cnn, method=method, steps=int(steps))
                    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
                    for _ in range(2):
                        model.train_on_batch(x, y)
                    models.append(model)
                times = [[], []]
                for _ in range(FLAGS.repeats):
                    for model, column in zip(models, times, strict=True):
                        start = time.perf_counter()
                        model.train_on_batch(x, y)
                        column.append(time.perf_counter() - start)
                old, new = (1000 * float(np.median(column)) for column in times)
                print(
                    f"| {method} | {steps} | {dtype} | {old:.0f} | {new:.0f} | {new / old:.3f} |",
                    flush=True,
                )


if __name__ == "__main__":
    flags.DEFINE_string("before", None, "A checkout of the keras_lfr version to compare with.")
    flags.DEFINE_list("methods", ["pgd_at", "lfr"], "Methods to time.")
    flags.DEFINE_list("steps", ["5", "10"], "Inner steps K.")
    flags.DEFINE_list("dtypes", ["float32", "mixed_bfloat16"], "Dtype policies.")
    flags.DEFINE_integer("batch_size", 128, "Examples per batch.")
    flags.DEFINE_integer("repeats", 20, "Timed steps per version and configuration.")
    flags.mark_flag_as_required("before")
    app.run(main)
