"""Smoke test of the absl trainer on 256 MNIST examples."""

import dataclasses
import json
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from conftest import REPO

from trainers import config as config_lib
from trainers import evaluating, options, runs, training


# Eight optimizer steps on 256 images do not leave the constant classifier, so
# the collapse warning is right here (tests/test_schedules.py tests it).
@pytest.mark.filterwarnings("ignore:Training with method='lfr' looks collapsed")
def test_train_and_evaluate_writes_model_export_and_logs(tmp_path):
    config = config_lib.TrainConfig(
        method="lfr",
        epochs=2,
        batch_size=64,
        steps=2,
        train_examples=256,
        test_examples=128,
        lr_decay_epochs=(1,),
        verbose=0,
    )
    result = training.train_and_evaluate(config, str(tmp_path))
    history = result["history"]
    assert {"loss", "clean_ce", "local_flatness", "accuracy", "val_accuracy"} <= set(history)
    assert len(history["loss"]) == 2
    model = keras.models.load_model(result["model_path"])
    assert model.method.name == "lfr" and model.method.steps == 2
    # The learning rate dropped ×0.1 after epoch 1 (4 steps of 64).
    assert int(model.optimizer.iterations) == 8
    np.testing.assert_allclose(float(model.optimizer.learning_rate), 0.001, rtol=1e-6)
    served = tf.saved_model.load(result["export_dir"]).signatures["serving_default"]
    x = np.zeros((2, 28, 28, 1), "float32")
    np.testing.assert_allclose(
        served(images=x)["logits"], model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert (tmp_path / "tensorboard").is_dir()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] == result["test"]["accuracy"]


def run_trainer(tmp_path, *flags):
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "trainers.train",
            "--train_examples=256",
            "--test_examples=128",
            f"--model_dir={tmp_path}",
            *flags,
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_trainer_command_line_continues_a_finished_run_and_refuses_another(tmp_path):
    completed = run_trainer(tmp_path, "--method=standard", "--epochs=1")
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Clean metrics on test[:128]" in completed.stdout
    assert (tmp_path / "export" / "saved_model.pb").is_file()
    # The same command again: already complete, says where its results are, writes nothing.
    written = {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")}
    again = run_trainer(tmp_path, "--method=standard", "--epochs=1", "--verbose=0")
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"The run in {tmp_path} is already complete (1 epoch): nothing to do." in again.stdout
    assert f"results are in {tmp_path / 'metrics.json'}" in again.stdout
    assert f"Saved {tmp_path}" not in again.stdout and "Clean metrics" not in again.stdout
    assert "Epoch" not in again.stdout + again.stderr
    assert {path: path.stat().st_mtime_ns for path in tmp_path.rglob("*")} == written
    # The finished run, asked for one more epoch, trains epoch 2 only.
    more = run_trainer(tmp_path, "--method=standard", "--epochs=2")
    assert more.returncode == 0, more.stderr[-3000:]
    output = more.stdout + more.stderr
    assert "Epoch 2/2" in output and "Epoch 1/2" not in output
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert len(metrics["history"]["loss"]) == 2
    assert int(keras.models.load_model(tmp_path / "model.keras").optimizer.iterations) == 2 * 2
    # Another method in the same model_dir is refused, naming the difference.
    other = run_trainer(tmp_path, "--method=lfr", "--epochs=3")
    assert other.returncode != 0
    assert "method='standard' (stored) vs 'lfr' (now)" in other.stderr


def test_a_model_dir_holds_one_run(tmp_path):
    config = config_lib.TrainConfig(method="lfr", epochs=3)
    runs.RunDir(tmp_path).claim(config)
    runs.RunDir(tmp_path).claim(dataclasses.replace(config, epochs=5, verbose=0))  # same run
    with pytest.raises(ValueError, match=r"lam=None \(stored\) vs 0.1 \(now\)"):
        runs.RunDir(tmp_path).claim(dataclasses.replace(config, lam=0.1))
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "model.keras").write_text("old")
    runs.RunDir(tmp_path).claim(dataclasses.replace(config, method="standard"), fresh=True)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / "model.keras").exists()
    assert json.loads((tmp_path / "run.json").read_text())["method"] == "standard"
    # A directory with outputs but no run.json (an older keras_lfr) is not guessed at.
    legacy = tmp_path / "legacy"
    (legacy / runs.RunDir.CHECKPOINTS).mkdir(parents=True)
    with pytest.raises(ValueError, match="no run.json"):
        runs.RunDir(legacy).claim(config)


def test_unset_hyperparameters_keep_each_methods_defaults():
    # ε is always the config's (default: the dataset's); the rest only when set.
    hyperparameters = config_lib.method_hyperparameters
    assert hyperparameters(config_lib.TrainConfig(method="llr")) == {"epsilon": 0.3}
    assert hyperparameters(config_lib.TrainConfig(method="standard")) == {}
    config = config_lib.TrainConfig(method="trades", steps=5, lam=0.1, beta=2.0)
    assert hyperparameters(config) == {"epsilon": 0.3, "steps": 5, "beta": 2.0}
    adr = hyperparameters(config_lib.TrainConfig(method="adr", epsilon=0.2, beta=1.0))
    assert adr == {"epsilon": 0.2, "beta": 1.0}
    fashion = config_lib.make("fast", method="pgd_at", dataset="fashion_mnist")
    assert hyperparameters(fashion) == {"epsilon": 0.1, "step_size": 0.033333, "steps": 5}


def test_help_lists_the_choices():
    def help_text(module):
        completed = subprocess.run(
            [sys.executable, "-m", module, "--helpshort"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return completed.stdout + completed.stderr

    train_help = help_text("trainers.train")
    assert "<adr|awp|lfr|llr|lsp|pgd_at|standard|trades>" in train_help
    assert "local_weight" in train_help and "--fresh" in train_help
    evaluate_help = help_text("trainers.evaluate")
    assert "apgd_ce, apgd_t, square" in evaluate_help and "--data_dir" in evaluate_help


@pytest.mark.parametrize("config_class", [config_lib.TrainConfig, evaluating.EvalConfig])
def test_flags_are_derived_from_the_config(config_class):
    flag_values = flags.FlagValues()
    options.define_flags(config_class, flag_values)
    assert set(flag_values) == {f.name for f in dataclasses.fields(config_class)}
    flag_values(["prog"])
    assert options.from_flags(config_class, flag_values) == config_class()


def test_train_flags_parse_into_the_config():
    flag_values = flags.FlagValues()
    options.define_flags(config_lib.TrainConfig, flag_values)
    flag_values(
        ["prog", "--method=adr", "--hparams=local_weight=0.2,layer=fc2", "--lr_decay_epochs=3,5"]
        + ["--jit_compile=false", "--verbose=2", "--epsilon=0.1", "--deterministic"]
    )
    config = options.from_flags(config_lib.TrainConfig, flag_values)
    assert config == config_lib.TrainConfig(
        method="adr",
        hparams={"local_weight": 0.2, "layer": "fc2"},
        lr_decay_epochs=(3, 5),
        jit_compile=False,
        verbose=2,
        epsilon=0.1,
        deterministic=True,
    )


def test_trainer_ramp_reaches_epsilon_on_its_epoch(tmp_path):
    config = config_lib.TrainConfig(
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
    history = training.train_and_evaluate(config, str(tmp_path))["history"]
    # The last step of each epoch: steps 3, 7 and 11 of an 8-step ramp.
    assert history["epsilon_scale"] == pytest.approx([3 / 8, 7 / 8, 1.0])
    assert len(history["wall_time"]) == 3 and np.all(np.diff(history["wall_time"]) > 0)
