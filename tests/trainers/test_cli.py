"""The command-line trainers fail with one clear line, never a traceback."""

import subprocess
import sys

import pytest
from conftest import REPO


def cli(*args):
    return subprocess.run(
        [sys.executable, "-m", *args], cwd=REPO, capture_output=True, text=True, timeout=600
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
            ("trainers.reproduce", "--budget=fast", "--evaluate_only", "--override=strong=5"),
            "argument `override`. Received: ['strong']",
        ),
        (("trainers.evaluate", "--model=/nonexistent.keras"), "argument `model`"),
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
    ],
)
def test_command_line_errors_are_one_clear_line(tmp_path, args, message):
    completed = cli(*args, f"--model_dir={tmp_path}") if args[0] == "trainers.train" else cli(*args)
    assert completed.returncode == 1
    assert message in completed.stderr
    assert "Traceback" not in completed.stderr
