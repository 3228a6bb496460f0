"""SavedModel export: a serving signature that maps float32 images to logits."""

import json
import subprocess
import sys

import numpy as np
import pytest
from conftest import HELPERS, tiny_batch, tiny_model
from test_robust_model import SubclassedNet

import keras_lfr

RELOAD = HELPERS / "export_reload.py"


def reload_in_subprocess(path, x, tmp_path):
    np.save(tmp_path / "x.npy", x)
    result = subprocess.run(
        [sys.executable, str(RELOAD), str(path), str(tmp_path / "x.npy")],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_exported_savedmodel_serves_identical_logits(tmp_path):
    x, y = tiny_batch()
    model = keras_lfr.wrap(tiny_model(), steps=1)
    model.compile(optimizer="sgd")
    model.fit(x, y, verbose=0)
    keras_lfr.export(model, tmp_path / "saved")
    served = reload_in_subprocess(tmp_path / "saved", x, tmp_path)
    assert served["keys"] == ["logits"]
    np.testing.assert_allclose(served["logits"], model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_export_subclassed_model_after_training(tmp_path):
    x, y = tiny_batch()
    model = keras_lfr.wrap(SubclassedNet(), method="standard")
    model.compile(optimizer="sgd")
    model.fit(x, y, verbose=0)
    keras_lfr.export(model, tmp_path / "saved")
    served = reload_in_subprocess(tmp_path / "saved", x, tmp_path)
    np.testing.assert_allclose(served["logits"], model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_export_of_unbuilt_subclassed_model_asks_for_input_shape(tmp_path):
    with pytest.raises(ValueError, match="input_shape"):
        keras_lfr.export(SubclassedNet(), tmp_path / "saved")
