"""The ε ramp of `RobustModel`: its scale per step, both shapes, round trips and resumes."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_batch, tiny_model

import keras_lfr
from keras_lfr import ops
from keras_lfr.methods import get_method

BALL_METHODS = {
    "pgd_at": {},
    "trades": {},
    "lfr": {},
    "llr": {},
    "adr": {"base": "trades"},
    "lsp": {},
}


@pytest.mark.parametrize("name", sorted(BALL_METHODS))
@pytest.mark.parametrize("scale", [0.0, 0.25, 1.0])
def test_scaled_perturbation_equals_the_method_at_the_scaled_ball(name, scale):
    x, y = tiny_batch()
    model = tiny_model()
    epsilon, step_size = 0.2, 0.08
    full = get_method(name, epsilon=epsilon, step_size=step_size, steps=3, **BALL_METHODS[name])
    small = get_method(
        name, epsilon=scale * epsilon, step_size=scale * step_size, steps=3, **BALL_METHODS[name]
    )
    seed = ops.as_seed(3)
    ramped = full.perturb(model, tf.constant(x), tf.constant(y), seed, tf.constant(scale))
    direct = small.perturb(model, tf.constant(x), tf.constant(y), seed)
    np.testing.assert_allclose(ramped, direct, atol=1e-6)
    assert np.max(np.abs(ramped.numpy() - x)) <= scale * epsilon + 1e-6
    if scale:
        # The ascent does move out to the scaled radius (not a no-op).
        assert np.max(np.abs(ramped.numpy() - x)) > 0.9 * scale * epsilon


RAMPS = {
    "linear": [0.0, 0.25, 0.5, 0.75, 1.0, 1.0],
    # (1 - cos(pi t / 4)) / 2 at t = 0..5, written out.
    "cosine": [0.0, (2 - 2**0.5) / 4, 0.5, (2 + 2**0.5) / 4, 1.0, 1.0],
}


@pytest.mark.parametrize("shape", sorted(RAMPS))
@pytest.mark.parametrize("jit_compile", [False, True], ids=["graph", "xla"])
def test_epsilon_scale_follows_the_optimizer_step(jit_compile, shape):
    model = keras_lfr.wrap(
        tiny_model(),
        method="pgd_at",
        epsilon=0.2,
        steps=1,
        epsilon_warmup=4,
        epsilon_warmup_shape=shape,
    )
    model.compile(optimizer=keras.optimizers.SGD(0.0), jit_compile=jit_compile)
    x, y = tiny_batch(batch=8)
    seen = []
    for _ in range(6):
        seen.append(float(model.epsilon_scale()))
        logs = model.train_on_batch(x, y, return_dict=True)
        assert logs["epsilon_scale"] == pytest.approx(seen[-1])
    assert seen == pytest.approx(RAMPS[shape], abs=1e-6)


def test_without_a_warmup_the_scale_is_exactly_one_and_not_logged():
    x, y = tiny_batch(batch=8)
    plain = keras_lfr.wrap(tiny_model(), method="pgd_at", epsilon=0.2, steps=1)
    plain.compile(optimizer="sgd")
    assert plain.epsilon_scale() == 1.0
    assert "epsilon_scale" not in plain.train_on_batch(x, y, return_dict=True)


@pytest.mark.parametrize(
    "shape, fraction", [("linear", 0.4), ("cosine", (1 - math.cos(0.4 * math.pi)) / 2)]
)
def test_epsilon_warmup_round_trips_and_resumes_with_the_optimizer(tmp_path, shape, fraction):
    model = keras_lfr.wrap(
        tiny_model(), method="trades", steps=1, epsilon_warmup=10, epsilon_warmup_shape=shape
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    x, y = tiny_batch(batch=16)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # 4 steps
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert (loaded.epsilon_warmup, loaded.epsilon_warmup_shape) == (10, shape)
    assert float(loaded.epsilon_scale()) == pytest.approx(fraction, abs=1e-6)


@pytest.mark.parametrize(
    "argument, value", [("epsilon_warmup", -1), ("epsilon_warmup_shape", "exponential")]
)
def test_invalid_epsilon_warmup_is_refused(argument, value):
    with pytest.raises(ValueError, match=f"{argument}={value!r}"):
        keras_lfr.wrap(tiny_model(), method="pgd_at", **{argument: value})
