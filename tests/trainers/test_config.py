"""`trainers.config`: recipes, hyperparameters reaching the method, flag parsing."""

import pytest

from trainers import config as config_lib
from trainers import options


def test_fast_recipe_fields_exist():
    # Every key of a recipe is a field of the config, so `--recipe` cannot silently drop one.
    fields = set(config_lib.TrainConfig.__dataclass_fields__)
    for recipe in config_lib.RECIPES.values():
        assert set(recipe) <= fields


def test_hparams_reach_the_method_and_parse_from_flags():
    assert options.parse_hparams(["local_weight=0.1", "steps=3", "base=trades", "x=true"]) == {
        "local_weight": 0.1,
        "steps": 3,
        "base": "trades",
        "x": True,
    }
    with pytest.raises(ValueError, match="argument `hparams`"):
        options.parse_hparams(["local_weight"])
    config = config_lib.TrainConfig(method="adr", steps=2, hparams={"global_weight": 0.05})
    assert config_lib.method_hyperparameters(config) == {
        "epsilon": 0.3,
        "steps": 2,
        "global_weight": 0.05,
    }
