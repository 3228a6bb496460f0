"""The same numbers on Keras' TensorFlow and JAX backends.

`tests/helpers/backend_values.py` computes every method's loss, terms and
weight gradients, the inner maximisations, every attack, a cascade
evaluation, the local flatness, one `fit` step and the `.keras` files on one
backend; it runs
once per backend in its own process (Keras fixes its backend at import), from
the same weights, batch, perturbed inputs and seeds (the random draws are
the same on both backends), and the values must agree to float32 precision.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import keras_lfr

pytest.importorskip("jax")

HELPER = os.path.join(os.path.dirname(__file__), "..", "helpers", "backend_values.py")
METHODS = ("standard", "lfr", "pgd_at", "trades", "llr", "adr", "lsp", "awp")


def run_helper(backend, workdir, keras_in, keras_out):
    out = os.path.join(workdir, f"{backend}.npz")
    env = {**os.environ, "KERAS_BACKEND": backend}
    subprocess.run(
        [
            sys.executable,
            HELPER,
            backend,
            os.path.join(workdir, "in.npz"),
            out,
            keras_in,
            keras_out,
        ],
        check=True,
        env=env,
        capture_output=True,
    )
    return dict(np.load(out))


@pytest.fixture(scope="module")
def values(tmp_path_factory):
    """`(tensorflow values, jax values, workdir)`; JAX loads TensorFlow's `.keras` file."""
    workdir = str(tmp_path_factory.mktemp("backends"))
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(3)
    weights = keras_lfr.models.small_cnn(dropout=0.0).get_weights()
    # The output layer starts at zero (TRADES' initialisation): draw it, so
    # that every layer gets a gradient.
    weights[-2:] = [rng.normal(0, 0.1, w.shape).astype("float32") for w in weights[-2:]]
    x = rng.uniform(size=(8, 28, 28, 1)).astype("float32")
    np.savez(
        os.path.join(workdir, "in.npz"),
        x=x,
        y=rng.integers(0, 10, 8).astype("int32"),
        sample_weight=rng.uniform(0.5, 1.5, 8).astype("float32"),
        x_adv=np.clip(x + rng.uniform(-0.3, 0.3, x.shape), 0, 1).astype("float32"),
        **{f"w{i}": w for i, w in enumerate(weights)},
    )
    tf_keras, jax_keras = (os.path.join(workdir, f"{b}.keras") for b in ("tensorflow", "jax"))
    tf_values = run_helper("tensorflow", workdir, jax_keras, tf_keras)
    jax_values = run_helper("jax", workdir, tf_keras, jax_keras)
    return tf_values, jax_values, workdir


def assert_close(actual, expected, rtol=1e-4):
    """Equal to float32 precision, relative to the largest magnitude of `expected`."""
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.mark.parametrize("method", METHODS)
def test_loss_terms_and_weight_gradients_match(values, method):
    tf_values, jax_values, _ = values
    keys = [k for k in tf_values if k.startswith(f"{method}/") and not k.endswith("/perturb")]
    assert f"{method}/loss" in keys and f"{method}/grad0" in keys
    assert sorted(keys) == sorted(
        k for k in jax_values if k.startswith(f"{method}/") and not k.endswith("/perturb")
    )
    for key in keys:
        assert np.any(tf_values[key] != 0) or "term" in key, key
        assert_close(jax_values[key], tf_values[key])


@pytest.mark.parametrize(
    "method, min_equal", [("lfr", 1.0), ("pgd_at", 1.0), ("llr", 1.0), ("trades", 0.85)]
)
def test_inner_maximisation_matches_from_the_same_random_start(values, method, min_equal):
    # The random starts are the same draws on both backends (ops.random_bits).
    # TRADES starts 0.001 from x, where the KL's gradient is tiny: a few
    # pixels' signs follow rounding, and later steps follow them (90% equal here).
    tf_values, jax_values, workdir = values
    tf_x, jax_x = tf_values[f"{method}/perturb"], jax_values[f"{method}/perturb"]
    assert np.max(np.abs(tf_x - np.load(os.path.join(workdir, "in.npz"))["x"])) > 0.1
    assert np.mean(np.isclose(jax_x, tf_x, atol=1e-5)) >= min_equal


ATTACKS = {
    "fgsm": 1.0,
    "mi_fgsm": 1.0,
    "pgd_l2": 1.0,
    "pgd_random": 1.0,
    "apgd_ce": 1.0,
    "apgd_t": 1.0,
    "fab_t": 1.0,
    "square": 1.0,
    "ddn": 1.0,
    # From x itself, l-inf PGD's later steps may take the other sign where a
    # pixel's gradient is within rounding of zero.
    "pgd": 0.9,
}


@pytest.mark.parametrize("attack", ATTACKS)
def test_attacks_match(values, attack):
    tf_values, jax_values, _ = values
    assert jax_values[f"attack/{attack}/accuracy"] == tf_values[f"attack/{attack}/accuracy"]
    equal = np.isclose(jax_values[f"attack/{attack}/x"], tf_values[f"attack/{attack}/x"], atol=1e-5)
    assert np.mean(equal) >= ATTACKS[attack]


def test_cascade_evaluation_matches(values):
    tf_values, jax_values, _ = values
    keys = sorted(k for k in tf_values if k.startswith("evaluation/"))
    assert "evaluation/worst_case" in keys and "evaluation/fab_t" in keys
    for key in keys:
        assert jax_values[key] == tf_values[key], key


def test_local_flatness_matches(values):
    tf_values, jax_values, _ = values
    assert np.all(tf_values["local_flatness"] > 0)
    assert_close(jax_values["local_flatness"], tf_values["local_flatness"])


def test_fit_steps_history_and_evaluate_match(values):
    tf_values, jax_values, _ = values
    weights = sorted(k for k in tf_values if k.startswith("fit/w"))
    assert len(weights) == 14
    for key in [*weights, "fit/loss", "fit/logits", "evaluate/loss"]:
        assert_close(jax_values[key], tf_values[key])
    history = sorted(k for k in tf_values if k.startswith("history/"))
    assert history == sorted(k for k in jax_values if k.startswith("history/"))
    assert {"history/epsilon_scale", "history/val_adv_pgd_accuracy"} <= set(history)
    # The cosine ramp at steps 0 and 1 of 4: (1 − cos(π t)) / 2, t = step / 4.
    np.testing.assert_allclose(tf_values["history/epsilon_scale"], [0.0, 0.1464466], atol=1e-6)
    for key in history:
        assert_close(jax_values[key], tf_values[key])


def test_keras_files_cross_backends(values):
    tf_values, jax_values, workdir = values
    # JAX loaded the file TensorFlow saved ...
    np.testing.assert_allclose(jax_values["loaded/logits"], tf_values["fit/logits"], atol=1e-5)
    # ... and TensorFlow (this process) loads the one JAX saved.
    loaded = keras.saving.load_model(os.path.join(workdir, "jax.keras"))
    assert isinstance(loaded, keras_lfr.RobustModel)
    x = np.load(os.path.join(workdir, "in.npz"))["x"]
    np.testing.assert_allclose(loaded.predict(x, verbose=0), jax_values["fit/logits"], atol=1e-5)


def test_jax_data_parallel_over_two_devices_equals_one(tmp_path):
    # keras.distribution.DataParallel over two virtual CPU devices: the same
    # global batch gives the same steps as one device.
    helper = os.path.join(os.path.dirname(__file__), "..", "helpers", "jax_data_parallel.py")
    out = str(tmp_path / "data_parallel.npz")
    subprocess.run([sys.executable, helper, out], check=True, capture_output=True)
    result = np.load(out)
    assert int(result["1/devices"]) == 1 and int(result["2/devices"]) == 2
    assert float(result["1/flatness"]) > 0
    for key in ["loss", "flatness", *(f"w{i}" for i in range(14))]:
        assert_close(result[f"2/{key}"], result[f"1/{key}"])
