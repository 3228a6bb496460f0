"""Mixed precision: the attacks search in bfloat16, every verdict is float32's.

`tests/helpers/mixed_precision.py` computes the same checks on Keras'
TensorFlow backend (in this process) and on JAX (in its own process, Keras
fixing its backend at import), on tiny models and a few images: a model whose
bfloat16 copy misclassifies every image that float32 classifies right and no
attack can break, an easy case, a model whose weights change between calls,
and the `AttackEvaluation` callback during `fit`.
"""

import functools
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import tiny_batch, tiny_model
from helpers import mixed_precision

import keras_lfr
from keras_lfr import attacks, evaluation

BACKENDS = ("tensorflow", "jax")


@pytest.fixture(scope="module")
def values(tmp_path_factory):
    """`{backend: the helper's values}`, this process's TensorFlow and a JAX process's."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("compares this process's TensorFlow values with a JAX process's")
    found = {"tensorflow": mixed_precision.compute()}
    pytest.importorskip("jax")
    out = tmp_path_factory.mktemp("mixed_precision") / "jax.json"
    jax_run = subprocess.run(
        [sys.executable, mixed_precision.__file__, "jax", str(out)],
        env={**os.environ, "KERAS_BACKEND": "jax"},
        capture_output=True,
        text=True,
    )
    assert jax_run.returncode == 0, jax_run.stderr[-4000:]
    found["jax"] = json.loads(out.read_text())
    return found


@pytest.mark.parametrize("backend", BACKENDS)
def test_an_image_counts_as_broken_only_if_float32_confirms_it(values, backend):
    found = values[backend]
    assert found["backend"] == backend
    # By construction: bfloat16 misclassifies every image, float32 none, at any input.
    assert found["float32_predictions"] == [mixed_precision.LABEL] * 6
    assert found["bfloat16_predictions"] == [0] * 6
    for precision in evaluation.PRECISIONS:
        for loop in ("every", "cascade"):
            # A verdict taken from the bfloat16 search would read "000000".
            assert found[f"disagreeing/{precision}/{loop}"] == "111111", (precision, loop)


@pytest.mark.parametrize("backend", BACKENDS)
def test_mixed_verdicts_are_float32s_judgement_of_the_bfloat16_search(values, backend):
    found = values[backend]
    by_hand = found["easy/judged_by_hand"]
    assert found["easy/mixed"] == by_hand
    assert 0 < sum(by_hand) < len(by_hand)  # the attack breaks some images, not all
    # An easy case: the bfloat16 search finds what the float32 one does.
    assert found["easy/float32"] == found["easy/mixed"]


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_bfloat16_copy_has_the_weights_and_follows_them_between_calls(values, backend):
    found = values[backend]
    assert found["same_weights"]
    assert found["copy_dtype"] == "bfloat16"
    assert found["copy_policies"] == ["float32", "mixed_bfloat16"]  # the input, the layers
    # After the original's weights change, a copy searched with the old ones
    # would move the image to 0.25, which the new weights classify right.
    assert found["threshold/before"] == found["threshold/after"] == [False]


@pytest.mark.parametrize("backend", BACKENDS)
def test_attack_evaluation_in_mixed_precision_during_fit(values, backend):
    found = values[backend]
    for precision in evaluation.PRECISIONS:
        (logged,) = found[f"callback/{precision}"]
        assert logged == pytest.approx(found[f"callback/{precision}/by_hand"])
        assert 0 < logged < 1


def test_a_bfloat16_copy_round_trips_its_weights_exactly():
    keras.utils.set_random_seed(4)
    for cnn in (
        keras_lfr.models.small_cnn(dropout=0.0),
        keras_lfr.models.small_cnn(dropout=0.0, dtype="mixed_bfloat16"),  # float32 logits layer
    ):
        copy = keras_lfr.models.bfloat16_copy(cnn)
        assert {layer.dtype_policy.name for layer in copy.layers[1:]} == {"mixed_bfloat16"}
        assert [w.dtype for w in copy.weights] == [w.dtype for w in cnn.weights]
        for a, b in zip(copy.get_weights(), cnn.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        back = keras_lfr.models.to_float32(copy)
        for a, b in zip(back.get_weights(), cnn.get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
        x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
        assert keras.backend.standardize_dtype(copy(x).dtype) == "bfloat16"
        np.testing.assert_allclose(back(x), cnn(x), rtol=1e-5, atol=1e-5)
    # A RobustModel is copied as its classifier.
    robust = keras_lfr.wrap(tiny_model(), method="standard")
    copy = keras_lfr.models.bfloat16_copy(robust)
    for a, b in zip(copy.get_weights(), robust.unwrap().get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)


def test_mixed_precision_needs_a_model_it_can_copy_and_a_known_precision():
    x, y = tiny_batch()
    fgsm = functools.partial(attacks.fgsm, epsilon=0.1)
    with pytest.raises(ValueError, match=r"`precision`.*'half'.*'float32', 'mixed'"):
        evaluation.correct_under(tiny_model(), fgsm, precision="half")
    with pytest.raises(ValueError, match=r"`precision`.*'bfloat16'"):
        evaluation.robust_accuracy(tiny_model(), [(x, y)], {"fgsm": fgsm}, precision="bfloat16")
    with pytest.raises(ValueError, match=r"`precision`.*'fp16'"):
        keras_lfr.callbacks.AttackEvaluation(x, y, precision="fp16")
    with pytest.raises(ValueError, match=r"`model`.*functional or Sequential"):
        evaluation.correct_under(lambda x, training=False: x[:, 0, 0, :], fgsm, precision="mixed")


def test_float32_and_mixed_chunks_never_mix(tmp_path):
    model = tiny_model()
    x, y = tiny_batch(batch=6)
    chosen = {"fgsm": functools.partial(attacks.fgsm, epsilon=0.05)}

    def load_chunk(start, stop):
        return [(x[start:stop], y[start:stop])]

    def run(precision, folder):
        return evaluation.resumable_robust_accuracy(
            model, load_chunk, chosen, 6, chunk_size=3, cache_dir=str(folder), verbose=0,
            precision=precision,
        )  # fmt: skip

    mixed = run("mixed", tmp_path / "mixed")
    chunk = json.loads((tmp_path / "mixed" / "chunk-000000-000003.json").read_text())
    assert chunk["precision"] == "mixed"
    assert run("mixed", tmp_path / "mixed")["per_example"] == mixed["per_example"]  # resumed
    with pytest.raises(ValueError, match=r"`cache_dir`.*precision='mixed'.*precision='float32'"):
        run("float32", tmp_path / "mixed")
    run("float32", tmp_path / "float32")
    chunk = json.loads((tmp_path / "float32" / "chunk-000000-000003.json").read_text())
    assert "precision" not in chunk  # float32 chunks keep their form (the zoo's shipped ones)
    with pytest.raises(ValueError, match=r"precision='float32'.*Expected.*precision='mixed'"):
        run("mixed", tmp_path / "float32")
