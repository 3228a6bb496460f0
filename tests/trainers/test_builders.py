"""`trainers.builders`: learning-rate schedules and optimizers of a config."""

import keras
import numpy as np
import pytest

import keras_lfr
from trainers import builders
from trainers import config as config_lib


def test_cosine_schedule_warms_up_then_decays_to_zero():
    config = config_lib.TrainConfig(epochs=4, lr=0.1, lr_schedule="cosine", lr_warmup_epochs=1)
    schedule = builders.learning_rate(config, steps_per_epoch=10)
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
    config = config_lib.TrainConfig(optimizer=optimizer, lr=0.02, lr_decay_epochs=())
    made = builders.make_optimizer(config, steps_per_epoch=5)
    assert isinstance(made, expected)
    assert float(made.learning_rate) == pytest.approx(0.02)


def test_invalid_schedule_names_are_refused():
    with pytest.raises(ValueError, match="lr_schedule='linear'"):
        builders.learning_rate(config_lib.TrainConfig(lr_schedule="linear"), 10)
    with pytest.raises(ValueError, match="optimizer='rmsprop'"):
        builders.make_optimizer(config_lib.TrainConfig(optimizer="rmsprop"), 10)


@pytest.mark.parametrize("architecture", ["small_cnn", "resnet18"])
def test_activation_reaches_the_model_and_the_zoo_record(architecture):
    config = config_lib.make(architecture=architecture, dataset="cifar10", activation="silu")
    spec = builders.architecture(config)
    assert spec["kwargs"]["activation"] == "silu"
    # A zoo record stores this spec; the zoo builds the same network from it.
    rebuilt = keras_lfr.zoo.build({"architecture": spec})
    built = builders.make_classifier(config)
    for model in (rebuilt, built):
        names = {
            layer.activation.__name__ for layer in model.layers if hasattr(layer, "activation")
        }
        assert "silu" in names and "relu" not in names
