"""The benchmark scripts run and print their tables (tiny sizes; no timing is asserted)."""

import json
import os
import subprocess
import sys

import numpy as np
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
        (
            "benchmarks.compare_versions",
            [f"--before={REPO}", "--steps=1", "--batch_size=8", "--repeats=1"]
            + ["--dtypes=float32"],
            "| lfr | 1 | float32 |",
        ),
        (
            "benchmarks.step_parts",
            ["--steps=1", "--repeats=1"],
            "| bfloat16 |",
        ),
    ],
    ids=["train_step", "train_step_awp", "data_pipeline", "compare_versions", "step_parts"],
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


def test_jax_gpu_check_runs_on_the_cpu(tmp_path):
    # The GPU check (benchmarks/device_run.sh) on a tiny slice, on the CPU:
    # it must not need TensorFlow's modules or a GPU to run at all.
    pytest.importorskip("jax")
    rng = np.random.default_rng(0)
    data = tmp_path / "mnist.npz"
    np.savez(
        data,
        x_train=rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8),
        y_train=rng.integers(0, 10, 64, dtype=np.uint8),
        x_test=rng.integers(0, 256, (16, 28, 28, 1), dtype=np.uint8),
        y_test=rng.integers(0, 10, 16, dtype=np.uint8),
    )
    out = tmp_path / "jax_gpu.json"
    args = ["--methods=standard,lfr", "--steps=1", "--dtypes=float32", "--repeats=1"]
    args += ["--big_batch_sizes=", "--epochs=1", "--train_examples=64", "--train_steps=1"]
    args += ["--examples=16"]
    args += [f"--data={data}", f"--out={out}"]
    subprocess.run(
        [sys.executable, "-m", "benchmarks.jax_gpu", *args],
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        check=True,
        capture_output=True,
        timeout=600,
    )
    result = json.loads(out.read_text())
    assert result["backend"] == "jax"
    methods = [row["method"] for row in result["steps"]]
    assert methods == ["standard", "lfr", "pgd_at (plain JAX)"]
    assert all(row["ms"] > 0 for row in result["steps"])
    (training,) = result["training"]
    assert training["pgd40_examples"] == 16 and 0 <= training["pgd40_accuracy"] <= 1
    assert training["projected_100_epochs_minutes"] > 0
