"""tensorflow-datasets loaders: float32 NHWC images in [0, 1] and integer labels.

tfds reads from `$TFDS_DATA_DIR` (default `~/tensorflow_datasets`) and
downloads a dataset on first use. Offline, point `TFDS_DATA_DIR` (or the
`data_dir` argument) at a directory with the prepared dataset and pass
`download=False`.
"""

import dataclasses

import tensorflow as tf
import tensorflow_datasets as tfds


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know about a dataset."""

    name: str
    image_shape: tuple
    num_classes: int


DATASETS = {
    "mnist": DatasetInfo("mnist", (28, 28, 1), 10),
    "fashion_mnist": DatasetInfo("fashion_mnist", (28, 28, 1), 10),
    "cifar10": DatasetInfo("cifar10", (32, 32, 3), 10),
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


def _to_float(example):
    image = tf.cast(example["image"], tf.float32) / 255.0
    return image, tf.cast(example["label"], tf.int32)


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
):
    """Loads a tfds image-classification split as a batched `tf.data.Dataset`.

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

    Returns:
        A dataset of `(images, labels)`: float32 `(batch, H, W, C)` in
        [0, 1] and int32 `(batch,)`. It is cached in memory after decoding
        and prefetched.

    Raises:
        ValueError: If the dataset is unknown, an argument is invalid, or the
            data is missing and `download=False`.

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
    try:
        ds = tfds.load(
            info.name,
            split=split,
            data_dir=data_dir,
            download=download,
            shuffle_files=False,
        )
    except (AssertionError, FileNotFoundError, tfds.core.DatasetNotFoundError) as error:
        raise ValueError(
            f"Could not load dataset {info.name!r} (split {split!r}) from "
            f"data_dir={data_dir!r} with download={download}: {error}. Set "
            "`TFDS_DATA_DIR` or `data_dir` to a directory that holds the prepared "
            "dataset, or allow downloading."
        ) from error
    ds = ds.map(_to_float, num_parallel_calls=tf.data.AUTOTUNE).cache()
    if shuffle is None:
        shuffle = split.startswith("train")
    if shuffle:
        ds = ds.shuffle(10_000, seed=seed, reshuffle_each_iteration=True)
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)
