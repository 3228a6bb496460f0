"""The ε ramp, learning-rate schedules, optimizers, recipes and the collapse warning."""

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import learnable_data, tiny_batch, tiny_model

import keras_lfr
from keras_lfr import ops
from keras_lfr.methods import get_method
from trainers import train

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


def test_trainer_ramp_reaches_epsilon_on_its_epoch(tmp_path):
    config = train.TrainConfig(
        method="pgd_at",
        epochs=3,
        batch_size=64,
        steps=1,
        step_size=0.3,
        train_examples=256,  # 4 steps per epoch
        test_examples=64,
        epsilon_warmup_epochs=2,
        lr_decay_epochs=(),
        verbose=0,
    )
    history = train.train_and_evaluate(config, str(tmp_path))["history"]
    # The last step of each epoch: steps 3, 7 and 11 of an 8-step ramp.
    assert history["epsilon_scale"] == pytest.approx([3 / 8, 7 / 8, 1.0])
    assert len(history["wall_time"]) == 3 and np.all(np.diff(history["wall_time"]) > 0)


def test_cosine_schedule_warms_up_then_decays_to_zero():
    config = train.TrainConfig(epochs=4, lr=0.1, lr_schedule="cosine", lr_warmup_epochs=1)
    schedule = train.learning_rate(config, steps_per_epoch=10)
    rates = np.array([float(schedule(step)) for step in range(41)])
    np.testing.assert_allclose(rates[[0, 5, 10]], [0.0, 0.05, 0.1], atol=1e-7)
    assert np.all(np.diff(rates[10:]) <= 1e-9)  # non-increasing after the warm-up
    # Halfway through the decay the cosine is at half the peak; it ends at 0.
    np.testing.assert_allclose(rates[25], 0.05, atol=1e-6)
    np.testing.assert_allclose(rates[40], 0.0, atol=1e-7)


@pytest.mark.parametrize(
    "optimizer, expected", [("sgd", keras.optimizers.SGD), ("adam", keras.optimizers.Adam)]
)
def test_optimizer_choice(optimizer, expected):
    config = train.TrainConfig(optimizer=optimizer, lr=0.02, lr_decay_epochs=())
    made = train.make_optimizer(config, steps_per_epoch=5)
    assert isinstance(made, expected)
    assert float(made.learning_rate) == pytest.approx(0.02)


def test_invalid_schedule_names_are_refused():
    with pytest.raises(ValueError, match="lr_schedule='linear'"):
        train.learning_rate(train.TrainConfig(lr_schedule="linear"), 10)
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        train.make_optimizer(train.TrainConfig(optimizer="rmsprop"), 10)


def test_fast_recipe_fields_exist():
    # Every key of a recipe is a field of the config, so `--recipe` cannot silently drop one.
    fields = set(train.TrainConfig.__dataclass_fields__)
    for recipe in train.RECIPES.values():
        assert set(recipe) <= fields


def collapse_warnings(record):
    return [w for w in record if "looks collapsed" in str(w.message)]


def test_collapse_warning_fires_on_a_constant_classifier():
    # SmallCNN's last layer starts at zero: with a learning rate of 0 the
    # logits stay 0, the CE stays ln 10 and every prediction is class 0.
    x, y = tiny_batch(batch=64, shape=(28, 28, 1))
    cnn = keras_lfr.models.small_cnn(dropout=0.0)
    model = keras_lfr.wrap(cnn, method="lfr", steps=1, epsilon=0.1, lam=0.5)
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    assert history.history["clean_ce"][-1] == pytest.approx(math.log(10), abs=1e-4)
    found = collapse_warnings(record)
    assert len(found) == 1  # once, after 2 collapsed epochs, not every epoch
    message = str(found[0].message)
    assert "at epoch 2" in message
    assert "method='lfr'" in message and "lam (now 0.5)" in message and "class 0" in message


def test_collapse_warning_stays_silent_on_a_healthy_run():
    keras.utils.set_random_seed(0)
    x, y = learnable_data(n=128)
    model = keras_lfr.wrap(tiny_model(num_classes=4), method="standard")
    model.compile(optimizer=keras.optimizers.Adam(0.01))
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=32, epochs=3, verbose=0)
    assert history.history["clean_ce"][-1] < math.log(4) - 0.3
    assert not collapse_warnings(record)


def test_hparams_reach_the_method_and_parse_from_flags():
    assert train.parse_hparams(["local_weight=0.1", "steps=3", "base=trades", "x=true"]) == {
        "local_weight": 0.1,
        "steps": 3,
        "base": "trades",
        "x": True,
    }
    with pytest.raises(ValueError, match="argument `hparams`"):
        train.parse_hparams(["local_weight"])
    config = train.TrainConfig(method="adr", steps=2, hparams={"global_weight": 0.05})
    assert train.method_hyperparameters(config) == {"steps": 2, "global_weight": 0.05}


def test_sweep_points_scale_the_defaults():
    from trainers import sweep

    point = sweep.hyperparameters("adr", ("local_weight", "global_weight"), 0.1, relative=True)
    assert point == pytest.approx({"local_weight": 0.01, "global_weight": 0.005})
    assert sweep.hyperparameters("lfr", ("lam",), 0.05) == {"lam": 0.05}
    with pytest.raises(ValueError, match="argument `params`"):
        sweep.hyperparameters("lfr", ("beta",), 1.0)
