import functools
import os
import pathlib
import re
import shutil
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# trainers.evaluate caches finished chunks; the tests' (and their subprocesses') go here.
os.environ["KERAS_LFR_CACHE_DIR"] = tempfile.mkdtemp(prefix="keras_lfr_tests_")

# keras_lfr before Keras: it imports TensorFlow with its start-up log at that level.
import keras_lfr  # noqa: E402, I001
import keras  # noqa: E402, I001
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
# Scripts the tests run in subprocesses (not tests themselves).
HELPERS = pathlib.Path(__file__).resolve().parent / "helpers"

# Data from outside the repository. MNIST and Fashion-MNIST come through tfds:
# from TFDS_DATA_DIR when it is set (CI: a prepared copy, no network), else
# downloaded on first use; a test that fails because its dataset is neither
# prepared nor downloadable is reported as skipped, naming TFDS_DATA_DIR
# (`pytest_runtest_makereport`). The LFR authors' released MNIST model cannot
# ship with the package (their repository has no license): the tests that use
# it read it from KERAS_LFR_REFERENCE_WEIGHTS and are skipped without it.
REFERENCE_WEIGHTS = os.environ.get("KERAS_LFR_REFERENCE_WEIGHTS")
needs_reference_weights = pytest.mark.skipif(
    not (REFERENCE_WEIGHTS and os.path.exists(REFERENCE_WEIGHTS)),
    reason="set KERAS_LFR_REFERENCE_WEIGHTS to the LFR authors' released model "
    "(lfr_official_mnist_smallcnn.npz) to run this test",
)


# The files that take minutes (training, helper processes, attack traces),
# slowest first: per-file totals of `pytest --durations=0` on 2 cores,
# 2026-12-01. With `--no-loadscope-reorder` pytest-xdist hands files to its
# workers in collection order, so both workers start on these and end
# together on the short files (longest first), instead of one finishing a
# long file alone (xdist's own order, most tests first, leaves one worker
# idle for about a minute when those totals are scheduled in it).
SLOWEST_FILES = (
    "tests/keras_lfr/methods/test_methods.py",
    "tests/trainers/test_reproduce.py",
    "tests/keras_lfr/test_backends.py",
    "tests/keras_lfr/test_distributed.py",
    "tests/benchmarks/test_benchmarks.py",
    "tests/keras_lfr/attacks/test_attacks.py",
    "tests/keras_lfr/test_cross_backend_steps.py",
    "tests/trainers/test_runs.py",
    "tests/trainers/test_evaluate.py",
    "tests/trainers/test_train.py",
    "tests/keras_lfr/test_evaluation.py",
    "tests/keras_lfr/test_mixed_precision.py",
    "tests/trainers/test_cli.py",
    "tests/keras_lfr/test_zoo.py",
    "tests/keras_lfr/test_zoo_reattacked.py",
    "tests/trainers/test_packaging.py",
)


# What `keras_lfr.data` (and a program's one-line error) says when a dataset
# cannot be loaded.
MISSING_DATASET = re.compile(r"Could not load dataset '(\w+)'")


@functools.cache
def dataset_available(name):
    """Whether tfds can load `name`: prepared under TFDS_DATA_DIR (or its default), or online."""
    return keras_lfr.data.available(name)


def missing_dataset_reason(name):
    where = os.environ.get("TFDS_DATA_DIR")
    where = f"TFDS_DATA_DIR={where}" if where else "~/tensorflow_datasets (TFDS_DATA_DIR is unset)"
    return (
        f"dataset {name!r} is neither prepared under {where} nor downloadable (no network): "
        "set TFDS_DATA_DIR to a prepared tfds directory to run this test"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Reports a test that failed for want of its dataset as skipped, naming TFDS_DATA_DIR.

    Only when the error says a dataset could not be loaded (in the test's
    process or a program it ran) and that dataset is indeed neither prepared
    nor downloadable: with the data there, the same error is a failure.
    """
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.excinfo is None:
        return
    match = MISSING_DATASET.search(report.longreprtext)
    if match and not dataset_available(match.group(1)):
        report.outcome = "skipped"
        report.longrepr = (
            str(item.path),
            item.location[1],
            f"Skipped: {missing_dataset_reason(match.group(1))}",
        )


def pytest_collection_modifyitems(items):
    """Puts the tests of `SLOWEST_FILES` first, in that order; the rest keep theirs."""
    missing = [path for path in SLOWEST_FILES if not (REPO / path).is_file()]
    if missing:
        raise pytest.UsageError(f"conftest.SLOWEST_FILES names files that do not exist: {missing}")
    rank = {path: i for i, path in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.relative_to(REPO).as_posix(), len(rank)))


def console_script(name):
    """The path of an installed console script: beside this interpreter, else on PATH."""
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])
    found = shutil.which(name, path=path)
    assert found, f"{name} is not installed: run `pip install -e .` first."
    return found


def tiny_model(input_shape=(8, 8, 1), num_classes=10, seed=0, activation="relu"):
    """A small CNN with non-zero weights everywhere (no BN, no dropout)."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(4, 3, activation=activation),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation=activation),
            keras.layers.Dense(num_classes),
        ],
        name="tiny",
    )


def tiny_batch(batch=8, shape=(8, 8, 1), num_classes=10, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(batch, *shape)).astype("float32")
    y = rng.integers(0, num_classes, size=batch).astype("int32")
    return x, y


@pytest.fixture
def tiny():
    return tiny_model()


@pytest.fixture
def batch():
    return tiny_batch()


def learnable_data(n=128, seed=0):
    """8×8 images whose label (0–3) is the bright row band: easy to learn."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 4, size=n).astype("int32")
    x = rng.uniform(0, 0.3, size=(n, 8, 8, 1)).astype("float32")
    for i, label in enumerate(y):
        x[i, 2 * label : 2 * label + 2] += 0.6
    return x, y


@pytest.fixture(scope="session")
def undefended():
    """A SmallCNN trained normally for 2 epochs on 4,096 MNIST images, and 128 test images."""
    keras.utils.set_random_seed(0)
    cnn = keras_lfr.models.small_cnn(dropout=0.0)
    cnn.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    train = keras_lfr.data.load("mnist", "train", batch_size=64, num_examples=4096)
    cnn.fit(train, epochs=2, verbose=0)
    test = keras_lfr.data.load("mnist", "test", batch_size=128, num_examples=128)
    x, y = next(iter(test))
    return cnn, x, y.numpy()
