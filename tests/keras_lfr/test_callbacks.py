"""`keras_lfr.callbacks`: the collapse and drift warnings."""

import math
import warnings

import keras
import pytest
from conftest import learnable_data, tiny_batch, tiny_model

import keras_lfr


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


@pytest.mark.parametrize(
    "method, hyperparameters, expected",
    [
        ("pgd_at", {"epsilon": 0.1}, 0.1),
        ("adr", {"epsilon": 0.2}, 0.2),  # a composite method: its base's ball
        ("standard", {}, 0.3),  # no ball: the paper's radius
    ],
)
def test_attack_evaluation_attacks_at_the_models_own_radius(method, hyperparameters, expected):
    robust = keras_lfr.wrap(tiny_model(), method=method, **hyperparameters)
    attack = keras_lfr.callbacks.default_attack(robust)
    assert attack.keywords["epsilon"] == pytest.approx(expected)
    assert attack.keywords["step_size"] == pytest.approx(expected / 10)
    assert (attack.keywords["clip_min"], attack.keywords["clip_max"]) == (0.0, 1.0)
    assert keras_lfr.callbacks.default_attack(tiny_model()).keywords["epsilon"] == 0.3
    # The callback resolves it from the model it is given by fit.
    x, y = tiny_batch(batch=4)
    callback = keras_lfr.callbacks.AttackEvaluation(x, y)
    robust.compile(optimizer="sgd")
    robust.fit(x, y, epochs=1, verbose=0, callbacks=[callback])
    assert callback.attacks_by_name["pgd"].keywords["epsilon"] == pytest.approx(expected)


def drift_warnings(record):
    return [w for w in record if "looks to be drifting" in str(w.message)]


def test_drift_warning_fires_when_training_into_the_failure():
    # A penalty weight far too small for the radius: once the easy data is
    # learnt, clean accuracy stalls at 1 and the CE keeps sharpening the
    # model, so the penalty at the inner maximiser rises every epoch.
    keras.utils.set_random_seed(0)
    x, y = learnable_data(n=128)
    model = keras_lfr.wrap(
        tiny_model(num_classes=4), method="lfr", epsilon=0.3, step_size=0.1, steps=2, lam=1e-4
    )
    model.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"])
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        history = model.fit(x, y, batch_size=32, epochs=7, verbose=0)
    flatness, accuracy = history.history["local_flatness"], history.history["accuracy"]
    assert flatness[5] > 3 * flatness[2] and accuracy[2] == accuracy[5] == 1.0
    found = drift_warnings(record)
    assert len(found) == 1  # once
    message = str(found[0].message)
    assert "at epoch 6" in message and "method='lfr'" in message and "`local_flatness`" in message
    assert "raise `lam`" in message and "epsilon_warmup" in message


def feed(callback, rows):
    """Runs `on_epoch_end` over `(flatness, accuracy, epsilon_scale)` rows; returns warnings."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        for epoch, (flatness, accuracy, scale) in enumerate(rows):
            logs = {"local_flatness": flatness, "accuracy": accuracy, "epsilon_scale": scale}
            callback.on_epoch_end(epoch, logs)
    return drift_warnings(record)


@pytest.mark.parametrize(
    "rows, warned_at",
    [
        # rising for 3 epochs at full epsilon, accuracy flat: warns at epoch 4
        ([(5.0, 0.9, 1.0), (6.0, 0.9, 1.0), (7.0, 0.901, 1.0), (8.0, 0.9, 1.0)], 4),
        # the same rise while epsilon still ramps: silent
        ([(5.0, 0.9, 0.5), (6.0, 0.9, 0.6), (7.0, 0.9, 0.8), (8.0, 0.9, 0.9)], None),
        # the ramp ends mid-rise: the epochs at full epsilon count from there
        ([(5.0, 0.9, 0.9), (6.0, 0.9, 1.0), (7.0, 0.9, 1.0), (8.0, 0.9, 1.0)], None),
        # rising while clean accuracy still improves: silent
        ([(5.0, 0.90, 1.0), (6.0, 0.91, 1.0), (7.0, 0.92, 1.0), (8.0, 0.93, 1.0)], None),
        # one epoch of the window falls: silent
        ([(5.0, 0.9, 1.0), (6.0, 0.9, 1.0), (5.5, 0.9, 1.0), (8.0, 0.9, 1.0)], None),
        # rises smaller than 1% do not count
        ([(5.0, 0.9, 1.0), (5.01, 0.9, 1.0), (5.02, 0.9, 1.0), (5.03, 0.9, 1.0)], None),
    ],
)
def test_drift_warning_rule(rows, warned_at):
    found = feed(keras_lfr.callbacks.DriftWarning(keras_lfr.methods.get_method("lfr")), rows)
    if warned_at is None:
        assert not found
    else:
        assert len(found) == 1 and f"at epoch {warned_at}" in str(found[0].message)


@pytest.mark.parametrize(
    "method, kwargs, added",
    [
        ("lfr", {}, True),
        ("awp", {"base": "lfr"}, True),  # AWP on LFR drifts as LFR does
        ("awp", {"base": "trades"}, False),
        ("pgd_at", {}, False),
    ],
)
def test_fit_adds_the_drift_warning_for_methods_that_can_drift(method, kwargs, added):
    x, y = tiny_batch(batch=8)
    model = keras_lfr.wrap(tiny_model(), method=method, **kwargs)
    _, own = model.prepare_fit(x, y)
    assert any(isinstance(c, keras_lfr.callbacks.DriftWarning) for c in own) == added
