"""Smoke test of the absl trainer on 256 MNIST examples."""

import json
import subprocess
import sys

import keras
import numpy as np
import tensorflow as tf
from conftest import REPO

from trainers import train


def test_train_and_evaluate_writes_model_export_and_logs(tmp_path):
    config = train.TrainConfig(
        method="lfr",
        epochs=2,
        batch_size=64,
        steps=2,
        train_examples=256,
        test_examples=128,
        lr_decay_epochs=(1,),
        verbose=0,
    )
    result = train.train_and_evaluate(config, str(tmp_path))
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


def test_trainer_command_line(tmp_path):
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainers.train",
            "--method=standard",
            "--epochs=1",
            "--train_examples=256",
            "--test_examples=128",
            f"--model_dir={tmp_path}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "Clean test metrics" in completed.stdout
    assert (tmp_path / "export" / "saved_model.pb").is_file()


def test_unset_hyperparameters_keep_each_methods_defaults():
    assert train.method_hyperparameters(train.TrainConfig(method="llr")) == {}
    config = train.TrainConfig(method="trades", steps=5, lam=0.1, beta=2.0)
    assert train.method_hyperparameters(config) == {"steps": 5, "beta": 2.0}
    adr = train.method_hyperparameters(train.TrainConfig(method="adr", epsilon=0.1, beta=1.0))
    assert adr == {"epsilon": 0.1, "beta": 1.0}
