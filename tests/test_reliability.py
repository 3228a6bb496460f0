"""Resume after a kill, determinism, divergence, bad inputs, serving signature."""

import json
import pathlib
import subprocess
import sys

import h5py
import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REFERENCE_WEIGHTS, REPO, tiny_batch, tiny_model

import keras_lfr
from keras_lfr import attacks, evaluation
from keras_lfr.methods import Method
from trainers import runs

TRAIN_RUN = pathlib.Path(__file__).with_name("train_run.py")


def run_training(workdir, *kill_at):
    return subprocess.run(
        [sys.executable, str(TRAIN_RUN), str(workdir), *map(str, kill_at)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def final_weights(workdir):
    return keras.models.load_model(workdir / "model.keras").get_weights()


def check_every_file_loads(workdir):
    """What a killed run leaves is loadable: the outputs present and the latest checkpoint."""
    if (workdir / "model.keras").exists():
        keras.models.load_model(workdir / "model.keras")
    if (workdir / "metrics.json").exists():
        json.loads((workdir / "metrics.json").read_text())
    epoch, state = runs.latest(str(workdir))
    if state is not None:  # every array of the checkpoint reads back
        with h5py.File(state["weights"], "r") as f:
            f.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
    return epoch


# Kills, one after the other, in the same run: mid-epoch, while a checkpoint's
# weights are half written, before a finished checkpoint is renamed into
# place, and before each output (model.keras, the SavedModel, metrics.json)
# replaces the old one. After each, the next invocation resumes.
KILL_CHAIN = (
    ("batch:1:1", 1),  # SIGKILL mid-epoch 2: resume from epoch 1
    ("weights:epoch-0002", 1),  # torn checkpoint of epoch 2: still epoch 1
    ("replace:epoch-0003", 2),  # epoch 3's checkpoint complete but not renamed
    ("replace:model.keras", 3),
    ("replace:export", 3),
    ("replace:metrics.json", 3),
)


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
    resumed = tmp_path / "resumed"
    for kill_point, epoch in KILL_CHAIN:
        killed = run_training(resumed, kill_point)
        assert killed.returncode == -9, (kill_point, killed.stderr[-2000:])
        assert check_every_file_loads(resumed) == epoch, kill_point
    finished = run_training(resumed)
    assert finished.returncode == 0, finished.stderr[-3000:]
    straight = run_training(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    again = run_training(tmp_path / "again")
    assert again.returncode == 0, again.stderr[-3000:]
    model = keras.models.load_model(resumed / "model.keras")
    assert int(model.optimizer.iterations) == 3 * 4  # 3 epochs of 4 batches, none lost or repeated
    history = json.loads((resumed / "metrics.json").read_text())["history"]
    assert len(history["loss"]) == 3  # the whole run's history, across the resumes
    for r, s, a in zip(
        final_weights(resumed),
        final_weights(tmp_path / "straight"),
        final_weights(tmp_path / "again"),
        strict=True,
    ):
        np.testing.assert_array_equal(s, a)  # determinism: two runs, identical weights
        np.testing.assert_array_equal(r, s)  # resume: identical to the uninterrupted run
    served = tf.saved_model.load(str(resumed / "export"))
    x = tf.zeros([2, 28, 28, 1])
    np.testing.assert_allclose(
        served.signatures["serving_default"](images=x)["logits"], model.unwrap()(x), atol=1e-5
    )


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


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("trainers.train", "--method=lrf", "--epochs=1"),
            "flag --method=lrf: value should be one of "
            "<adr|awp|lfr|llr|lsp|pgd_at|standard|trades>",
        ),
        (
            ("trainers.train", "--epsilon=-0.3", "--epochs=1", "--train_examples=64"),
            "argument `epsilon`. Received: epsilon=-0.3",
        ),
        (("trainers.train", "--steps=0", "--epochs=1", "--train_examples=64"), "argument `steps`"),
        (
            (
                "trainers.train",
                "--dataset=fashion_mnist",
                "--download=false",
                "--data_dir=/nonexistent",
            ),
            "Could not load dataset 'fashion_mnist'",
        ),
        (
            ("trainers.evaluate", f"--weights={REFERENCE_WEIGHTS}", "--attacks=pgd41"),
            "argument `attacks`",
        ),
        (("trainers.evaluate",), "exactly one of `model`"),
        (
            ("trainers.reproduce", "--budget=fast", "--evaluate_only", "--override=strong=5"),
            "argument `override`. Received: ['strong']",
        ),
        (("trainers.evaluate", "--model=/nonexistent.keras"), "argument `model`"),
    ],
    ids=[
        "method",
        "epsilon",
        "steps",
        "missing_dataset",
        "attack_name",
        "no_model",
        "bad_override",
        "missing_model",
    ],
)
def test_command_line_errors_are_one_clear_line(tmp_path, args, message):
    completed = cli(*args, f"--model_dir={tmp_path}") if args[0] == "trainers.train" else cli(*args)
    assert completed.returncode == 1
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr


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
