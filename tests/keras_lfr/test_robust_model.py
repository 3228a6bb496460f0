"""The wrapper model: fit, metrics, labels, XLA, saving, errors."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import learnable_data, tiny_batch, tiny_model

import keras_lfr


def bn_dropout_model():
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.ReLU()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dropout(0.2)(x)
    return keras.Model(inputs, keras.layers.Dense(10)(x), name="bn_dropout")


@keras.saving.register_keras_serializable(package="keras_lfr_tests")
class SubclassedNet(keras.Model):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.conv = keras.layers.Conv2D(4, 3, activation="relu")
        self.flatten = keras.layers.Flatten()
        self.dense = keras.layers.Dense(10)

    def call(self, inputs, training=None):
        return self.dense(self.flatten(self.conv(inputs)))


def same_config(a, b):
    """Configs equal up to tuple/list (JSON round trips turn tuples into lists)."""
    return json.dumps(a.get_config(), sort_keys=True) == json.dumps(b.get_config(), sort_keys=True)


@pytest.mark.parametrize(
    "make_model", [bn_dropout_model, SubclassedNet], ids=["bn_dropout", "subclassed"]
)
def test_fit_trains_and_reports_terms(make_model):
    keras.utils.set_random_seed(0)
    x, y = learnable_data()
    model = keras_lfr.wrap(make_model(), epsilon=0.05, step_size=0.02, steps=2, lam=0.01)
    model.compile(optimizer=keras.optimizers.Adam(0.01), metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=4, verbose=0, validation_data=(x, y))
    logs = history.history
    assert {
        "loss",
        "clean_ce",
        "local_flatness",
        "accuracy",
        "val_loss",
        "val_clean_ce",
        "val_accuracy",
    } <= set(logs)
    assert "val_local_flatness" not in logs
    assert logs["clean_ce"][-1] < logs["clean_ce"][0]
    assert logs["val_accuracy"][-1] > 0.5
    for total, ce, flat in zip(logs["loss"], logs["clean_ce"], logs["local_flatness"], strict=True):
        np.testing.assert_allclose(total, ce + 0.01 * flat, rtol=1e-5)


def test_one_hot_and_sparse_labels_give_the_same_step():
    x, y = tiny_batch()
    results = []
    for labels in (y, np.eye(10, dtype="float32")[y]):
        model = keras_lfr.wrap(tiny_model(), steps=2)
        model.compile(optimizer="sgd", metrics=["accuracy"])
        results.append(model.train_on_batch(x, labels, return_dict=True))
    np.testing.assert_allclose(results[0]["loss"], results[1]["loss"], rtol=1e-6)
    assert results[0]["accuracy"] == results[1]["accuracy"]


def test_xla_and_graph_give_equal_losses():
    x, y = tiny_batch(batch=16)
    results = []
    for jit in (False, True):
        model = keras_lfr.wrap(tiny_model(), epsilon=0.1, steps=3, seed=7)
        model.compile(optimizer="sgd", jit_compile=jit)
        logs = [model.train_on_batch(x, y, return_dict=True) for _ in range(2)]
        results.append((logs, model.get_weights()))
    (graph_logs, graph_weights), (xla_logs, xla_weights) = results
    for graph, xla in zip(graph_logs, xla_logs, strict=True):
        for key in ("loss", "clean_ce", "local_flatness"):
            np.testing.assert_allclose(graph[key], xla[key], rtol=1e-4)
    for graph, xla in zip(graph_weights, xla_weights, strict=True):
        np.testing.assert_allclose(graph, xla, rtol=1e-4, atol=1e-6)


def test_random_start_depends_on_seed_and_step():
    x, y = tiny_batch()
    model = keras_lfr.wrap(tiny_model(), steps=1, seed=1)
    model.compile(optimizer="sgd")
    first = model.step_seed().numpy()
    model.train_on_batch(x, y)
    assert not np.array_equal(first, model.step_seed().numpy())
    other = keras_lfr.wrap(tiny_model(), steps=1, seed=2)
    other.compile(optimizer="sgd")
    assert not np.array_equal(first, other.step_seed().numpy())


def test_keras_round_trip_restores_config_weights_and_optimizer(tmp_path):
    x, y = tiny_batch()
    model = keras_lfr.wrap(tiny_model(), epsilon=0.2, step_size=0.02, steps=2, lam=0.1, seed=3)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), metrics=["accuracy"])
    model.fit(x, y, epochs=2, verbose=0)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, keras_lfr.RobustModel) and loaded.method.name == "lfr"
    assert same_config(loaded, model)
    assert loaded.method.get_config() == model.method.get_config()
    np.testing.assert_array_equal(loaded.predict(x, verbose=0), model.predict(x, verbose=0))
    assert int(loaded.optimizer.iterations) == int(model.optimizer.iterations) == 2
    for a, b in zip(loaded.optimizer.variables, model.optimizer.variables, strict=True):
        np.testing.assert_array_equal(a, b)
    # Both continue identically: same seed, same step counter, same momentum.
    np.testing.assert_allclose(
        loaded.train_on_batch(x, y, return_dict=True)["loss"],
        model.train_on_batch(x, y, return_dict=True)["loss"],
        rtol=1e-6,
    )


def test_subclassed_model_round_trip(tmp_path):
    x, y = tiny_batch()
    model = keras_lfr.wrap(SubclassedNet(), steps=1)
    model.compile(optimizer="sgd")
    model.fit(x, y, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0))


def test_unwrap_returns_the_inner_model(tiny):
    model = keras_lfr.wrap(tiny, method="standard")
    assert model.unwrap() is tiny
    x, _ = tiny_batch()
    np.testing.assert_array_equal(model(x), tiny(x))


@pytest.mark.parametrize(
    "hyperparameters, argument",
    [
        ({"epsilon": -0.1}, "epsilon"),
        ({"epsilon": 2.0}, "epsilon"),
        ({"step_size": -1.0}, "step_size"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "steps"),
        ({"lam": -0.02}, "lam"),
        ({"lam": float("nan")}, "lam"),
        ({"clip_min": 1.0, "clip_max": 0.0}, "clip_max"),
        ({"random_start": "gaussian"}, "random_start"),
        ({"seed": "0"}, "seed"),
    ],
)
def test_bad_hyperparameters_raise_clear_errors(tiny, hyperparameters, argument):
    with pytest.raises(ValueError, match=f"argument `{argument}`. Received: {argument}="):
        keras_lfr.wrap(tiny, **hyperparameters)


def test_unknown_method_and_hyperparameter_raise(tiny):
    with pytest.raises(ValueError, match="argument `method`. Received: method='lrf'"):
        keras_lfr.wrap(tiny, method="lrf")
    with pytest.raises(ValueError, match=r"Unknown hyperparameter\(s\) \['beta'\]"):
        keras_lfr.wrap(tiny, beta=1.0)


def test_compile_rejects_a_loss(tiny):
    model = keras_lfr.wrap(tiny)
    with pytest.raises(ValueError, match="argument `loss`"):
        model.compile(optimizer="sgd", loss="mse")


def test_non_keras_model_is_rejected():
    with pytest.raises(ValueError, match="argument `model`"):
        keras_lfr.wrap(lambda x: x)


def test_warns_when_model_outputs_probabilities():
    probs = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    with pytest.warns(UserWarning, match="outputs probabilities"):
        keras_lfr.wrap(probs)


def test_warns_on_probability_outputs_seen_in_fit():
    inputs = keras.Input((8, 8, 1))
    logits = keras.layers.Dense(10)(keras.layers.Flatten()(inputs))
    model = keras.Model(inputs, keras.ops.softmax(logits))  # no softmax *layer* to spot
    wrapped = keras_lfr.wrap(model, steps=1)
    wrapped.compile(optimizer="sgd")
    x, y = tiny_batch()
    with pytest.warns(UserWarning, match="outputs on the first batch"):
        wrapped.fit(tf.data.Dataset.from_tensor_slices((x, y)).batch(4), verbose=0)


def test_logits_model_does_not_warn(tiny, recwarn):
    keras_lfr.wrap(tiny)
    assert not [w for w in recwarn if "probabilities" in str(w.message)]


def test_mixed_bfloat16_keeps_losses_and_penalty_in_float32():
    x, y = tiny_batch(batch=32, shape=(28, 28, 1))
    results = {}
    for dtype in (None, "mixed_bfloat16"):
        keras.utils.set_random_seed(0)  # the same float32 weights for both
        cnn = keras_lfr.models.small_cnn(dropout=0.0, dtype=dtype)
        # Distinct class directions (a constant kernel would make ∇ₓ CE vanish).
        kernel = np.random.default_rng(0).normal(size=(200, 10)) * 0.1
        cnn.get_layer("fc3").kernel.assign(kernel.astype("float32"))
        model = keras_lfr.wrap(cnn, steps=2)
        model.compile(optimizer="sgd")
        grads, logits, loss, terms = model.compute_gradients(
            tf.constant(x), tf.constant(y), None, keras_lfr.ops.as_seed(0)
        )
        assert logits.dtype == loss.dtype == "float32"
        assert all(v.dtype == "float32" and np.isfinite(v) for v in terms.values())
        assert all(g.dtype == "float32" and np.all(np.isfinite(g)) for g in grads)
        results[dtype] = terms
    for name in ("clean_ce", "local_flatness"):
        np.testing.assert_allclose(results["mixed_bfloat16"][name], results[None][name], rtol=0.05)


def test_files_from_before_awp_became_a_method_load(tmp_path):
    # The config layout of earlier versions: the method's name and its
    # hyperparameters flat beside the wrapper's, AWP as wrapper arguments.
    x, _ = tiny_batch()
    model = keras_lfr.wrap(tiny_model(), method="trades", epsilon=0.2, steps=2, beta=3.0)
    old = {
        "name": "trades_old",
        "model": keras.saving.serialize_keras_object(model.inner_model),
        "method": "trades",
        "seed": 4,
        "awp_gamma": 0.01,
        "awp_warmup": 0,
        "epsilon_warmup": 0,
        **model.method.get_config(),
    }
    loaded = keras_lfr.RobustModel.from_config(old)
    assert loaded.method.name == "awp" and loaded.method.gamma == 0.01
    assert loaded.method.base.get_config() == model.method.get_config()
    assert loaded.seed == 4
    old_lfr = {
        "name": "lfr_old",
        "model": old["model"],
        "seed": 0,
        "awp_gamma": 0.0,
        "awp_warmup": 0,
        "epsilon_warmup": 0,
        **keras_lfr.methods.LFR(lam=0.1, steps=2).get_config(),
    }
    lfr = keras_lfr.LFRModel.from_config(old_lfr)
    assert lfr.method.get_config() == keras_lfr.methods.LFR(lam=0.1, steps=2).get_config()
    assert lfr.predict(x, verbose=0).shape == (len(x), 10)
    with pytest.warns(UserWarning, match="awp_warmup_steps=0"):
        warm = keras_lfr.RobustModel.from_config({**old, "awp_warmup": 5})
    assert warm.method.warmup_steps == 0 and warm.method.gamma == 0.01
    with pytest.raises(ValueError, match="awp_warmup_steps"):
        keras_lfr.wrap(tiny_model(), awp_gamma=0.01, awp_warmup=5)


def test_threat_model_is_the_methods_ball():
    robust = keras_lfr.wrap(tiny_model(), method="trades", epsilon=0.2, clip_min=-1.0)
    assert robust.threat_model() == {"epsilon": 0.2, "clip_min": -1.0, "clip_max": 1.0}
    awp = keras_lfr.wrap(tiny_model(), method="lfr", epsilon=0.1, awp_gamma=0.005)
    assert awp.threat_model()["epsilon"] == 0.1
    assert keras_lfr.wrap(tiny_model(), method="standard").threat_model() == {
        "epsilon": None,
        "clip_min": None,
        "clip_max": None,
    }
