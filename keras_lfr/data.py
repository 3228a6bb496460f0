"""tensorflow-datasets loaders: float32 NHWC images in [0, 1] and integer labels.

tfds reads from `$TFDS_DATA_DIR` (default `~/tensorflow_datasets`) and
downloads a dataset on first use. Offline, point `TFDS_DATA_DIR` (or the
`data_dir` argument) at a directory with the prepared dataset and pass
`download=False`. `require` checks, without loading anything, that a dataset
is prepared or can be downloaded, and fails at once naming `TFDS_DATA_DIR`
when it is neither; `available` says the same as a boolean.
"""

import contextlib
import dataclasses
import logging
import os
import socket

import tensorflow as tf
import tensorflow_datasets as tfds

from keras_lfr import defaults


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset."""

    name: str
    image_shape: tuple
    num_classes: int
    # The standard l-inf radius on pixels in [0, 1] (`keras_lfr.defaults.EPSILON`).
    epsilon: float
    # Images in the tfds "train" split.
    train_size: int


DATASETS = {
    name: DatasetInfo(name, shape, 10, defaults.EPSILON[name], size)
    for name, shape, size in (
        ("mnist", (28, 28, 1), 60_000),
        ("fashion_mnist", (28, 28, 1), 60_000),
        ("cifar10", (32, 32, 3), 50_000),
    )
}


def dataset_info(name):
    """Returns the `DatasetInfo` of a supported dataset.

    Raises:
        ValueError: If `name` is not supported.
    """
    if name not in DATASETS:
        raise ValueError(
            f"Invalid value for argument `dataset`. Received: dataset={name!r}. "
            f"Expected one of {sorted(DATASETS)}. To add one, register a "
            "`DatasetInfo` in `keras_lfr.data.DATASETS` under its tfds name."
        )
    return DATASETS[name]


# Where tfds downloads MNIST from; reaching it means downloads can work.
DOWNLOAD_HOST = ("storage.googleapis.com", 443)


def _location(data_dir):
    """Where tfds looks for prepared data, in words."""
    if data_dir is not None:
        return f"data_dir={data_dir!r}"
    if os.environ.get("TFDS_DATA_DIR"):
        return f"TFDS_DATA_DIR={os.environ['TFDS_DATA_DIR']!r}"
    return "~/tensorflow_datasets (tfds' default: TFDS_DATA_DIR is not set)"


class _AbsentFolderFilter(logging.Filter):
    """Drops tfds' warnings about a dataset's version folder that does not exist at all."""

    def filter(self, record):
        if str(record.msg).startswith("Variant folder ") and record.args:
            return os.path.isdir(str(record.args[0]))
        return True


@contextlib.contextmanager
def _quiet_tfds():
    """tfds without its warning that a folder it looked for, and did not find, is incomplete."""
    logger, absent = logging.getLogger("absl"), _AbsentFolderFilter()
    logger.addFilter(absent)
    try:
        yield
    finally:
        logger.removeFilter(absent)


def _check_network(name, data_dir, timeout=5.0):
    """Fails at once, instead of after minutes of download retries, when offline."""
    try:
        socket.create_connection(DOWNLOAD_HOST, timeout=timeout).close()
    except OSError as error:
        raise ValueError(
            f"Could not load dataset {name!r}: it is not prepared under "
            f"{_location(data_dir)} and there is no network connection to download it "
            f"({error}). Set `TFDS_DATA_DIR` or `data_dir` to a directory that holds the "
            "prepared dataset."
        ) from error


def require(name, data_dir=None, download=True):
    """Checks, without loading it, that `load` can load a dataset: prepared, or downloadable.

    Args:
        name: A dataset of `DATASETS`.
        data_dir: tfds data directory; `None` uses `$TFDS_DATA_DIR` or
            `~/tensorflow_datasets`. Defaults to `None`.
        download: Whether `load` may download the data. Defaults to `True`.

    Raises:
        ValueError: If the dataset is unknown, or not prepared and either
            `download` is `False` or there is no network connection (the
            message names `TFDS_DATA_DIR`).
    """
    info = dataset_info(name)
    with _quiet_tfds():
        prepared = tfds.builder(info.name, data_dir=data_dir).is_prepared()
    if prepared:
        return
    if not download:
        raise ValueError(
            f"Could not load dataset {info.name!r}: it is not prepared under "
            f"{_location(data_dir)}, and download=False. Set `TFDS_DATA_DIR` or `data_dir` to "
            "a directory that holds the prepared dataset, or allow downloading."
        )
    _check_network(info.name, data_dir)


def available(name, data_dir=None, download=True):
    """Whether `load` can load a dataset (see `require`): `True` or `False`."""
    try:
        require(name, data_dir, download)
    except ValueError:
        return False
    return True


def load(
    name,
    split="train",
    *,
    batch_size=128,
    shuffle=None,
    num_examples=None,
    seed=0,
    data_dir=None,
    download=True,
    drop_remainder=False,
    epochs=None,
    initial_epoch=0,
):
    """Loads a tfds image-classification split as a batched `tf.data.Dataset`.

    By default the dataset is one epoch, reshuffled each time it is iterated.
    With `epochs`, it is instead the stream of epochs `initial_epoch` …
    `epochs − 1` back to back, epoch e shuffled with a seed derived from
    `(seed, e)`: epoch e has the same order whether or not training was
    interrupted and resumed at `initial_epoch` (use it with
    `fit(..., steps_per_epoch=...)`).

    Args:
        name: `"mnist"`, `"fashion_mnist"` or `"cifar10"`.
        split: A tfds split, e.g. `"train"` or `"test"`. Defaults to
            `"train"`.
        batch_size: Examples per batch. Defaults to `128`.
        shuffle: Reshuffle every epoch; `None` means only for `"train"`.
            Defaults to `None`.
        num_examples: Keep only the first N examples of the split (in tfds
            order), for quick runs. Defaults to `None` (all).
        seed: Shuffle seed. Defaults to `0`.
        data_dir: tfds data directory; `None` uses `$TFDS_DATA_DIR` or
            `~/tensorflow_datasets`. Defaults to `None`.
        download: Let tfds download and prepare the data if missing.
            Defaults to `True`.
        drop_remainder: Drop the last incomplete batch. Defaults to `False`.
        epochs: Number of epochs of a resumable stream, or `None` for one
            epoch. Defaults to `None`.
        initial_epoch: First epoch of the stream. Defaults to `0`.

    Returns:
        A dataset of `(images, labels)`: float32 `(batch, H, W, C)` in
        [0, 1] and int32 `(batch,)`. The split is held in memory as uint8 and
        batches are gathered by index and prefetched; shuffling is a full
        permutation of the split.

    Raises:
        ValueError: If the dataset is unknown, an argument is invalid, or the
            data is neither prepared nor downloadable (`require`).

    Example:

    >>> train = keras_lfr.data.load("mnist", "train", batch_size=128)
    >>> test = keras_lfr.data.load("mnist", "test", num_examples=1000)
    """
    info = dataset_info(name)
    for arg, value in (("batch_size", batch_size), ("num_examples", num_examples)):
        invalid = isinstance(value, bool) or not isinstance(value, int) or value < 1
        if value is not None and invalid:
            raise ValueError(
                f"Invalid value for argument `{arg}`. Received: {arg}={value!r}. "
                "Expected an integer >= 1."
            )
    if num_examples is not None:
        split = f"{split}[:{num_examples}]"
    require(info.name, data_dir, download)
    try:
        with _quiet_tfds():
            loaded = tfds.load(
                info.name,
                split=split,
                data_dir=data_dir,
                download=download,
                batch_size=-1,
                as_supervised=True,
                shuffle_files=False,
            )
        images, labels = tfds.as_numpy(loaded)
    except Exception as error:  # tfds raises many types (missing files, no network)
        raise ValueError(
            f"Could not load dataset {info.name!r} (split {split!r}) from "
            f"data_dir={data_dir!r} with download={download}: {error}. Set "
            "`TFDS_DATA_DIR` or `data_dir` to a directory that holds the prepared "
            "dataset, or allow downloading."
        ) from error
    # The split stays in memory as uint8 (MNIST: 47 MB); batches are gathered by
    # index, so shuffling permutes indices only.
    images, labels = tf.constant(images), tf.constant(labels.astype("int32"))
    count = int(labels.shape[0])

    def gather(indices):
        return tf.cast(tf.gather(images, indices), tf.float32) / 255.0, tf.gather(labels, indices)

    if shuffle is None:
        shuffle = split.startswith("train")
    if epochs is None:
        indices = tf.data.Dataset.range(count)
        if shuffle:
            indices = indices.shuffle(count, seed=seed, reshuffle_each_iteration=True)
        indices = indices.batch(batch_size, drop_remainder=drop_remainder)
    else:

        def one_epoch(epoch):
            epoch_indices = tf.data.Dataset.range(count).batch(
                batch_size, drop_remainder=drop_remainder
            )
            if shuffle:  # A stateless permutation of (seed, epoch), a batch of indices at a time.
                key = tf.stack([tf.constant(seed, tf.int64), epoch])
                epoch_indices = epoch_indices.map(
                    lambda i: tf.random.experimental.index_shuffle(i, key, count - 1)
                )
            return epoch_indices

        indices = tf.data.Dataset.range(initial_epoch, epochs).flat_map(one_epoch)
    return indices.map(gather, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
