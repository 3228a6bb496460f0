"""Divergence, bad inputs, the serving signature, float64: failures that are clear and early."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_batch, tiny_model

import keras_lfr
from keras_lfr import attacks, evaluation
from keras_lfr.methods import Method


class Exploding(Method):
    """CE plus a penalty that is infinite: a run that must be stopped."""

    name = "exploding"
    terms = ("clean_ce", "penalty")

    def loss(self, model, x, y, x_adv, sample_weight=None):
        logits = model(x, training=True)
        ce = tf.reduce_mean(keras_lfr.ops.cross_entropy(y, logits))
        penalty = ce * 0.0 + float("inf")
        return logits, ce + penalty, {"clean_ce": ce, "penalty": penalty}

    def get_config(self):
        return {}


def test_divergence_stops_with_the_step_and_term():
    x, y = tiny_batch(batch=32)
    model = keras_lfr.RobustModel(tiny_model(), method=Exploding())
    model.compile(optimizer="sgd")
    with pytest.raises(FloatingPointError) as error:
        model.fit(x, y, batch_size=8, epochs=2, verbose=0)
    message = str(error.value)
    assert "epoch 1, batch 1 (optimizer step 1)" in message
    assert "`penalty`" in message and "`clean_ce`" not in message.split("Logged")[0]


def test_lfr_with_an_absurd_learning_rate_stops_cleanly():
    x, y = tiny_batch(batch=64)
    model = keras_lfr.wrap(tiny_model(), steps=1, lam=10.0)
    model.compile(optimizer=keras.optimizers.SGD(1e12))
    with pytest.raises(FloatingPointError, match="Training diverged at epoch 1"):
        model.fit(x, y, batch_size=8, epochs=3, verbose=0)


@pytest.mark.parametrize(
    "make, error",
    [
        (
            lambda x, y: ((x * 255).astype("uint8"), y),
            "Invalid images in the data passed to fit: dtype uint8",
        ),
        (lambda x, y: (x[..., 0], y), r"Invalid images .* \(rank 3\)\. Expected rank 4"),
        (lambda x, y: (x, y + 10), r"Invalid labels .* Expected integers in \[0, 9\]"),
        (lambda x, y: (x, -y - 1), "Invalid labels"),
        (lambda x, y: (x, np.eye(5, dtype="float32")[y % 5]), "one-hot width 5"),
    ],
    ids=["integer_images", "wrong_rank", "labels_too_large", "negative_labels", "one_hot_width"],
)
@pytest.mark.parametrize("kind", ["arrays", "tf_data", "py_dataset", "generator"])
def test_fit_rejects_bad_data_before_tensorflow_sees_it(make, error, kind):
    x, y = make(*tiny_batch())
    model = keras_lfr.wrap(tiny_model(), steps=1)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=error):
        model.fit(*as_input_kind(kind, x, y), verbose=0)


class Batches(keras.utils.PyDataset):
    def __init__(self, x, y):
        super().__init__()
        self.x, self.y = x, y

    def __len__(self):
        return 2

    def __getitem__(self, index):
        half = len(self.x) // 2
        return self.x[index * half : (index + 1) * half], self.y[index * half : (index + 1) * half]


def as_input_kind(kind, x, y):
    """`fit`'s positional arguments for (x, y) given as arrays, tf.data, PyDataset or generator."""
    if kind == "arrays":
        return x, y
    if kind == "tf_data":
        return (tf.data.Dataset.from_tensor_slices((x, y)).batch(4),)
    if kind == "py_dataset":
        return (Batches(x, y),)
    return (((x[i : i + 4], y[i : i + 4]) for i in range(0, len(x), 4)),)


@pytest.mark.parametrize("method", ["lfr", "adr", "lsp"])
def test_fit_warns_about_pixels_outside_the_clip_range(method):
    x, y = tiny_batch()
    model = keras_lfr.wrap(tiny_model(), method=method, steps=1)
    model.compile(optimizer="sgd")
    with pytest.warns(UserWarning, match=r"outside \[clip_min, clip_max\] = \[0, 1\]"):
        model.fit(x * 255, y, verbose=0)


@pytest.mark.parametrize(
    "x_change, error",
    [
        (lambda x: (x * 255).astype("uint8"), "argument `x`.*floating-point images"),
        (lambda x: x * 2, r"argument `x`.*pixels in \[clip_min, clip_max\]"),
        (lambda x: x[0, 0, 0], "argument `x`.*a batch"),
    ],
    ids=["integer", "out_of_range", "no_batch"],
)
@pytest.mark.parametrize("attack", ["pgd", "mi_fgsm", "apgd", "ddn", "square"])
def test_attacks_reject_bad_images(attack, x_change, error):
    x, y = tiny_batch()
    kwargs = {
        "pgd": {"epsilon": 0.1, "step_size": 0.1, "steps": 1},
        "mi_fgsm": {"epsilon": 0.1, "step_size": 0.1, "steps": 1},
        "apgd": {"epsilon": 0.1, "steps": 1},
        "ddn": {"steps": 1},
        "square": {"epsilon": 0.1, "queries": 1},
    }[attack]
    with pytest.raises(ValueError, match=error):
        getattr(attacks, attack)(tiny_model(), x_change(x), y, **kwargs)


def test_evaluation_warns_on_probabilities_and_rejects_bad_labels():
    x, y = tiny_batch()
    probabilities = keras.Sequential([tiny_model(), keras.layers.Softmax()])
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    fgsm = {"fgsm": lambda m, x, y: attacks.fgsm(m, x, y, epsilon=0.1)}
    with pytest.warns(UserWarning, match="outputs probabilities"):
        evaluation.robust_accuracy(probabilities, ds, fgsm, verbose=0)
    bad = tf.data.Dataset.from_tensor_slices((x, y + 10)).batch(8)
    with pytest.raises(ValueError, match="Invalid labels"):
        evaluation.robust_accuracy(tiny_model(), bad, fgsm, verbose=0)


def test_serving_signature_checks_dtype_and_shape(tmp_path):
    cnn = keras_lfr.models.small_cnn()
    keras_lfr.export(cnn, tmp_path / "saved")
    serving = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    assert serving(images=tf.zeros([2, 28, 28, 1]))["logits"].shape == (2, 10)
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor"):
        serving(images=tf.zeros([2, 28, 28, 1], tf.float64))
    shape_error = r"serving_default expects float32 `images` of shape \(batch, 28, 28, 1\)"
    for wrong in ([2, 32, 32, 3], [2, 28, 28, 3], [2, 14, 14, 1]):
        with pytest.raises(tf.errors.InvalidArgumentError, match=shape_error):
            serving(images=tf.zeros(wrong))
    for wrong in ([2, 28, 28], [2, 28, 28, 1, 1], [2]):  # wrong ranks, the same message
        with pytest.raises(tf.errors.InvalidArgumentError, match=shape_error):
            serving(images=tf.zeros(wrong))


def test_float64_is_refused_up_front():
    keras.config.set_floatx("float64")
    try:
        cnn = keras_lfr.models.small_cnn()
        with pytest.raises(ValueError, match="not float64.*floatx\\(\\)='float64'"):
            keras_lfr.wrap(cnn, method="lfr")
    finally:
        keras.config.set_floatx("float32")
    cnn = keras_lfr.models.small_cnn(dtype="float64")
    with pytest.raises(ValueError, match=r"dtype policies \['float32', 'float64'\]"):
        keras_lfr.wrap(cnn, method="trades")
