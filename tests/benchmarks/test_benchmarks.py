"""The benchmark scripts run and print their tables (tiny sizes; no timing is asserted)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

import keras_lfr


@pytest.mark.parametrize(
    "module, args, expected",
    [
        (
            "benchmarks.train_step",
            ["--steps=1", "--batch_size=8", "--repeats=1", "--modes=graph"]
            + ["--methods=pgd_at,lfr", "--activations=relu,gelu"],
            "lfr gelu / relu (graph, float32)",
        ),
        (
            "benchmarks.train_step",
            ["--steps=1", "--batch_size=8", "--repeats=1", "--modes=graph"]
            + ["--methods=trades", "--awp_gamma=0.005"],
            "| trades+awp | relu | graph | float32 |",
        ),
        (
            "benchmarks.data_pipeline",
            ["--batch_size=6000", "--epochs=1"],
            "| resumable stream (trainers.train) |",
        ),
        (
            "benchmarks.compare_versions",
            [f"--before={REPO}", "--steps=1", "--batch_size=8", "--repeats=1"]
            + ["--dtypes=float32", "--methods=lfr"],
            "| lfr | 1 | float32 |",
        ),
        (
            "benchmarks.forward",
            ["--batch_size=4", "--calls=1", "--repeats=1"],
            "| bfloat16 |",
        ),
    ],
    ids=["train_step", "train_step_awp", "data_pipeline", "compare_versions", "forward"],
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


# The GPU check's CPU mode, where TensorFlow cannot be imported (as on the GPU
# machine): `sys.modules[name] = None` fails every import of it.
WITHOUT_TENSORFLOW = """
import json, runpy, sys
for name in ("tensorflow", "tensorflow_datasets"):
    sys.modules[name] = None
import keras_lfr
errors = {}
for name, use in (
    ("distributed", lambda: keras_lfr.distributed),
    ("tfds", lambda: keras_lfr.data.load("mnist")),
    ("export", lambda: keras_lfr.export(keras_lfr.models.small_cnn(), "saved")),
):
    try:
        use()
    except ImportError as error:
        errors[name] = str(error)
print(json.dumps(errors))
sys.argv = ["jax_gpu", *sys.argv[1:]]
try:
    runpy.run_module("benchmarks.jax_gpu", run_name="__main__")
except SystemExit as exit:  # absl's app.run ends with sys.exit
    assert not exit.code, exit.code
print(json.dumps(sorted(m for m in sys.modules if m.startswith("tensorflow") and sys.modules[m])))
"""


def noise_mnist(path, train, test):
    """An MNIST-shaped .npz of noise images with random labels (`--data_npz`'s layout)."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, count in (("train", train), ("test", test)):
        arrays[f"x_{split}"] = rng.integers(0, 256, (count, 28, 28, 1), dtype=np.uint8)
        arrays[f"y_{split}"] = rng.integers(0, 10, count, dtype=np.uint8)
    np.savez(path, **arrays)
    return path


def test_jax_gpu_check_runs_on_the_cpu_without_tensorflow(tmp_path):
    pytest.importorskip("jax")
    data = noise_mnist(tmp_path / "mnist.npz", train=64, test=16)
    out = tmp_path / "jax_gpu.json"
    args = ["--methods=lfr", "--steps=1", "--dtypes=float32", "--repeats=1"]
    args += ["--big_batch_sizes=", "--epochs=1", "--train_examples=64", "--train_steps=1"]
    args += ["--examples=16", f"--data={data}", f"--out={out}"]
    completed = subprocess.run(
        [sys.executable, "-c", WITHOUT_TENSORFLOW, *args],
        cwd=REPO,
        env={**os.environ, "KERAS_BACKEND": "jax"},
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    lines = completed.stdout.strip().splitlines()
    errors, loaded = json.loads(lines[0]), json.loads(lines[-1])
    # keras_lfr's TensorFlow parts say what to install; nothing imported TensorFlow.
    assert sorted(errors) == ["distributed", "export", "tfds"]
    assert all("keras_lfr[tensorflow]" in message for message in errors.values())
    assert loaded == []
    result = json.loads(out.read_text())
    assert result["backend"] == "jax"
    methods = [row["method"] for row in result["steps"]]
    assert methods == ["lfr", "pgd_at (plain JAX)"]
    assert all(row["ms"] > 0 for row in result["steps"])
    (training,) = result["training"]
    assert np.isfinite(training["final_loss"])
    assert training["pgd40_examples"] == 16
    assert 0 <= training["pgd40_accuracy"] <= training["clean_accuracy"] <= 1
    assert training["projected_100_epochs_minutes"] > 0


def test_square_seeds_counts_the_seeds_that_break_each_image(tmp_path):
    data = noise_mnist(tmp_path / "mnist.npz", train=0, test=4)
    out = tmp_path / "square.json"
    args = ["--mode=square", "--models=mnist/linf-0.3/pgd-at-fast", "--images=1,3", "--seeds=2"]
    args += ["--queries=3", f"--data_npz={data}", f"--out={out}", "--cache_dir="]
    completed = subprocess.run(
        [sys.executable, "-m", "benchmarks.mixed_precision", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    rows = json.loads(out.read_text())["rows"]
    assert [row["image"] for row in rows] == [1, 3]
    # Noise images with random labels: one misclassified when clean is broken from every seed.
    images = np.load(data)["x_test"][[1, 3]].astype("float32") / 255.0
    wrong = (
        np.argmax(keras_lfr.zoo.load("mnist/linf-0.3/pgd-at-fast")(images), axis=1)
        != (np.load(data)["y_test"][[1, 3]])
    )
    assert wrong.any()
    for row, misclassified in zip(rows, wrong, strict=True):
        for search in ("float32", "bfloat16"):  # the precisions Square searched in
            assert 0 <= row[f"broken_{search}"] <= 2
            assert row[f"broken_{search}"] == 2 or not misclassified
    assert "| mnist/linf-0.3/pgd-at-fast | 3 | 2 |" in completed.stdout
