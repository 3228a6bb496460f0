"""The loaders: tfds, from the prepared directory in shared/, and `.npz` files."""

import socket
import sys

import numpy as np
import pytest
import tensorflow as tf

import keras_lfr


@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_batches_are_float_images_and_integer_labels(name):
    ds = keras_lfr.data.load(name, "test", batch_size=100, num_examples=250)
    batches = list(ds)
    assert [len(x) for x, _ in batches] == [100, 100, 50]
    x, y = batches[0]
    assert x.dtype == "float32" and x.shape == (100, 28, 28, 1)
    assert y.dtype == "int32" and y.shape == (100,)
    images = np.concatenate([x for x, _ in batches])
    assert images.min() == 0.0 and images.max() == 1.0
    assert set(np.concatenate([y for _, y in batches]).tolist()) <= set(range(10))


def test_fashion_mnist_is_not_mnist_and_has_its_full_splits():
    fashion = keras_lfr.data.load("fashion_mnist", "test", batch_size=10000)
    mnist = keras_lfr.data.load("mnist", "test", batch_size=100, num_examples=100)
    x, y = next(iter(fashion))
    assert len(x) == 10000 and np.bincount(y.numpy()).tolist() == [1000] * 10
    assert not np.array_equal(x[:100], next(iter(mnist))[0])


def test_first_n_examples_are_the_same_without_shuffling():
    a = keras_lfr.data.load("mnist", "train", batch_size=64, num_examples=64, shuffle=False)
    b = keras_lfr.data.load("mnist", "train", batch_size=32, num_examples=64, shuffle=False)
    np.testing.assert_array_equal(next(iter(a))[1], np.concatenate([y for _, y in b]))


def test_training_split_is_reshuffled_each_epoch():
    ds = keras_lfr.data.load("mnist", "train", batch_size=128, num_examples=128)
    first, second = (next(iter(ds))[1].numpy() for _ in range(2))
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


def test_unknown_dataset_and_bad_arguments():
    with pytest.raises(ValueError, match="argument `dataset`. Received: dataset='imagenet'"):
        keras_lfr.data.load("imagenet")
    with pytest.raises(ValueError, match="argument `batch_size`"):
        keras_lfr.data.load("mnist", batch_size=0)
    with pytest.raises(ValueError, match="argument `num_examples`"):
        keras_lfr.data.load("mnist", num_examples=-5)


def test_missing_data_without_download_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="Could not load dataset 'fashion_mnist'"):
        keras_lfr.data.load("fashion_mnist", data_dir=str(tmp_path), download=False)


def test_resumable_stream_permutes_each_epoch_by_seed_and_epoch():
    count, batch, seed = 100, 32, 7
    load = dict(batch_size=batch, num_examples=count)
    plain = np.concatenate(
        [x for x, _ in keras_lfr.data.load("mnist", "train", shuffle=False, **load)]
    )
    stream = [
        x.numpy() for x, _ in keras_lfr.data.load("mnist", "train", seed=seed, epochs=3, **load)
    ]
    resumed = keras_lfr.data.load("mnist", "train", seed=seed, epochs=3, initial_epoch=1, **load)
    assert [len(x) for x in stream] == [32, 32, 32, 4] * 3
    for epoch in range(3):
        key = tf.constant([seed, epoch], tf.int64)
        order = [
            int(tf.random.experimental.index_shuffle(tf.constant(i, tf.int64), key, count - 1))
            for i in range(count)
        ]
        np.testing.assert_array_equal(
            np.concatenate(stream[4 * epoch : 4 * epoch + 4]), plain[order]
        )
    assert order != sorted(order)
    for got, want in zip(resumed, stream[4:], strict=True):
        np.testing.assert_array_equal(got[0], want)


def test_missing_data_offline_fails_at_once(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(socket, "create_connection", offline)
    with pytest.raises(ValueError, match="no network connection to download it"):
        keras_lfr.data.load("mnist", "test", data_dir=str(tmp_path), download=True)
    assert not any(tmp_path.iterdir())  # nothing was attempted


def write_npz(path, train=100, test=30, seed=0):
    """A dataset in keras.datasets' format: uint8 (n, 28, 28) images and integer labels."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, count in (("train", train), ("test", test)):
        arrays[f"x_{split}"] = rng.integers(0, 256, (count, 28, 28), dtype=np.uint8)
        arrays[f"y_{split}"] = rng.integers(0, 10, count).astype("uint8")
    np.savez(path, **arrays)
    return arrays


def test_an_npz_loads_in_batches_like_tfds_without_tfds(tmp_path, monkeypatch):
    arrays = write_npz(tmp_path / "mnist.npz")

    def no_tfds():
        raise AssertionError("tfds was used for data_npz")

    monkeypatch.setattr(keras_lfr.data, "_tfds", no_tfds)
    path = str(tmp_path / "mnist.npz")
    keras_lfr.data.require("mnist", data_npz=path)
    batches = keras_lfr.data.load("mnist", "test", batch_size=8, data_npz=path)
    assert len(batches) == 4 and [len(x) for x, _ in batches] == [8, 8, 8, 6]
    x, y = next(iter(batches))
    assert x.dtype == "float32" and x.shape == (8, 28, 28, 1) and y.dtype == "int32"
    np.testing.assert_array_equal(x[..., 0], arrays["x_test"][:8] / np.float32(255))
    np.testing.assert_array_equal(y, arrays["y_test"][:8])
    # tfds' slices by index, and num_examples.
    for split, num_examples, want in (
        ("test[-10:]", None, arrays["y_test"][-10:]),
        ("train[20:50]", None, arrays["y_train"][20:50]),
        ("train", 12, arrays["y_train"][:12]),
    ):
        loaded = keras_lfr.data.load(
            "mnist", split, batch_size=100, shuffle=False, num_examples=num_examples, data_npz=path
        )
        np.testing.assert_array_equal(np.concatenate([y for _, y in loaded]), want)


def test_an_npz_stream_permutes_each_epoch_by_seed_and_epoch(tmp_path):
    arrays = write_npz(tmp_path / "mnist.npz")
    load = dict(batch_size=32, seed=7, data_npz=str(tmp_path / "mnist.npz"))
    stream = [y for _, y in keras_lfr.data.load("mnist", "train", epochs=3, **load)]
    resumed = [
        y for _, y in keras_lfr.data.load("mnist", "train", epochs=3, initial_epoch=1, **load)
    ]
    assert [len(y) for y in stream] == [32, 32, 32, 4] * 3
    epochs = [np.concatenate(stream[4 * e : 4 * e + 4]) for e in range(3)]
    for labels in epochs:
        assert sorted(labels) == sorted(arrays["y_train"])
    assert not np.array_equal(epochs[0], epochs[1])
    for got, want in zip(resumed, stream[4:], strict=True):
        np.testing.assert_array_equal(got, want)
    # One pass, reshuffled each time it is iterated (as tfds' training split).
    once = keras_lfr.data.load("mnist", "train", **load)
    first, second = (np.concatenate([y for _, y in once]) for _ in range(2))
    assert sorted(first) == sorted(second) and not np.array_equal(first, second)


def test_a_bad_npz_or_split_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="argument `data_npz`. Received: data_npz='.*absent.npz'"):
        keras_lfr.data.require("mnist", data_npz=str(tmp_path / "absent.npz"))
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((2, 28, 28), np.uint8))
    with pytest.raises(ValueError, match=r"without the arrays \['y_train', 'x_test', 'y_test'\]"):
        keras_lfr.data.load("mnist", data_npz=str(tmp_path / "partial.npz"))
    write_npz(tmp_path / "mnist.npz")
    with pytest.raises(ValueError, match=r"Expected uint8 images of shape \(32, 32, 3\)"):
        keras_lfr.data.load("cifar10", data_npz=str(tmp_path / "mnist.npz"))
    with pytest.raises(ValueError, match="argument `split`. Received: split='validation'"):
        keras_lfr.data.load("mnist", "validation", data_npz=str(tmp_path / "mnist.npz"))


def test_tfds_loading_without_tensorflow_datasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    with pytest.raises(ImportError, match=r"needs tensorflow_datasets.*keras_lfr\[tensorflow\]"):
        keras_lfr.data.load("mnist", "test")
    assert not keras_lfr.data.available("mnist")
