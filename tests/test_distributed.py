"""One global batch gives the same step on one and on two replicas."""

import pathlib
import subprocess
import sys

import numpy as np
import pytest

SCRIPT = pathlib.Path(__file__).with_name("mirrored_step.py")


def run_step(tmp_path, replicas, jit, method):
    out = tmp_path / f"{method}_{replicas}_{jit}.npz"
    subprocess.run(
        [sys.executable, str(SCRIPT), str(replicas), str(int(jit)), method, str(out)],
        check=True,
        capture_output=True,
        text=True,
        timeout=600,
    )
    with np.load(out) as data:
        assert float(data["moved"]) > 0, "the step did not change the weights"
        expected_xla = "none" if not jit else ("step" if replicas == 1 else "gradients")
        assert str(data["xla"]) == expected_xla
        return float(data["loss"]), [data[f"arr_{i}"] for i in range(len(data.files) - 3)]


@pytest.mark.parametrize("method, jit", [("lfr", False), ("lfr", True), ("standard", False)])
def test_two_replicas_match_one(tmp_path, method, jit):
    loss_1, weights_1 = run_step(tmp_path, 1, jit, method)
    loss_2, weights_2 = run_step(tmp_path, 2, jit, method)
    np.testing.assert_allclose(loss_2, loss_1, rtol=1e-5)
    assert len(weights_1) == len(weights_2) == 14
    for w1, w2 in zip(weights_1, weights_2, strict=True):
        np.testing.assert_allclose(w2, w1, rtol=1e-4, atol=1e-6)
