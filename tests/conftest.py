import os
import pathlib
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# trainers.evaluate caches finished chunks; the tests' (and their subprocesses') go here.
os.environ["KERAS_LFR_CACHE_DIR"] = tempfile.mkdtemp(prefix="keras_lfr_tests_")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
# Scripts the tests run in subprocesses (not tests themselves).
HELPERS = pathlib.Path(__file__).resolve().parent / "helpers"

# Data from outside the repository. MNIST and Fashion-MNIST come through tfds:
# from TFDS_DATA_DIR when it is set (CI: a prepared copy, no network), else
# downloaded on first use. The LFR authors' released MNIST model cannot ship
# with the package (their repository has no license): the tests that use it
# read it from KERAS_LFR_REFERENCE_WEIGHTS and are skipped without it.
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
    "tests/trainers/test_runs.py",
    "tests/trainers/test_evaluate.py",
    "tests/trainers/test_train.py",
    "tests/keras_lfr/test_evaluation.py",
    "tests/trainers/test_cli.py",
    "tests/keras_lfr/test_zoo.py",
)


def pytest_collection_modifyitems(items):
    """Puts the tests of `SLOWEST_FILES` first, in that order; the rest keep theirs."""
    missing = [path for path in SLOWEST_FILES if not (REPO / path).is_file()]
    if missing:
        raise pytest.UsageError(f"conftest.SLOWEST_FILES names files that do not exist: {missing}")
    rank = {path: i for i, path in enumerate(SLOWEST_FILES)}
    items.sort(key=lambda item: rank.get(item.path.relative_to(REPO).as_posix(), len(rank)))


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
    import keras_lfr

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
