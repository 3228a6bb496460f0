"""The benchmark scripts run and print their tables (tiny sizes; no timing is asserted)."""

import subprocess
import sys

import pytest
from conftest import REPO


@pytest.mark.parametrize(
    "module, args, expected",
    [
        (
            "benchmarks.train_step",
            ["--steps=1", "--batch_size=8", "--repeats=1", "--modes=graph"]
            + ["--methods=standard,pgd_at,lfr"],
            "LFR / PGD-AT at K=1 (graph, float32)",
        ),
        (
            "benchmarks.train_step",
            ["--steps=1", "--batch_size=8", "--repeats=1", "--modes=graph"]
            + ["--methods=trades", "--awp_gamma=0.005"],
            "| trades+awp | graph | float32 |",
        ),
        (
            "benchmarks.data_pipeline",
            ["--batch_size=6000", "--epochs=2"],
            "| resumable stream (trainers.train) |",
        ),
    ],
    ids=["train_step", "train_step_awp", "data_pipeline"],
)
def test_benchmark_runs_and_prints_its_table(module, args, expected):
    completed = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert expected in completed.stdout
