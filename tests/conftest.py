import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
REFERENCE_WEIGHTS = SHARED / "reference" / "lfr_official_mnist_smallcnn.npz"

# Tests never download: use the prepared tfds directory beside the checkout.
os.environ.setdefault("TFDS_DATA_DIR", str(SHARED / "tensorflow_datasets"))


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
