"""`keras_lfr.callbacks`: the collapse warning."""

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
