"""Dataset loaders: float32 NHWC images in [0, 1] and integer labels.

By default the data comes from tensorflow-datasets (tfds), which needs
TensorFlow (`pip install "keras_lfr[tensorflow]"`). tfds reads from
`$TFDS_DATA_DIR` (default `~/tensorflow_datasets`) and downloads a dataset on
first use. Offline, point `TFDS_DATA_DIR` (or the `data_dir` argument) at a
directory with the prepared dataset and pass `download=False`. `require`
checks, without loading anything, that a dataset is prepared or can be
downloaded, and fails at once naming `TFDS_DATA_DIR` when it is neither;
`available` says the same as a boolean.

With `data_npz`, the data comes instead from an `.npz` file in the format of
`keras.datasets` (`x_train`, `y_train`, `x_test`, `y_test`: uint8 images and
integer labels, e.g. `keras.datasets.mnist`'s `mnist.npz`), without
TensorFlow or a network: the way to load data on the JAX backend where
TensorFlow is not installed.
"""

import contextlib
import dataclasses
import functools
import logging
import math
import os
import re
import socket

import keras
import numpy as np

from keras_lfr import _optional
from keras_lfr.threat import ThreatModel


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset."""

    name: str
    image_shape: tuple
    num_classes: int
    # The standard l-inf radius on pixels in [0, 1] (`keras_lfr.ThreatModel.of_dataset`).
    epsilon: float
    # Images in the tfds "train" split.
    train_size: int


DATASETS = {
    name: DatasetInfo(name, shape, 10, ThreatModel.of_dataset(name).epsilon, size)
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


def _tfds():
    """The `tensorflow_datasets` module, or an `ImportError` naming the extra that installs it."""
    return _optional.tensorflow_module(
        "tensorflow_datasets", "Loading a dataset with tfds (without `data_npz`)"
    )


def require(name, data_dir=None, download=True, data_npz=None):
    """Checks, without loading it, that `load` can load a dataset: prepared, or downloadable.

    Args:
        name: A dataset of `DATASETS`.
        data_dir: tfds data directory; `None` uses `$TFDS_DATA_DIR` or
            `~/tensorflow_datasets`. Defaults to `None`.
        download: Whether `load` may download the data. Defaults to `True`.
        data_npz: An `.npz` file to load instead of tfds (see `load`).
            Defaults to `None` (tfds).

    Raises:
        ValueError: If the dataset is unknown, if `data_npz` is not a
            readable `.npz` with the four arrays, or if the dataset is not
            prepared and either `download` is `False` or there is no network
            connection (the message names `TFDS_DATA_DIR`).
        ImportError: If tfds is to load the data and tensorflow-datasets is
            not installed.
    """
    info = dataset_info(name)
    if data_npz is not None:
        _npz_arrays(data_npz)
        return
    tfds = _tfds()
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


def available(name, data_dir=None, download=True, data_npz=None):
    """Whether `load` can load a dataset (see `require`): `True` or `False`."""
    try:
        require(name, data_dir, download, data_npz)
    except (ValueError, ImportError):
        return False
    return True


# The arrays of an `.npz` in `keras.datasets`' format.
NPZ_ARRAYS = ("x_train", "y_train", "x_test", "y_test")


@functools.lru_cache(maxsize=2)
def _read_npz(path, modified):
    """The arrays of `NPZ_ARRAYS` that an `.npz` holds (cached per path and modification time)."""
    del modified  # part of the cache key only
    with np.load(path) as arrays:
        return {key: arrays[key] for key in NPZ_ARRAYS if key in arrays.files}


def _npz_arrays(path):
    """The four arrays of the `.npz` at `path`.

    Raises:
        ValueError: Naming `data_npz`, if the file cannot be read or lacks
            one of `NPZ_ARRAYS`.
    """
    path = os.path.abspath(os.fspath(path))
    try:
        arrays = _read_npz(path, os.path.getmtime(path))
    except (OSError, EOFError, ValueError) as error:
        raise ValueError(
            f"Invalid value for argument `data_npz`. Received: data_npz={path!r} ({error}). "
            f"Expected a readable .npz in keras.datasets' format with {list(NPZ_ARRAYS)}."
        ) from error
    missing = [key for key in NPZ_ARRAYS if key not in arrays]
    if missing:
        raise ValueError(
            f"Invalid value for argument `data_npz`. Received: data_npz={path!r}, without the "
            f"arrays {missing}. Expected an .npz in keras.datasets' format with "
            f"{list(NPZ_ARRAYS)}."
        )
    return arrays


# A split `load` reads from an `.npz`: "train" or "test", optionally sliced by
# image index as tfds slices, e.g. "train[:1000]", "test[-500:]".
_NPZ_SPLIT = re.compile(r"(train|test)(?:\[(-?\d*):(-?\d*)\])?")


def _npz_split(info, path, split):
    """The uint8 images `(n, *image_shape)` and int32 labels of a split of an `.npz`."""
    found = _NPZ_SPLIT.fullmatch(split)
    if found is None:
        raise ValueError(
            f'Invalid value for argument `split`. Received: split={split!r}. Expected "train" '
            'or "test", optionally sliced by index like "train[:1000]" or "test[-500:]", with '
            "`data_npz`."
        )
    base, start, stop = found.groups()
    arrays = _npz_arrays(path)
    images, labels = arrays[f"x_{base}"], arrays[f"y_{base}"].reshape(-1)
    shape = (len(labels), *info.image_shape)
    if images.dtype != np.uint8 or images.size != math.prod(shape):
        raise ValueError(
            f"Invalid value for argument `data_npz`. Received: data_npz={path!r}, whose "
            f"x_{base} is {images.dtype} of shape {images.shape} for {len(labels)} labels. "
            f"Expected uint8 images of shape {info.image_shape} (or without the channel axis) "
            f"for dataset {info.name!r}."
        )
    chosen = slice(int(start) if start else None, int(stop) if stop else None)
    return images.reshape(shape)[chosen], labels.astype("int32")[chosen]


class ArrayBatches(keras.utils.PyDataset):
    """`load`'s batches of an `.npz`: float32 images in [0, 1] and int32 labels, by index.

    Like `load`'s `tf.data.Dataset`: one pass over the images (reshuffled at
    each pass when `shuffle`), or with `epochs` the stream of epochs
    `initial_epoch` … `epochs − 1` back to back, epoch e permuted by
    `(seed, e)`. Its length is its number of batches.

    Args:
        images: uint8 images `(n, H, W, C)`.
        labels: int32 labels `(n,)`.
        batch_size: Examples per batch.
        shuffle: Permute the images of each pass or epoch.
        seed: Permutation seed.
        drop_remainder: Drop the last incomplete batch of each pass.
        epochs: Number of epochs of a resumable stream, or `None` for one
            pass.
        initial_epoch: First epoch of the stream.
    """

    def __init__(
        self, images, labels, batch_size, shuffle, seed, drop_remainder, epochs, initial_epoch
    ):
        super().__init__()
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        count = len(labels)
        self.per_epoch = count // batch_size if drop_remainder else math.ceil(count / batch_size)
        self.epochs, self.first = epochs, initial_epoch
        self.passes = 0  # passes begun over the one-pass data (each reshuffled)
        self._order = (None, None)

    def __len__(self):
        if self.epochs is None:
            return self.per_epoch
        return self.per_epoch * max(self.epochs - self.first, 0)

    def _permutation(self, epoch):
        if self._order[0] != epoch:
            count = len(self.labels)
            order = np.arange(count)
            if self.shuffle:
                order = np.random.default_rng([self.seed, epoch]).permutation(count)
            self._order = (epoch, order)
        return self._order[1]

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} of {len(self)}")
        if self.epochs is None:
            epoch, step = self.passes, index
        else:
            epoch, step = self.first + index // self.per_epoch, index % self.per_epoch
        chosen = self._permutation(epoch)[step * self.batch_size : (step + 1) * self.batch_size]
        return self.images[chosen].astype("float32") / 255.0, self.labels[chosen]

    def __iter__(self):
        for index in range(len(self)):
            yield self[index]
        self.on_epoch_end()

    def on_epoch_end(self):
        if self.epochs is None:
            self.passes += 1


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
    data_npz=None,
):
    """Loads an image-classification split as batches: tfds's, or an `.npz`'s.

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
        data_npz: An `.npz` in `keras.datasets`' format (`x_train`,
            `y_train`, `x_test`, `y_test`) to read the split from instead of
            tfds, with neither TensorFlow nor a network; `split` is then
            `"train"` or `"test"`, optionally sliced by index (e.g.
            `"test[:500]"`), and `data_dir` and `download` are not used. Its
            image order is the file's, not tfds'. Defaults to `None` (tfds).

    Returns:
        Batches of `(images, labels)`: float32 `(batch, H, W, C)` in [0, 1]
        and int32 `(batch,)`; `len()` gives their number. From tfds a
        `tf.data.Dataset`, from `data_npz` an `ArrayBatches`
        (a `keras.utils.PyDataset` of numpy arrays). The split is held in
        memory as uint8 and batches are gathered by index; shuffling is a
        full permutation of the split.

    Raises:
        ValueError: If the dataset is unknown, an argument is invalid, or the
            data is neither prepared nor downloadable (`require`).
        ImportError: If tfds is to load the data (no `data_npz`) and
            tensorflow-datasets is not installed.

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
    if shuffle is None:
        shuffle = split.startswith("train")
    if data_npz is not None:
        images, labels = _npz_split(info, data_npz, split)
        return ArrayBatches(
            images, labels, batch_size, shuffle, seed, drop_remainder, epochs, initial_epoch
        )
    require(info.name, data_dir, download)
    tfds = _tfds()
    import tensorflow as tf  # installed with tensorflow-datasets' extra

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
