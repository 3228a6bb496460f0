"""What a new user meets first: data tests that skip, a quiet TensorFlow, no stray warnings."""

import os
import pathlib
import sys
import types
import warnings

import conftest
import keras
import pytest

import keras_lfr
from keras_lfr import _quiet

# TensorFlow's start-up lines, as they reach standard error (shortened).
START_UP = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796644498.590314    6087 port.cc:153] oneDNN custom operations are on.\n"
    "I0000 00:00:1796644498.995433    6087 cpu_feature_guard.cc:227] This TensorFlow binary\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n"
    "/x/module.py:3: DeprecationWarning: a Python warning\n"
    "  import old\n"
    "W0000 00:00:1796644499.000001    6087 gpu.cc:10] a warning\n"
    "E0000 00:00:1796644503.049958    6087 cuda_platform.cc:52] failed call to cuInit\n"
)


@pytest.mark.parametrize(
    "level, kept",
    [
        (0, ["WARNIN", "I0000 ", "I0000 ", "To ena", "/x/mod", "  impo", "W0000 ", "E0000 "]),
        (1, ["/x/mod", "  impo", "W0000 ", "E0000 "]),
        (2, ["/x/mod", "  impo", "E0000 "]),
        (3, ["/x/mod", "  impo"]),
    ],
)
def test_the_start_up_log_keeps_what_its_level_asks_for(level, kept):
    """A record goes with its continuation lines; a Python warning is always kept."""
    assert [line[:6] for line in _quiet.filter_log(START_UP, level).splitlines()] == kept


def test_the_level_is_the_users_else_quiet_for_the_programs_only(monkeypatch):
    assert [_quiet.level(v) for v in (None, "", "0", "2", "3", "9", "x")] == [0, 0, 0, 2, 3, 3, 0]
    monkeypatch.setenv(_quiet.ENV, "0")
    _quiet.import_tensorflow(_quiet.PROGRAM_LEVEL)  # TensorFlow is imported: only the level
    assert os.environ[_quiet.ENV] == "0"
    monkeypatch.delenv(_quiet.ENV)
    _quiet.import_tensorflow(_quiet.PROGRAM_LEVEL)
    assert os.environ[_quiet.ENV] == "3"
    for argv, orig_argv, program in [
        (["/venv/bin/keras-lfr-train", "--help"], [], True),
        (["/r/trainers/train.py"], ["python", "-m", "trainers.train"], True),
        (["-m"], ["python", "-m", "keras_lfr.trainers.evaluate"], True),
        (["-m"], ["python", "-m", "pytest", "-q"], False),
        (["script.py"], ["python", "script.py"], False),
    ]:
        monkeypatch.setattr(sys, "argv", argv)
        monkeypatch.setattr(sys, "orig_argv", orig_argv)
        assert _quiet.running_a_program() is program, argv


def test_missing_data_fails_at_once_naming_tfds_data_dir_without_tfds_warnings(tmp_path, caplog):
    with pytest.raises(ValueError, match="Could not load dataset 'mnist'") as raised:
        keras_lfr.data.load("mnist", "test", data_dir=str(tmp_path), download=False)
    message = str(raised.value)
    assert f"not prepared under data_dir='{tmp_path}', and download=False" in message
    assert "Set `TFDS_DATA_DIR` or `data_dir`" in message
    assert not keras_lfr.data.available("mnist", str(tmp_path), download=False)
    # tfds' warning about a version folder that does not exist at all is not shown.
    assert not [r for r in caplog.records if "dataset_info.json" in r.getMessage()]


class FakeReport(types.SimpleNamespace):
    failed = True
    outcome = "failed"


def made_report(text, available, monkeypatch):
    """The report `conftest.pytest_runtest_makereport` leaves of a test that failed with `text`."""
    monkeypatch.setattr(conftest, "dataset_available", lambda name: available)
    report = FakeReport(longreprtext=text, longrepr=text)
    item = types.SimpleNamespace(path=pathlib.Path("tests/test_x.py"), location=("", 41, "t"))
    hook = conftest.pytest_runtest_makereport(item, types.SimpleNamespace(excinfo=object()))
    next(hook)
    with pytest.raises(StopIteration):
        hook.send(types.SimpleNamespace(get_result=lambda: report))
    return report


def test_a_test_that_fails_for_want_of_its_dataset_is_skipped_naming_tfds_data_dir(monkeypatch):
    monkeypatch.setenv("TFDS_DATA_DIR", "/empty")
    error = "error: Could not load dataset 'fashion_mnist': it is not prepared under ..."
    report = made_report(f"AssertionError: {error}", False, monkeypatch)
    assert report.outcome == "skipped"
    path, line, reason = report.longrepr
    assert (path, line) == ("tests/test_x.py", 41)
    assert reason == (
        "Skipped: dataset 'fashion_mnist' is neither prepared under TFDS_DATA_DIR=/empty nor "
        "downloadable (no network): set TFDS_DATA_DIR to a prepared tfds directory to run "
        "this test"
    )
    # With the data there, the same error is a failure; so is any other error.
    assert made_report(error, True, monkeypatch).outcome == "failed"
    assert made_report("AssertionError: 0.5 != 0.9", False, monkeypatch).outcome == "failed"


def test_fit_on_a_dataset_shows_no_shuffle_warning():
    """The README's *In Python* example: `fit` on `keras_lfr.data`-style datasets, no warning."""
    import tensorflow as tf

    x, y = conftest.learnable_data(32)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    cnn = conftest.tiny_model(num_classes=4)
    model = keras_lfr.wrap(cnn, method="pgd_at", epsilon=0.1, step_size=0.05, steps=1)
    model.compile(optimizer=keras.optimizers.SGD(0.01), metrics=["accuracy"])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model.fit(data, epochs=1, validation_data=data, verbose=0)
        model.fit(data, epochs=1, verbose=0, shuffle=True)  # asked for: Keras' warning
    shuffle = [w for w in caught if "`shuffle=True` was passed" in str(w.message)]
    assert len(shuffle) == 1, [str(w.message) for w in caught]
