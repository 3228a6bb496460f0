"""Mixed precision: gradient attacks search in bfloat16, Square in float32; verdicts are float32's.

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
from keras_lfr.evaluation import running

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
    first = tmp_path / "mixed" / "chunk-000000-000003.json"
    chunk = json.loads(first.read_text())
    assert (chunk["precision"], chunk["search"]) == ("mixed", {"fgsm": "bfloat16"})
    assert run("mixed", tmp_path / "mixed")["per_example"] == mixed["per_example"]  # resumed
    # A chunk whose attack searched in another precision is not read back as this search's.
    first.write_text(json.dumps({**chunk, "search": {"fgsm": "float32"}}))
    with pytest.raises(ValueError, match=r"`cache_dir`.*searching \{'fgsm': 'float32'\}"):
        run("mixed", tmp_path / "mixed")
    # A mixed chunk that records no search searched every attack in bfloat16, Square too.
    square = {"square": functools.partial(attacks.square, epsilon=0.05, queries=5)}
    old = {("square" if k == "fgsm" else k): v for k, v in chunk.items() if k != "search"}
    first.write_text(json.dumps(old))
    with pytest.raises(ValueError, match=r"searching \{'square': 'bfloat16'\}.*'float32'\}"):
        evaluation.resumable_robust_accuracy(
            model, load_chunk, square, 6, chunk_size=3, cache_dir=str(tmp_path / "mixed"),
            verbose=0, precision="mixed",
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"`cache_dir`.*precision='mixed'.*precision='float32'"):
        run("float32", tmp_path / "mixed")
    run("float32", tmp_path / "float32")
    chunk = json.loads((tmp_path / "float32" / "chunk-000000-000003.json").read_text())
    assert "precision" not in chunk  # float32 chunks keep their form (the zoo's shipped ones)
    with pytest.raises(ValueError, match=r"precision='float32'.*Expected.*precision='mixed'"):
        run("mixed", tmp_path / "float32")


@pytest.mark.parametrize(
    ("attack", "precision", "expected"),
    [
        (attacks.apgd, "mixed", "bfloat16"),
        (functools.partial(attacks.fab, epsilon=0.3), "mixed", "bfloat16"),
        (attacks.square, "mixed", "float32"),
        (
            functools.partial(functools.partial(attacks.square, queries=10), seed=3),
            "mixed",
            "float32",
        ),
        (attacks.apgd, "float32", "float32"),
        (attacks.square, "float32", "float32"),
    ],
)
def test_square_searches_in_float32_under_mixed_precision(attack, precision, expected):
    assert evaluation.search_precision(attack, precision) == expected


def test_the_autoattack_protocol_under_mixed_precision_searches_square_in_float32():
    found = {
        name: evaluation.search_precision(attack, "mixed")
        for name, attack in evaluation.protocol("autoattack").items()
    }
    assert found == {
        "apgd_ce": "bfloat16",
        "apgd_t": "bfloat16",
        "fab_t": "bfloat16",
        "square": "float32",
    }
    assert evaluation.search_plan(evaluation.protocol("autoattack"), "mixed") == found
    with pytest.raises(ValueError, match=r"`precision`.*'half'"):
        evaluation.search_precision(attacks.apgd, "half")


def test_each_attack_searches_the_model_its_precision_names(monkeypatch):
    seen = {}

    def spy(name):
        def attack(model, x, labels):
            seen[name] = model  # at trace time: the model the attack searches
            return x

        return attack

    gradient, score = spy("gradient"), spy("score")
    monkeypatch.setattr(running, "_SCORE_SEARCHES", (score,))
    model = tiny_model()
    x, y = tiny_batch(batch=4)
    for precision in evaluation.PRECISIONS:
        seen.clear()
        _, compiled = running._compile(model, {"g": gradient, "s": score}, precision)
        for correct in compiled.values():
            correct(x, y)
        assert seen["score"] is model, precision
        if precision == "mixed":
            assert isinstance(seen["gradient"], running._Bfloat16Search)
            assert seen["gradient"].source is model
        else:
            assert seen["gradient"] is model


def test_a_mixed_evaluation_of_square_alone_needs_no_bfloat16_copy():
    # A plain callable cannot be copied in bfloat16; Square alone does not ask for a copy.
    model = tiny_model()
    x, y = tiny_batch(batch=4)
    square = functools.partial(attacks.square, epsilon=0.05, queries=5)
    mixed = evaluation.correct_under(lambda x, training=False: model(x), square, "mixed")
    assert np.array_equal(mixed(x, y), evaluation.correct_under(model, square, "float32")(x, y))
