"""The installed distribution: console scripts that resolve and help, no generic top-level names."""

import importlib
import os
import re
import subprocess

import tomllib
from conftest import REPO, console_script


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


# Flags each program defines itself, which its --help must list.
OWN_FLAGS = {
    "keras-lfr-train": ("--method", "--recipe", "--model_dir", "--fresh"),
    "keras-lfr-evaluate": ("--model", "--zoo", "--validation_examples", "--output"),
    "keras-lfr-reproduce": ("--budget", "--print_commands"),
    "keras-lfr-sweep": ("--values", "--relative"),
    "keras-lfr-release": ("--name", "--leaderboard"),
    "keras-lfr-seeds": ("--seeds", "--results_dir"),
    "keras-lfr-compare": (),  # no flags: its arguments are evaluation files
}


def test_every_console_script_prints_its_own_help_and_exits_0(tmp_path):
    """`keras-lfr-* --help` through the installed entry point, as `python -m trainers.*` does."""
    scripts = pyproject()["project"]["scripts"]
    assert set(scripts) == set(OWN_FLAGS)
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    processes = {  # all at once: each spends its seconds importing TensorFlow
        name: subprocess.Popen(
            [console_script(name), "--help"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name in scripts
    }
    for name, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)
        assert process.returncode == 0, f"{name}: {stderr[-3000:]}"
        module = importlib.import_module(scripts[name].partition(":")[0])
        assert stdout.startswith(module.__doc__.strip().splitlines()[0]), (name, stdout[:300])
        listed = set(re.findall(r"^  (--(?:\[no\])?\w+)", stdout, re.MULTILINE))
        listed |= {flag.replace("[no]", "") for flag in listed}
        assert set(OWN_FLAGS[name]) <= listed, (name, sorted(listed))
        assert "--logtostderr" not in listed, name  # absl's own flags: only with --helpfull
        # No TensorFlow start-up log when the user set no TF_CPP_MIN_LOG_LEVEL.
        assert not re.search(r"^[IWEF]\d{4} ", stderr, re.MULTILINE), (name, stderr[-3000:])
