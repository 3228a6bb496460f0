"""`keras_lfr.defaults`: one owner of each dataset's ε and the paper's setting."""

import inspect

import pytest

import keras_lfr
from keras_lfr import defaults, evaluation
from keras_lfr.methods import LFR, LLR, PGDAT, TRADES


@pytest.mark.parametrize(
    "epsilon, fraction, expected",
    [(0.3, 1 / 30, 0.01), (0.3, 1 / 3, 0.1), (0.1, 1 / 3, 0.033333), (0.3, 2 / 15, 0.04)],
)
def test_step_size_is_the_fraction_of_epsilon_rounded(epsilon, fraction, expected):
    assert defaults.step_size(epsilon, fraction) == expected


def test_every_dataset_takes_its_epsilon_from_defaults():
    for name, info in keras_lfr.data.DATASETS.items():
        assert info.epsilon == keras_lfr.ThreatModel.of_dataset(name).epsilon
    assert defaults.EPSILON == {"mnist": 0.3, "fashion_mnist": 0.1, "cifar10": 8 / 255}
    with pytest.raises(ValueError, match="dataset='svhn'"):
        keras_lfr.ThreatModel.of_dataset("svhn")


@pytest.mark.parametrize("function", [LFR, LLR, PGDAT, TRADES, evaluation.sanity_checks])
def test_methods_and_checks_default_to_the_papers_setting(function):
    parameters = inspect.signature(function).parameters
    assert parameters["epsilon"].default == 0.3 == defaults.PAPER_EPSILON
    assert parameters["step_size"].default == 0.01 == defaults.PAPER_STEP_SIZE
    assert parameters["steps"].default == 40 == defaults.PAPER_STEPS


@pytest.mark.parametrize("name", sorted(evaluation.PROTOCOLS))
def test_protocols_pass_epsilon_and_the_pixel_range_to_every_attack(name):
    attacks = evaluation.protocol(name, epsilon=0.1, clip_min=-1.0, clip_max=1.0)
    for attack in attacks.values():
        assert (attack.keywords["clip_min"], attack.keywords["clip_max"]) == (-1.0, 1.0)
        assert attack.keywords.get("epsilon", 0.1) == 0.1  # DDN has no ε
