"""MultiWorkerMirroredStrategy: two local worker processes match one process."""

import socket
import subprocess
import sys

import numpy as np
from conftest import HELPERS, REPO

SCRIPT = HELPERS / "multi_worker_run.py"


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def load(path):
    with np.load(path) as data:
        weights = [data[f"arr_{i}"] for i in range(len(data.files) - 2)]
        return float(data["loss"]), int(data["steps"]), weights


def test_two_workers_match_a_single_process(tmp_path):
    single = subprocess.run(
        [sys.executable, str(SCRIPT), str(tmp_path / "single.npz")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    ports = [str(p) for p in free_ports(2)]
    workers = [
        subprocess.Popen(
            [sys.executable, str(SCRIPT), str(tmp_path / f"worker{i}.npz"), str(i), *ports],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    for worker in workers:
        _, stderr = worker.communicate(timeout=300)
        assert worker.returncode == 0, stderr[-3000:]
    loss, steps, expected = load(tmp_path / "single.npz")
    assert steps == 3
    for i in range(2):
        worker_loss, worker_steps, weights = load(tmp_path / f"worker{i}.npz")
        assert worker_steps == 3
        np.testing.assert_allclose(worker_loss, loss, rtol=1e-5)
        for w, e in zip(weights, expected, strict=True):
            np.testing.assert_allclose(w, e, rtol=1e-4, atol=1e-6)
