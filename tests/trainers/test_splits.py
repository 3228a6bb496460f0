"""`trainers.config.splits`: a held-out validation split that never meets the training data."""

import numpy as np
import pytest

import keras_lfr
from trainers import config as config_lib


@pytest.mark.parametrize(
    "fields, expected",
    [
        ({}, ("train", "test", "test[-0:]")),
        (
            {"train_examples": 512, "test_examples": 100, "attack_eval_examples": 50},
            ("train[:512]", "test[:100]", "test[-50:]"),
        ),
        (
            {"validation_examples": 1000, "attack_eval_examples": 500},
            ("train[:59000]", "train[59000:]", "train[59000:59500]"),
        ),
        (
            {"validation_examples": 1000, "train_examples": 2048, "test_examples": 10},
            ("train[:2048]", "train[59000:]", "train[59000:59000]"),
        ),
        (
            {"dataset": "cifar10", "validation_examples": 500},
            ("train[:49500]", "train[49500:]", "train[49500:49500]"),
        ),
    ],
)
def test_splits(fields, expected):
    splits = config_lib.splits(config_lib.make(**fields))
    assert (splits["train"], splits["evaluation"], splits["curve"]) == expected


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"validation_examples": 1000, "train_examples": 59001}, "validation_examples=1000"),
        ({"validation_examples": 60000}, "validation_examples=60000"),
        ({"validation_examples": -1}, "validation_examples=-1"),
        ({"validation_examples": 100, "attack_eval_examples": 200}, "attack_eval_examples=200"),
    ],
)
def test_splits_that_would_overlap_are_refused(fields, match):
    with pytest.raises(ValueError, match=match):
        config_lib.splits(config_lib.make(**fields))


def test_held_out_images_are_the_last_training_images():
    splits = config_lib.splits(config_lib.make(validation_examples=300))

    def load(split):
        return next(iter(keras_lfr.data.load("mnist", split, batch_size=1000, shuffle=False)))

    tail, tail_labels = load("train[59400:]")  # the last 600 training images
    held_out, held_out_labels = load(splits["evaluation"])
    np.testing.assert_array_equal(held_out, tail[300:])
    np.testing.assert_array_equal(held_out_labels, tail_labels[300:])
    assert splits["train"] == "train[:59700]"  # ends where the held-out images begin
