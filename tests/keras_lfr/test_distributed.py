"""One global batch gives the same step on one and on two replicas; distributed_fit = fit."""

import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import HELPERS, learnable_data, tiny_batch, tiny_model

import keras_lfr

SCRIPT = HELPERS / "mirrored_step.py"
REPLICATED = [("lfr", False), ("lfr", True), ("standard", False)]
BATCH_WIDE = ["adr", "lsp"]


def step(replicas, jit, method, examples="0:16"):
    """The helper's name of one training step."""
    return f"{replicas},{int(jit)},{method},{examples}"


STEPS = [step(r, jit, method) for method, jit in REPLICATED for r in (1, 2)] + [
    step(r, False, method, examples)
    for method in BATCH_WIDE
    for r, examples in ((2, "0:16"), (1, "0:16"), (1, "0:8"), (1, "8:16"))
]


@pytest.fixture(scope="module")
def steps(tmp_path_factory):
    """Runs every step of this module in one process (TensorFlow imported once)."""
    out_dir = tmp_path_factory.mktemp("mirrored")
    subprocess.run(
        [sys.executable, str(SCRIPT), str(out_dir), *STEPS],
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )

    def result(replicas, jit, method, examples="0:16"):
        index = STEPS.index(step(replicas, jit, method, examples))
        with np.load(out_dir / f"{index}.npz") as data:
            assert float(data["moved"]) > 0, "the step did not change the weights"
            expected_xla = "none" if not jit else ("step" if replicas == 1 else "gradients")
            assert str(data["xla"]) == expected_xla
            return float(data["loss"]), [data[f"arr_{i}"] for i in range(len(data.files) - 3)]

    return result


@pytest.mark.parametrize("method, jit", REPLICATED)
def test_two_replicas_match_one(steps, method, jit):
    loss_1, weights_1 = steps(1, jit, method)
    loss_2, weights_2 = steps(2, jit, method)
    np.testing.assert_allclose(loss_2, loss_1, rtol=1e-5)
    assert len(weights_1) == len(weights_2) == 14
    for w1, w2 in zip(weights_1, weights_2, strict=True):
        np.testing.assert_allclose(w2, w1, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("method", BATCH_WIDE)
def test_batch_wide_terms_are_per_replica(steps, method):
    """ADR's global compactness and LSP's structure term see each replica's own examples.

    Under N replicas, a step equals the mean of N one-device steps on the
    replicas' slices of the global batch (SGD without momentum), not the
    one-device step on the whole batch (docs/methods.md says so).
    """
    loss_2, weights_2 = steps(2, False, method)
    loss_1, _ = steps(1, False, method)
    halves = [steps(1, False, method, examples) for examples in ("0:8", "8:16")]
    np.testing.assert_allclose(loss_2, np.mean([loss for loss, _ in halves]), rtol=1e-4)
    for w2, *w_halves in zip(weights_2, *(weights for _, weights in halves), strict=True):
        np.testing.assert_allclose(w2, np.mean(w_halves, axis=0), rtol=1e-4, atol=1e-6)
    assert abs(loss_2 - loss_1) > 5e-3 * abs(loss_1)


def awp_run(loop):
    x, y = learnable_data(n=64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    model = keras_lfr.wrap(
        tiny_model(),
        method="trades",
        epsilon=0.1,
        steps=2,
        awp_gamma=0.05,
        awp_warmup_steps=2,  # the first epoch
    )
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    if loop == "fit":
        return model.fit(data, epochs=2, verbose=0).history["loss"]
    history = keras_lfr.distributed.distributed_fit(
        model, data.repeat(), epochs=2, steps_per_epoch=2, verbose=0
    )
    return history["loss"]


def test_distributed_fit_trains_like_fit():
    # AWP switches on after its warm-up (counted in optimizer steps) in both loops.
    np.testing.assert_allclose(awp_run("distributed_fit"), awp_run("fit"), rtol=1e-6)


def test_distributed_fit_checks_data_and_stops_divergence():
    x, y = tiny_batch()
    model = keras_lfr.wrap(tiny_model(), method="standard")
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    bad = tf.data.Dataset.from_tensor_slices(((x * 255).astype("uint8"), y)).batch(4)
    with pytest.raises(ValueError, match="Invalid images in the data passed to fit"):
        keras_lfr.distributed.distributed_fit(model, bad, epochs=1, steps_per_epoch=1, verbose=0)
    good = tf.data.Dataset.from_tensor_slices((x, y)).batch(4).repeat()
    model.compile(optimizer=keras.optimizers.SGD(1e30))  # diverges within a few steps
    with pytest.raises(FloatingPointError, match="Training diverged at epoch 1"):
        keras_lfr.distributed.distributed_fit(model, good, epochs=1, steps_per_epoch=8, verbose=0)
