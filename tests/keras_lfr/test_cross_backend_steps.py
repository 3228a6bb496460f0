"""Compiled `fit` steps give the same weights on Keras' TensorFlow and JAX backends.

`tests/helpers/fit_steps.py` trains each method for one `fit` step with its
real inner maximisation (each method's own random start: the stateless
draws are the same on both backends), AWP on LFR across its warm-up (the
branch `keras_lfr.backend.cond` takes under `jax.jit`), and TRADES with and
without AWP on a BatchNorm CNN; it runs here, on TensorFlow (a graph), and
in a JAX process (jitted). The weights (moving statistics included) and the
logged losses must agree to float32 precision. The same runs show that AWP's
proxy pass updates no statistics: BatchNorm on the inputs sees the same
batches with and without AWP, so its moving statistics must be the same.
"""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from helpers import fit_steps

pytest.importorskip("jax")
pytestmark = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="compares this process's TensorFlow steps with a JAX process's",
)


def assert_close(actual, expected, rtol=1e-4, err_msg=""):
    """Equal to float32 precision, relative to the largest magnitude of `expected`."""
    scale = max(float(np.max(np.abs(expected))), 1e-6)
    np.testing.assert_allclose(actual, expected, rtol=rtol, atol=rtol * scale, err_msg=err_msg)


def draw_weights(model, rng):
    """Random weights; BatchNorm's scale, shift and statistics moved off 1, 0, 0 and 1."""
    weights = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = (rng.uniform(-0.2, 0.2, w.shape) for w in layer.weights)
            weights += [1 + gamma, beta, mean, 1 + variance]
        else:
            weights += [rng.normal(0.0, 0.5, w.shape) for w in layer.weights]
    return [w.astype("float32") for w in weights]


@pytest.fixture(scope="module")
def values(tmp_path_factory):
    """`(tensorflow values, jax values, inputs)`."""
    workdir = tmp_path_factory.mktemp("fit_steps")
    rng = np.random.default_rng(0)
    data = {
        "x": rng.uniform(size=(8, 6, 6, 1)).astype("float32"),
        "y": np.array([0, 1, 2, 3, 0, 1, 2, 3], dtype="int32"),
        "sample_weight": rng.uniform(0.5, 1.5, size=8).astype("float32"),
    }
    for name, builder in (("cnn", fit_steps.cnn), ("bn", fit_steps.bn_cnn)):
        for i, w in enumerate(draw_weights(builder(), rng)):
            data[f"{name}/{i}"] = w
    inputs, out = str(workdir / "in.npz"), str(workdir / "jax.npz")
    np.savez(inputs, **data)
    jax_run = subprocess.run(
        [sys.executable, fit_steps.__file__, "jax", inputs, out],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
    )
    assert jax_run.returncode == 0, jax_run.stderr[-4000:]
    return fit_steps.compute(data), dict(np.load(out)), data


@pytest.mark.parametrize("key", [*fit_steps.METHODS, "bn_trades", "bn_trades_awp"])
def test_fit_steps_match_across_backends(values, key):
    tf_values, jax_values, data = values
    assert str(tf_values["backend"]) == "tensorflow" and str(jax_values["backend"]) == "jax"
    weights = sorted(k for k in tf_values if k.startswith(f"{key}/w"))
    assert weights and weights == sorted(k for k in jax_values if k.startswith(f"{key}/w"))
    source = "bn" if key.startswith("bn") else "cnn"
    for i, name in enumerate(sorted(weights, key=lambda k: int(k.split("/w")[1]))):
        assert not np.array_equal(tf_values[name], data[f"{source}/{i}"]), f"{name} did not train"
        assert_close(jax_values[name], tf_values[name], err_msg=name)
    assert_close(jax_values[f"{key}/loss"], tf_values[f"{key}/loss"], err_msg="loss")


def test_awp_warmup_trains_the_base_then_awp_under_jit(values):
    # Two steps: the warm-up branch (LFR's loss at w), then AWP (at w + v).
    # The backends agree on both (above); here, the two steps differ in kind.
    tf_values, jax_values, _ = values
    for results in (tf_values, jax_values):
        assert results["awp/loss"].shape == (2,)
        assert np.all(np.isfinite(results["awp/loss"]))
    lfr = fit_steps.METHODS["lfr"][1]
    awp = fit_steps.METHODS["awp"][1]
    assert {k: awp[k] for k in lfr} == lfr  # the same LFR underneath
    # Step 0 is the warm-up: exactly LFR's step (same weights, same seed).
    np.testing.assert_allclose(tf_values["awp/loss"][0], tf_values["lfr/loss"][0], rtol=1e-6)
    np.testing.assert_allclose(jax_values["awp/loss"][0], jax_values["lfr/loss"][0], rtol=1e-6)


@pytest.mark.parametrize("backend", ["tensorflow", "jax"])
def test_awp_proxy_pass_updates_no_batchnorm_statistics(values, backend):
    tf_values, jax_values, _ = values
    results = tf_values if backend == "tensorflow" else jax_values
    # A bare proxy pass (training mode inside) leaves every statistic as it was ...
    assert np.all(results["proxy/moved"] > 0)
    proxy = sorted(k for k in results if k.startswith("proxy/before"))
    assert len(proxy) == 4
    for key in proxy:
        np.testing.assert_array_equal(results[key.replace("before", "after")], results[key])
    # ... and in a train step, BatchNorm on the inputs sees the clean and the
    # adversarial batch once each, with AWP as without (4 more updates if the
    # proxy pass counted), while BatchNorm after the conv sees w + v.
    bn_inputs = ("w2", "w3")  # moving mean and variance of the first BatchNorm
    bn_features = ("w8", "w9")
    for name in bn_inputs:
        plain, awp = results[f"bn_trades/{name}"], results[f"bn_trades_awp/{name}"]
        np.testing.assert_allclose(awp, plain, rtol=1e-6, atol=1e-7)
    assert any(
        not np.allclose(results[f"bn_trades/{n}"], results[f"bn_trades_awp/{n}"], atol=1e-6)
        for n in bn_features
    )
