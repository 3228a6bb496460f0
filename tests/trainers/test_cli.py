"""The command-line trainers fail with one clear line, never a traceback, and write nothing."""

import os
import subprocess
import sys

import pytest
from conftest import REPO

import keras_lfr


def cli(*args, **env):
    """Runs `python -m ARGS` as a user would: with the programs' own TensorFlow log level."""
    environment = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        env={**environment, **env},
    )


@pytest.mark.parametrize(
    "args, message",
    [
        (
            ("trainers.train", "--method=lrf", "--epochs=1"),
            "flag --method=lrf: value should be one of "
            "<adr|awp|lfr|llr|lsp|pgd_at|standard|trades>",
        ),
        (
            ("trainers.train", "--epsilon=-0.3", "--epochs=1", "--train_examples=64"),
            "argument `epsilon`. Received: epsilon=-0.3",
        ),
        (("trainers.train", "--steps=0", "--epochs=1", "--train_examples=64"), "argument `steps`"),
        (
            (
                "trainers.train",
                "--dataset=fashion_mnist",
                "--download=false",
                "--data_dir=/nonexistent",
            ),
            "Could not load dataset 'fashion_mnist'",
        ),
        (
            ("trainers.evaluate", "--model=/nonexistent.keras", "--attacks=pgd41"),
            "argument `attacks`",
        ),
        (("trainers.evaluate",), "exactly one of `model`"),
        (
            (
                "trainers.studies.reproduce",
                "--budget=fast",
                "--evaluate_only",
                "--override=strong=5",
            ),
            "argument `override`. Received: ['strong']",
        ),
        (("trainers.evaluate", "--model=/nonexistent.keras"), "argument `model`"),
        (
            ("trainers.evaluate", "--zoo=mnist/linf-0.3/pgd-at-fast", "--epsilon=3"),
            "argument `epsilon`. Received: epsilon=3.0. Expected a float no larger than the "
            "pixel range clip_max - clip_min = 1.0.",
        ),
        (
            ("trainers.train", "--method=pgd_at", "--epsilon=3", "--epochs=1"),
            "argument `epsilon`. Received: epsilon=3.0. Expected a float no larger than the "
            "pixel range clip_max - clip_min = 1.0.",
        ),
    ],
    ids=[
        "method",
        "epsilon",
        "steps",
        "missing_dataset",
        "attack_name",
        "no_model",
        "bad_override",
        "missing_model",
        "evaluate_epsilon",
        "train_epsilon",
    ],
)
def test_command_line_errors_are_one_clear_line(tmp_path, args, message):
    run_dir = tmp_path / "run"
    completed = cli(*args, f"--model_dir={run_dir}") if args[0] == "trainers.train" else cli(*args)
    assert completed.returncode == 1
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr and "in user code" not in completed.stderr
    if not message.startswith("flag "):  # absl's own flag errors take two lines
        lines = completed.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), lines
    # Nothing was written: the corrected command starts afresh in the same model_dir.
    assert not run_dir.exists()


def test_a_failed_evaluation_leaves_no_cache_folder(tmp_path):
    model = tmp_path / "plain.keras"
    keras_lfr.models.small_cnn().save(model)
    cache = tmp_path / "cache"
    completed = cli(
        "trainers.evaluate",
        f"--model={model}",
        f"--data_dir={tmp_path / 'no_data'}",
        "--download=false",
        "--examples=8",
        KERAS_LFR_CACHE_DIR=str(cache),
    )
    assert completed.returncode == 1, completed.stderr[-3000:]
    assert "error: Could not load dataset 'mnist': it is not prepared under data_dir=" in (
        completed.stderr
    )
    assert "TFDS_DATA_DIR" in completed.stderr
    assert not cache.exists() or not any(cache.rglob("*"))
