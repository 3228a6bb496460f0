"""A run directory survives kills: every file loadable, and resuming equals an uninterrupted run."""

import json
import os
import pathlib
import subprocess
import sys

import h5py
import keras
import numpy as np
import tensorflow as tf
from conftest import HELPERS, REPO

import keras_lfr  # noqa: F401  (registers the classes a .keras file names)
from trainers import runs

TRAIN_RUN = HELPERS / "train_run.py"


def run_training(workdir, *kill_at):
    return subprocess.run(
        [sys.executable, str(TRAIN_RUN), str(workdir), *map(str, kill_at)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )


def final_weights(workdir):
    return keras.models.load_model(runs.RunDir(workdir).model).get_weights()


def check_every_file_loads(workdir):
    """What a killed run leaves is loadable: the outputs present and the latest checkpoint."""
    run = runs.RunDir(workdir)
    if os.path.exists(run.model):
        keras.models.load_model(run.model)
    if os.path.exists(run.metrics):
        json.loads(pathlib.Path(run.metrics).read_text())
    epoch, state = run.latest()
    if state is not None:  # every array of the checkpoint reads back
        with h5py.File(state["weights"], "r") as f:
            f.visititems(lambda _, item: item[()] if isinstance(item, h5py.Dataset) else None)
    return epoch


# Kills, one after the other, in the same run: mid-epoch, while a checkpoint's
# weights are half written, before a finished checkpoint is renamed into
# place, and before each output (model.keras, the SavedModel, metrics.json)
# replaces the old one. After each, the next invocation resumes.
KILL_CHAIN = (
    ("batch:1:1", 1),  # SIGKILL mid-epoch 2: resume from epoch 1
    ("weights:epoch-0002", 1),  # torn checkpoint of epoch 2: still epoch 1
    ("replace:epoch-0003", 2),  # epoch 3's checkpoint complete but not renamed
    ("replace:model.keras", 3),
    ("replace:export", 3),
    ("replace:metrics.json", 3),
)


def test_killed_run_resumes_and_matches_an_uninterrupted_run(tmp_path):
    resumed = tmp_path / "resumed"
    for kill_point, epoch in KILL_CHAIN:
        killed = run_training(resumed, kill_point)
        assert killed.returncode == -9, (kill_point, killed.stderr[-2000:])
        assert check_every_file_loads(resumed) == epoch, kill_point
    finished = run_training(resumed)
    assert finished.returncode == 0, finished.stderr[-3000:]
    straight = run_training(tmp_path / "straight")
    assert straight.returncode == 0, straight.stderr[-3000:]
    model = keras.models.load_model(resumed / "model.keras")
    assert int(model.optimizer.iterations) == 3 * 4  # 3 epochs of 4 batches, none lost or repeated
    history = json.loads((resumed / "metrics.json").read_text())["history"]
    assert len(history["loss"]) == 3  # the whole run's history, across the resumes
    # Bit-identical to the uninterrupted run (which also shows the training is
    # deterministic: the resumed run drew its data and noise in seven processes).
    for r, s in zip(final_weights(resumed), final_weights(tmp_path / "straight"), strict=True):
        np.testing.assert_array_equal(r, s)
    served = tf.saved_model.load(str(resumed / "export"))
    x = tf.zeros([2, 28, 28, 1])
    np.testing.assert_allclose(
        served.signatures["serving_default"](images=x)["logits"], model.unwrap()(x), atol=1e-5
    )


def test_run_dir_finds_the_run_of_its_model_and_nothing_else(tmp_path):
    from trainers import config as config_lib

    run = runs.RunDir(tmp_path / "run")
    assert runs.RunDir.of_model(run.model) is None  # no run.json yet
    run.claim(config_lib.make("fast", method="trades", dataset="fashion_mnist"))
    found = runs.RunDir.of_model(run.model)
    assert found.path == run.path and found.stored_config()["dataset"] == "fashion_mnist"
    assert runs.RunDir.of_model(str(tmp_path / "run" / "other.keras")) is None
    # Every file of a run lies in its directory, under the names only RunDir knows.
    paths = [run.run_file, run.checkpoints, run.model, run.metrics, run.export_dir]
    assert [os.path.dirname(p) for p in paths] == [run.path] * len(paths)
    assert len(set(paths + [run.tensorboard, run.evaluation])) == 7
