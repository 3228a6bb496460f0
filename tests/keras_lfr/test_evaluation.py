"""Robust accuracy, protocols, sanity checks and the attack-evaluation callback."""

import functools
import hashlib
import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_batch, tiny_model

import keras_lfr
from keras_lfr import attacks, evaluation


def test_robust_accuracy_counts_per_attack_and_worst_case():
    model = tiny_model()
    x, y = tiny_batch(batch=32)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)
    chosen = {
        "identity": lambda m, x, y: x,
        "pgd": functools.partial(attacks.pgd, epsilon=0.2, step_size=0.05, steps=3),
    }
    results = evaluation.robust_accuracy(model, ds, chosen, verbose=0)
    predict = lambda inputs: np.argmax(model(inputs), axis=1)  # noqa: E731
    clean = predict(x) == y
    pgd = predict(attacks.pgd(model, x, y, epsilon=0.2, step_size=0.05, steps=3)) == y
    assert results["examples"] == 32
    assert results["clean"] == results["identity"] == pytest.approx(clean.mean())
    assert results["worst_case"] == pytest.approx((clean & pgd).mean())
    assert results["worst_case"] <= min(results["clean"], results["pgd"])
    assert "per_example" not in results
    verdicts = evaluation.robust_accuracy(model, ds, chosen, verbose=0, per_example=True)
    assert verdicts["per_example"] == evaluation.flags_to_string(clean & pgd)


def test_chunked_evaluation_joins_the_chunks_verdicts_and_reports_its_progress(tmp_path, capsys):
    model = tiny_model()
    x, y = tiny_batch(batch=20)
    chosen = {"fgsm": functools.partial(attacks.fgsm, epsilon=0.1)}

    def load_chunk(start, stop):
        return tf.data.Dataset.from_tensor_slices((x[start:stop], y[start:stop])).batch(8)

    results = evaluation.resumable_robust_accuracy(
        model, load_chunk, chosen, 20, chunk_size=8, cache_dir=str(tmp_path)
    )
    clean = np.argmax(model(x), axis=1) == y
    robust = np.argmax(model(attacks.fgsm(model, x, y, epsilon=0.1)), axis=1) == y
    assert results["per_example"] == evaluation.flags_to_string(clean & robust)
    assert results["worst_case"] == pytest.approx((clean & robust).mean())
    lines = capsys.readouterr().out.strip().splitlines()
    done = [line.split(" [")[0] for line in lines]
    assert done == ["8/20 images", "16/20 images", "20/20 images"]
    assert lines[-1].endswith("; about 0 min left") and "[" + "=" * 30 + "]" in lines[-1]
    # A chunk written by an earlier version has no verdicts: the join is left out.
    first = tmp_path / "chunk-000000-000008.json"
    old = {k: v for k, v in json.loads(first.read_text()).items() if k != "per_example"}
    first.write_text(json.dumps(old))
    again = evaluation.resumable_robust_accuracy(
        model, load_chunk, chosen, 20, chunk_size=8, cache_dir=str(tmp_path), verbose=0
    )
    assert "per_example" not in again
    assert again["worst_case"] == results["worst_case"]


def test_a_larger_evaluation_never_reads_a_smaller_ones_short_last_chunk(tmp_path):
    model = tiny_model()
    x, y = tiny_batch(batch=16)
    chosen = {"fgsm": functools.partial(attacks.fgsm, epsilon=0.1)}

    def load_chunk(start, stop):
        return tf.data.Dataset.from_tensor_slices((x[start:stop], y[start:stop])).batch(8)

    def evaluate(n, cache_dir):
        return evaluation.resumable_robust_accuracy(
            model, load_chunk, chosen, n, chunk_size=8, cache_dir=cache_dir, verbose=0
        )

    evaluate(12, str(tmp_path))  # its last chunk holds images 8 to 12 only
    grown = evaluate(16, str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "chunk-000000-000008.json",
        "chunk-000008-000012.json",
        "chunk-000008-000016.json",
    ]
    fresh = evaluate(16, None)
    assert grown["examples"] == 16 and len(grown["per_example"]) == 16
    assert grown["per_example"] == fresh["per_example"]
    assert grown["worst_case"] == fresh["worst_case"]


def test_cache_key_digests_the_version_settings_and_weights():
    model = tiny_model()
    expected = hashlib.sha256(json.dumps([keras_lfr.__version__, "mnist", 0.3]).encode())
    for weight in model.weights:
        expected.update(keras.ops.convert_to_numpy(weight).tobytes())
    key = evaluation.cache_key(model, "mnist", 0.3)
    assert key == expected.hexdigest()[:16]
    assert evaluation.cache_key(model, "mnist", 0.2) != key
    model.weights[0].assign(model.weights[0] + 1e-3)
    assert evaluation.cache_key(model, "mnist", 0.3) != key
    with pytest.raises(ValueError, match="model=.*weights"):
        evaluation.cache_key(lambda x, training=False: x, "mnist", 0.3)


@pytest.mark.parametrize(
    "a, b, only_a, only_b",
    [
        ("1101", "1001", 1, 0),
        ("1111", "1111", 0, 0),  # no discordant image: no evidence either way
        ("0000", "1111", 0, 4),
        ([True, False, True], [False, True, True], 1, 1),
    ],
    ids=["one_better", "identical", "all_worse", "booleans"],
)
def test_paired_comparison_counts_the_discordant_images(a, b, only_a, only_b):
    result = evaluation.paired_comparison(a, b)
    n = len(a)
    assert (result["only_a"], result["only_b"], result["examples"]) == (only_a, only_b, n)
    assert result["difference"] == pytest.approx((only_a - only_b) / n)
    low, high = result["interval"]
    assert low <= result["difference"] <= high
    if only_a == only_b:
        assert result["p_value"] == 1.0


def test_paired_comparison_matches_scipy_and_the_paired_standard_error():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a = rng.uniform(size=1000) < 0.92
    b = np.where(rng.uniform(size=1000) < 0.05, ~a, a)  # about 50 images flipped
    result = evaluation.paired_comparison(evaluation.flags_to_string(a), b)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    exact = stats.binomtest(only_a, only_a + only_b, 0.5).pvalue
    assert result["p_value"] == pytest.approx(exact, rel=1e-9)
    d = a.astype(float) - b.astype(float)
    half = stats.norm.ppf(0.975) * d.std() / np.sqrt(len(d))
    assert result["interval"] == pytest.approx((d.mean() - half, d.mean() + half))
    assert result["accuracy_a"] - result["accuracy_b"] == pytest.approx(result["difference"])


def test_paired_comparison_needs_the_same_images():
    with pytest.raises(ValueError, match="verdicts of 3 and 2 examples"):
        evaluation.paired_comparison("101", "10")
    with pytest.raises(ValueError, match="verdicts of 0 and 0 examples"):
        evaluation.paired_comparison("", "")


@pytest.mark.parametrize("one_hot", [False, True])
def test_confidence_matches_numpy_and_scales_with_the_logits(one_hot):
    x, y = tiny_batch(batch=64)
    logits = np.random.default_rng(1).normal(scale=3.0, size=(64, 10)).astype("float32")
    logits[:5, y[:5]] += 20.0  # some confident, some misclassified

    def model(inputs, training=False):
        del inputs, training
        return tf.constant(logits)

    labels = np.eye(10, dtype="float32")[y] if one_hot else y
    result = evaluation.confidence(model, x, labels)
    true = logits[np.arange(64), y]
    others = np.where(np.eye(10, dtype=bool)[y], -np.inf, logits).max(axis=1)
    shifted = logits - logits.max(axis=1, keepdims=True)
    ce = np.log(np.exp(shifted).sum(axis=1)) - shifted[np.arange(64), y]
    assert result["clean_ce"] == pytest.approx(ce.mean(), rel=1e-5)
    assert result["margin_median"] == pytest.approx(np.median(true - others), rel=1e-5)
    assert result["logit_std"] == pytest.approx(logits.std(axis=1).mean(), rel=1e-5)
    assert (true - others < 0).any() and (true - others > 0).any()
    # Shrinking the logits shrinks margins and spread alike (what a gradient
    # penalty can do instead of making the model robust).
    scaled = evaluation.confidence(lambda inputs, training=False: tf.constant(logits / 4), x, y)
    assert scaled["margin_median"] == pytest.approx(result["margin_median"] / 4, rel=1e-5)
    assert scaled["logit_std"] == pytest.approx(result["logit_std"] / 4, rel=1e-5)


def test_cascade_finds_the_same_worst_case_and_reports_cumulative_accuracy(trained):
    cnn, x, y = trained
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    chosen = {
        "fgsm": functools.partial(attacks.fgsm, epsilon=0.15),
        "pgd": functools.partial(
            attacks.pgd, epsilon=0.15, step_size=0.03, steps=10, random_start=False
        ),
    }
    full = evaluation.robust_accuracy(cnn, ds, chosen, verbose=0)
    cascade = evaluation.robust_accuracy(cnn, ds, chosen, cascade=True, verbose=0)
    assert 0 < full["worst_case"] < full["clean"]  # the attacks bite, not all of them
    assert cascade["worst_case"] == pytest.approx(full["worst_case"])
    assert cascade["clean"] == full["clean"]
    # Cumulative: after FGSM, then after FGSM and PGD.
    assert cascade["fgsm"] <= min(full["clean"], full["fgsm"])
    assert cascade["clean"] >= cascade["fgsm"] >= cascade["pgd"] == cascade["worst_case"]


def test_each_attack_is_traced_once_whatever_the_batch_sizes_and_chunks():
    # A cascade hands each attack a different number of survivors per batch;
    # tracing APGD or Square once per size would cost seconds each time.
    model = tiny_model()
    x, y = tiny_batch(batch=23)
    traces = []

    def counting(m, x, y):
        traces.append(x.shape[0])  # Python runs only while tracing
        return attacks.fgsm(m, x, y, epsilon=0.1)

    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(10)  # 10, 10, 3
    for cascade in (False, True):
        traces.clear()
        results = evaluation.robust_accuracy(
            model, ds, {"fgsm": counting}, cascade=cascade, verbose=0
        )
        assert traces == [None], cascade
        clean = np.argmax(model(x), axis=1) == y
        robust = np.argmax(model(attacks.fgsm(model, x, y, epsilon=0.1)), axis=1) == y
        assert results["worst_case"] == pytest.approx((clean & robust).mean())
    # A chunked evaluation compiles once for all its chunks, not once per chunk.
    traces.clear()
    chunked = evaluation.resumable_robust_accuracy(
        model,
        lambda start, stop: ds.unbatch().skip(start).take(stop - start).batch(stop - start),
        {"fgsm": counting},
        23,
        chunk_size=10,
        verbose=0,
    )
    assert traces == [None]
    assert chunked["worst_case"] == pytest.approx((clean & robust).mean())


def test_progress_bar_ends_on_the_totals(capsys):
    model = tiny_model()
    x, y = tiny_batch(batch=30)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(20)  # batches of 20 and 10
    results = evaluation.robust_accuracy(model, ds, {"identity": lambda m, x, y: x}, verbose=1)
    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    assert f"clean: {results['clean']:.4f}" in last_line


def test_protocols_name_the_papers_attacks():
    assert sorted(evaluation.protocol("paper")) == ["ddn", "fgsm", "mi_fgsm", "pgd40"]
    assert sorted(evaluation.protocol("strong")) == ["apgd_ce", "apgd_t", "square"]
    # AutoAttack's standard cascade, in its order, with its settings.
    autoattack = evaluation.protocol("autoattack", epsilon=0.1, queries=100)
    assert list(autoattack) == ["apgd_ce", "apgd_t", "fab_t", "square"]
    assert autoattack["fab_t"].keywords == {
        "steps": 100,
        "num_targets": 9,
        "epsilon": 0.1,
        "clip_min": 0.0,
        "clip_max": 1.0,
    }
    assert autoattack["square"].keywords["queries"] == 100
    with pytest.raises(ValueError, match="argument `protocol`"):
        evaluation.protocol("weak")


def test_the_registry_holds_each_protocols_version_queries_and_the_defaults():
    # Records store these versions: a change must come with new attacks.
    versions = {name: p.version for name, p in evaluation.PROTOCOLS.items()}
    assert versions == {"paper": 1, "strong": 2, "autoattack": 1}
    assert evaluation.QUERY_PROTOCOLS == ("strong", "autoattack")
    for name, entry in evaluation.PROTOCOLS.items():
        assert entry.name == name and entry.attack_names == tuple(evaluation.protocol(name))
        if entry.takes_queries:
            assert entry(queries=7)["square"].keywords["queries"] == 7
        else:
            with pytest.raises(TypeError):
                entry(queries=7)
    assert (evaluation.DEFAULT_PROTOCOL, evaluation.RELEASE_PROTOCOL) == ("strong", "autoattack")
    assert evaluation.RELEASE_PROTOCOL in evaluation.QUERY_PROTOCOLS


def test_protocol_settings_are_pinned():
    # Every published number rests on these settings: a change must be deliberate.
    ball = {"epsilon": 0.3, "clip_min": 0.0, "clip_max": 1.0}
    paper = {name: attack.keywords for name, attack in evaluation.protocol("paper").items()}
    assert paper == {
        "fgsm": {**ball, "random_start": True},
        "pgd40": {**ball, "random_start": True, "step_size": 0.01, "steps": 40},
        "mi_fgsm": {**ball, "decay": 0.1, "step_size": 0.01, "steps": 40},
        "ddn": {"steps": 20, "clip_min": 0.0, "clip_max": 1.0},
    }
    strong = {name: attack.keywords for name, attack in evaluation.protocol("strong").items()}
    assert strong == {
        "apgd_ce": {**ball, "steps": 100, "loss": "ce"},
        "apgd_t": {**ball, "steps": 100, "loss": "dlr", "num_targets": 9},
        "square": {**ball, "queries": 5000, "rescale_schedule": False},
    }
    autoattack = evaluation.protocol("autoattack")
    for name in ("apgd_ce", "apgd_t", "square"):
        assert autoattack[name].keywords == strong[name]


@pytest.fixture
def trained(undefended):
    cnn, x, y = undefended
    return cnn, x[:64], y[:64]


def test_sanity_checks_pass_on_an_honest_model(trained, capsys):
    cnn, x, y = trained
    checks = evaluation.sanity_checks(cnn, x, y, queries=200)
    assert [c.passed for c in checks] == [True] * 4, evaluation.format_checks(checks)
    assert "WARNING" not in capsys.readouterr().out


def test_sanity_checks_flag_gradient_masking(trained, capsys):
    cnn, x, y = trained
    inputs = keras.Input((28, 28, 1))
    # Zero input gradients, same predictions: the textbook masked model.
    masked = keras.layers.Lambda(lambda t: 0.0 * t + tf.stop_gradient(t))(inputs)
    model = keras.Model(inputs, cnn(masked))
    # The black-box check from a short cascade (APGD-T's 9 targets would find nothing either).
    short = {
        "apgd_ce": functools.partial(attacks.apgd, epsilon=0.3, steps=10),
        "square": functools.partial(attacks.square, epsilon=0.3, queries=200),
    }
    results = evaluation.robust_accuracy(model, [(x, y)], short, cascade=True, verbose=0)
    black_box = evaluation.black_box_check(results, cascade=True)
    checks = evaluation.sanity_checks(model, x, y, steps=10, black_box=black_box)
    checks = {c.name: c for c in checks}
    assert not checks["unbounded attack reaches ~0%"].passed
    assert not checks["black-box not stronger than white-box"].passed
    assert "likely sign of gradient masking" in capsys.readouterr().out


@pytest.mark.parametrize(
    "accuracies, cascade, passed, detail",
    [
        # A cascade: Square breaks 0.8 pp of what the white-box attacks left.
        (
            {"clean": 0.99, "apgd_ce": 0.90, "apgd_t": 0.895, "square": 0.887, "worst_case": 0.887},
            True,
            True,
            "after apgd_ce, apgd_t: 89.50%, then square: 88.70%",
        ),
        # 2.5 pp: more than the tolerance.
        ({"apgd_ce": 0.92, "fab_t": 0.91, "square": 0.885}, True, False, "then square: 88.50%"),
        # Exactly the tolerance passes (2 of 100 images).
        ({"apgd_ce": 0.96, "square": 0.94}, True, True, "after apgd_ce: 96.00%"),
        # Each attack's own accuracy: Square against the strongest white-box attack.
        (
            {"apgd_ce": 0.95, "apgd_t": 0.93, "square": 0.92},
            False,
            True,
            "strongest white-box, apgd_t: 93.00%, square: 92.00%",
        ),
        ({"apgd_ce": 0.95, "apgd_t": 0.96, "square": 0.92}, False, False, "apgd_ce: 95.00%"),
    ],
)
def test_the_black_box_check_compares_square_with_the_protocols_white_box_attacks(
    accuracies, cascade, passed, detail
):
    check = evaluation.black_box_check(accuracies, cascade=cascade)
    assert check.name == evaluation.BLACK_BOX_CHECK
    assert check.passed is passed
    assert detail in check.detail


@pytest.mark.parametrize(
    "accuracies, cascade, message",
    [
        ({"apgd_ce": 0.9, "apgd_t": 0.89}, True, "needs a black-box attack"),
        ({"clean": 0.99, "square": 0.9}, False, "needs a black-box attack"),
        ({"apgd_ce": 0.9, "square": 0.89, "fab_t": 0.88}, True, "must run last"),
    ],
)
def test_the_black_box_check_refuses_results_it_cannot_read(accuracies, cascade, message):
    with pytest.raises(ValueError, match=message):
        evaluation.black_box_check(accuracies, cascade=cascade)


def test_sanity_checks_take_the_black_box_check_from_a_protocol_already_run(trained):
    cnn, x, y = trained
    given = evaluation.Check(evaluation.BLACK_BOX_CHECK, False, "from the record")
    checks = evaluation.sanity_checks(cnn, x, y, steps=5, black_box=given, verbose=False)
    assert checks[2] is given


def test_attack_evaluation_callback_adds_keys_to_history():
    x, y = tiny_batch(batch=32)
    model = keras_lfr.wrap(tiny_model(), method="standard")
    model.compile(optimizer="sgd", metrics=["accuracy"])
    callback = keras_lfr.callbacks.AttackEvaluation(
        x[:16], y[:16], {"fgsm": functools.partial(attacks.fgsm, epsilon=0.1)}, every=2
    )
    history = model.fit(x, y, epochs=3, verbose=0, callbacks=[callback]).history
    # Epochs 2 and 3 (every 2nd and the last).
    assert len(history["val_adv_fgsm_accuracy"]) == 2
    expected = np.mean(
        np.argmax(model(attacks.fgsm(model, x[:16], y[:16], epsilon=0.1)), axis=1) == y[:16]
    )
    assert history["val_adv_fgsm_accuracy"][-1] == pytest.approx(expected)


def test_sanity_check_gaps_of_exactly_the_tolerance_pass():
    at_most = evaluation.sanity._at_most
    assert 0.96 - 0.94 > 0.02  # float round-off: the reason for the helper
    assert at_most(0.96 - 0.94, 0.02)  # 2 of 100 images at a 2% tolerance
    assert not at_most(0.96 - 0.93, 0.02)
    assert at_most(0.05, 0.05) and not at_most(0.06, 0.05)


def test_a_killed_evaluation_of_a_trained_model_resumes_from_its_cached_chunks(tmp_path):
    """Killed during its second chunk, the rerun attacks only that chunk and agrees exactly.

    The model is a trained zoo entry, so the attack does change verdicts
    (robust < clean on these images): a resume that mixed up chunks or seeds
    would show. A counter on the chunks loaded proves the cached chunk is
    read, not attacked again.
    """
    model = keras_lfr.zoo.load("mnist/linf-0.3/pgd-at-fast")
    x, y = next(iter(keras_lfr.data.load("mnist", "test", batch_size=24, num_examples=24)))
    apgd = functools.partial(attacks.apgd, epsilon=0.4, steps=10)
    loaded = []
    kill = []

    def load_chunk(start, stop):
        loaded.append(start)
        if start in kill:
            raise KeyboardInterrupt  # the kill
        return tf.data.Dataset.from_tensor_slices((x[start:stop], y[start:stop])).batch(12)

    def evaluate(cache_dir):
        return evaluation.resumable_robust_accuracy(
            model,
            load_chunk,
            {"apgd_ce": apgd},
            24,
            chunk_size=12,
            cache_dir=cache_dir,
            verbose=0,
        )

    straight = evaluate(None)
    assert loaded == [0, 12]
    assert straight["worst_case"] < straight["clean"]  # the attack breaks some images
    cache = tmp_path / "cache"
    loaded.clear()
    kill.append(12)
    with pytest.raises(KeyboardInterrupt):
        evaluate(str(cache))
    assert [p.name for p in cache.iterdir()] == ["chunk-000000-000012.json"]
    loaded.clear()
    kill.clear()
    resumed = evaluate(str(cache))
    assert loaded == [12]  # the first chunk came from the cache
    for timer in ("seconds", "cpu_seconds"):
        straight.pop(timer), resumed.pop(timer)
    assert resumed == straight
