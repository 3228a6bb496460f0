"""`keras_lfr.ThreatModel`: one value for the ball, from a dataset, a model or a zoo record."""

import dataclasses

import keras
import pytest

import keras_lfr
from keras_lfr import ThreatModel, defaults, zoo


@pytest.mark.parametrize("dataset", sorted(defaults.EPSILON))
def test_a_dataset_without_epsilon_gets_its_standard_radius(dataset):
    threat = ThreatModel.of_dataset(dataset)
    assert threat.epsilon == defaults.EPSILON[dataset]
    assert (threat.dataset, threat.norm, threat.step_size) == (dataset, "linf", None)
    assert (threat.clip_min, threat.clip_max) == (0.0, 1.0)
    assert keras_lfr.data.dataset_info(dataset).epsilon == threat.epsilon


@pytest.mark.parametrize("dataset", sorted(defaults.EPSILON))
@pytest.mark.parametrize("epsilon", [0.0, 0.05, 0.2])
def test_an_explicit_epsilon_wins(dataset, epsilon):
    threat = ThreatModel.of_dataset(dataset, epsilon)
    assert (threat.epsilon, threat.dataset) == (epsilon, dataset)


@pytest.mark.parametrize(
    "dataset, epsilon, fraction, step_size, expected",
    [
        ("fashion_mnist", None, 1 / 3, None, 0.033333),
        ("mnist", None, 1 / 3, None, 0.1),
        ("mnist", None, defaults.PAPER_STEP_FRACTION, None, defaults.PAPER_STEP_SIZE),
        ("mnist", 0.1, 1 / 3, None, 0.033333),
        # An explicit step wins over the fraction.
        ("mnist", None, 1 / 3, 0.05, 0.05),
        ("mnist", None, None, None, None),
    ],
)
def test_the_step_is_a_fraction_of_epsilon_unless_given(
    dataset, epsilon, fraction, step_size, expected
):
    threat = ThreatModel.of_dataset(dataset, epsilon, step_fraction=fraction, step_size=step_size)
    assert threat.step_size == expected
    if fraction is not None and step_size is None:
        assert threat.step_size == defaults.step_size(threat.epsilon, fraction)


def test_an_unknown_dataset_is_refused_naming_the_argument_and_the_choices():
    with pytest.raises(ValueError, match=r"`dataset`.*dataset='svhn'.*'mnist'"):
        ThreatModel.of_dataset("svhn")
    # With a radius given, any dataset name is taken as it is.
    assert ThreatModel.of_dataset("svhn", 8 / 255).dataset == "svhn"


@pytest.mark.parametrize(
    "fields, argument",
    [
        ({"epsilon": -0.1}, "epsilon"),
        ({"epsilon": 1.5}, "epsilon"),
        ({"epsilon": 0.3, "norm": "l2"}, "norm"),
        ({"epsilon": 0.3, "clip_min": 1.0}, "clip_max"),
        ({"epsilon": 0.3, "step_size": -1.0}, "step_size"),
    ],
)
def test_invalid_values_are_refused_naming_the_argument(fields, argument):
    with pytest.raises(ValueError, match=f"`{argument}`"):
        ThreatModel(**fields)


def test_it_is_a_frozen_value():
    threat = ThreatModel(0.3, dataset="mnist")
    assert threat == ThreatModel.of_dataset("mnist")
    assert hash(threat) == hash(ThreatModel.of_dataset("mnist"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        threat.epsilon = 0.1
    # Ints are floats, as the methods keep them.
    assert isinstance(ThreatModel(0, clip_min=-1, clip_max=1).clip_min, float)


def tiny_model():
    inputs = keras.Input((4, 4, 1))
    return keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Flatten()(inputs)))


@pytest.mark.parametrize(
    "method, hyperparameters",
    [
        ("lfr", {"epsilon": 0.2}),
        ("trades", {"epsilon": 0.2, "step_size": 0.05, "clip_min": -1.0}),
        ("lfr", {"epsilon": 0.2, "awp_gamma": 0.005}),
    ],
)
def test_a_robust_model_gives_its_methods_ball(method, hyperparameters):
    robust = keras_lfr.wrap(tiny_model(), method=method, **hyperparameters)
    threat = ThreatModel.of_model(robust)
    assert threat.epsilon == 0.2 and threat.dataset is None
    assert threat.clip_min == hyperparameters.get("clip_min", 0.0) and threat.clip_max == 1.0
    assert threat.step_size is None  # the ball only: an attack chooses its step
    # `RobustModel.threat_model()` is its dict form.
    assert robust.threat_model() == threat.as_ball()


def test_the_docstring_example_of_a_wrapped_small_cnn():
    robust = keras_lfr.wrap(keras_lfr.models.small_cnn(), method="lfr", epsilon=0.2)
    assert ThreatModel.of_model(robust).epsilon == 0.2


def test_a_model_without_a_ball_has_none():
    # "standard" trains without an inner maximisation: no radius to give.
    standard = keras_lfr.wrap(tiny_model(), method="standard")
    assert ThreatModel.of_model(standard) is None
    assert standard.threat_model() == {"epsilon": None, "clip_min": None, "clip_max": None}
    assert ThreatModel.of_model(tiny_model()) is None
    assert ThreatModel.of_model(None) is None


@pytest.mark.parametrize("name", zoo.available())
def test_every_zoo_record_gives_the_threat_model_its_name_starts_with(name):
    record = zoo.info(name)
    threat = ThreatModel.of_record(record)
    assert name.startswith(f"{threat.dataset}/{threat.name}/")
    assert threat.name == zoo.threat_model_name(record["threat_model"])
    assert threat.as_record() == record["threat_model"]
    # Round trip: the name finds the entry, the record form gives the threat model back.
    assert name in zoo.available(dataset=threat.dataset, threat_model=threat.name)
    assert ThreatModel.of_record({**record, "threat_model": threat.as_record()}) == threat
    entry = zoo.entry_of(record)
    assert {k: entry[k] for k in ("dataset", "epsilon", "clip_min", "clip_max")} == {
        "dataset": threat.dataset,
        **threat.as_ball(),
    }


def test_a_zoo_model_gives_its_entrys_threat_model():
    name = zoo.available()[0]
    model = zoo.load(name)
    threat = ThreatModel.of_model(model)
    assert threat == ThreatModel.of_record(zoo.info(name))
    assert model.threat_model() == threat.as_ball()
    unknown = zoo.ZooModel(model.input, model.output)
    assert ThreatModel.of_model(unknown) is None
    assert unknown.threat_model() == {"epsilon": None, "clip_min": None, "clip_max": None}


@pytest.mark.parametrize(
    "epsilon, name", [(0.3, "linf-0.3"), (0.1, "linf-0.1"), (8 / 255, "linf-0.0313725")]
)
def test_the_name_is_robustbenchs(epsilon, name):
    assert ThreatModel(epsilon).name == name
    assert zoo.threat_model_name({"norm": "linf", "epsilon": epsilon}) == name


def test_the_default_attack_of_the_callbacks_is_at_the_models_ball():
    robust = keras_lfr.wrap(tiny_model(), method="trades", epsilon=0.2, clip_min=-1.0)
    attack = keras_lfr.callbacks.default_attack(robust)
    assert attack.keywords == {
        "step_size": 0.02,
        "steps": 10,
        **ThreatModel.of_model(robust).as_ball(),
    }
    paper = keras_lfr.callbacks.default_attack(tiny_model()).keywords
    assert (paper["epsilon"], paper["clip_min"], paper["clip_max"]) == (0.3, 0.0, 1.0)
