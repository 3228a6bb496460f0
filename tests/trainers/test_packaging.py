"""The installed distribution: console scripts that resolve, and no generic top-level names."""

import importlib

import tomllib
from conftest import REPO


def pyproject():
    return tomllib.loads((REPO / "pyproject.toml").read_text())


def test_console_scripts_point_at_the_trainers_main_functions():
    scripts = pyproject()["project"]["scripts"]
    assert set(scripts) >= {"keras-lfr-train", "keras-lfr-evaluate", "keras-lfr-reproduce"}
    for target in scripts.values():
        module, _, function = target.partition(":")
        assert callable(getattr(importlib.import_module(module), function)), target


def test_the_trainers_install_under_keras_lfr_and_nothing_else_at_the_top():
    setuptools = pyproject()["tool"]["setuptools"]
    assert all(name.split(".")[0] == "keras_lfr" for name in setuptools["packages"])
    assert setuptools["package-dir"] == {"keras_lfr.trainers": "trainers"}
    # The installed package and the checkout's are the same files.
    from keras_lfr.trainers import train as installed

    from trainers import train as checkout

    assert installed.__file__ == checkout.__file__
