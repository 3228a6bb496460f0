"""Values the backend port must keep, each against an independent computation.

LFR's weight gradients (a gradient of a gradient) against finite
differences; FGSM and PGD with restarts against numpy on a linear model;
`sample_weight` through `fit` and `val_loss` against Keras' own loss and
numpy; ADR's and LSP's whole losses against numpy. They run on the suite's
backend (TensorFlow); `test_backends.py` holds JAX to the same values.
"""

import keras
import numpy as np
import pytest
from conftest import learnable_data

import keras_lfr
from keras_lfr import backend, ops
from keras_lfr.methods.lfr import LFR


def smooth_model(seed=0):
    """A small tanh network: smooth, so that LFR's loss has finite differences."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((2, 2, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )


def test_lfr_weight_gradients_match_finite_differences():
    model = smooth_model()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(6, 2, 2, 1)).astype("float32")
    y = rng.integers(0, 3, 6).astype("int32")
    x_adv = np.clip(x + rng.uniform(-0.1, 0.1, x.shape), 0, 1).astype("float32")
    method = LFR(epsilon=0.1, step_size=0.01, steps=1, lam=1.0)

    def loss():
        return method.loss(model, x, y, x_adv)[1], None

    gradients, _ = backend.value_and_weight_gradients(loss, model.trainable_variables)
    # Central differences of the whole loss, CE(x) + λ‖∇ₓ CE(x')‖₁, a few weights per tensor.
    h = 1e-3
    for variable, gradient in zip(model.trainable_variables, gradients, strict=True):
        gradient = keras.ops.convert_to_numpy(gradient)
        assert np.any(gradient != 0)
        value = keras.ops.convert_to_numpy(variable.value).copy()
        flat = value.reshape(-1)
        for index in rng.choice(flat.size, size=min(4, flat.size), replace=False):
            shifted = []
            for sign in (1, -1):
                moved = flat.copy()
                moved[index] += sign * h
                variable.assign(moved.reshape(value.shape))
                shifted.append(float(loss()[0]))
            variable.assign(value)
            numeric = (shifted[0] - shifted[1]) / (2 * h)
            assert gradient.reshape(-1)[index] == pytest.approx(numeric, rel=2e-2, abs=2e-3)


def linear_model(seed=0):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((3, 3, 1)), keras.layers.Flatten(), keras.layers.Dense(4)]
    )
    rng = np.random.default_rng(seed)
    model.set_weights(
        [rng.normal(size=(9, 4)).astype("float32"), rng.normal(size=4).astype("float32")]
    )
    return model


def numpy_input_gradient(model, x, y):
    """∇ₓ CE of a linear model: (softmax(xW + b) − onehot(y)) Wᵀ."""
    w, b = model.get_weights()
    flat = x.reshape(len(x), -1)
    logits = flat @ w + b
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    p[np.arange(len(y)), y] -= 1
    return (p @ w.T).reshape(x.shape), logits


def numpy_ce(logits, y):
    shifted = logits - logits.max(1, keepdims=True)
    return -(shifted[np.arange(len(y)), y] - np.log(np.exp(shifted).sum(1)))


def test_fgsm_matches_numpy():
    model = linear_model()
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(8, 3, 3, 1)).astype("float32")
    y = rng.integers(0, 4, 8)
    grad, _ = numpy_input_gradient(model, x, y)
    expected = np.clip(x + 0.2 * np.sign(grad), 0, 1)
    x_adv = keras.ops.convert_to_numpy(keras_lfr.attacks.fgsm(model, x, y, epsilon=0.2))
    np.testing.assert_allclose(x_adv, expected, atol=1e-6)


def test_pgd_with_restarts_keeps_each_examples_best_restart():
    model = linear_model()
    rng = np.random.default_rng(2)
    x = rng.uniform(size=(8, 3, 3, 1)).astype("float32")
    y = rng.integers(0, 4, 8)
    epsilon, step, steps = 0.2, 0.05, 3

    def numpy_pgd(start):
        x_adv = start
        for _ in range(steps):
            grad, _ = numpy_input_gradient(model, x_adv, y)
            x_adv = np.clip(np.clip(x_adv + step * np.sign(grad), x - epsilon, x + epsilon), 0, 1)
        return x_adv

    seed = ops.as_seed(5)
    runs = []
    for restart in range(3):
        start = ops.random_start(x, "uniform", epsilon, ops.fold_seed(seed, restart), 0.0, 1.0)
        runs.append(numpy_pgd(keras.ops.convert_to_numpy(start)))
    losses = np.stack([numpy_ce(numpy_input_gradient(model, r, y)[1], y) for r in runs])
    expected = np.stack(runs)[np.argmax(losses, axis=0), np.arange(len(y))]
    x_adv = keras_lfr.attacks.pgd(
        model, x, y, epsilon=epsilon, step_size=step, steps=steps, restarts=3, seed=5
    )
    np.testing.assert_allclose(keras.ops.convert_to_numpy(x_adv), expected, atol=1e-5)
    # The restarts differ, and the best is not always the first.
    assert len(set(np.argmax(losses, axis=0))) > 1


def test_sample_weight_through_fit_matches_keras_own_loss():
    x, y = learnable_data(32)
    weights = np.random.default_rng(0).uniform(0.0, 2.0, len(x)).astype("float32")
    results = []
    for wrapped in (True, False):
        keras.utils.set_random_seed(0)
        cnn = keras.Sequential(
            [keras.Input(x.shape[1:]), keras.layers.Flatten(), keras.layers.Dense(10)]
        )
        if wrapped:
            model = keras_lfr.wrap(cnn, method="standard")
            model.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=False)
        else:
            model = cnn
            model.compile(
                optimizer=keras.optimizers.SGD(0.5),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                jit_compile=False,
            )
        history = model.fit(
            x, y, sample_weight=weights, batch_size=16, epochs=2, shuffle=False, verbose=0
        )
        results.append((history.history["loss"], cnn.get_weights()))
    (loss, ours), (keras_loss, theirs) = results
    np.testing.assert_allclose(loss, keras_loss, rtol=1e-5)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_val_loss_is_the_clean_cross_entropy_of_the_trained_model():
    x, y = learnable_data(48)
    keras.utils.set_random_seed(0)
    cnn = keras.Sequential(
        [keras.Input(x.shape[1:]), keras.layers.Flatten(), keras.layers.Dense(10)]
    )
    model = keras_lfr.wrap(cnn, method="pgd_at", epsilon=0.1, step_size=0.05, steps=2)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=False)
    history = model.fit(
        x[:32], y[:32], validation_data=(x[32:], y[32:]), epochs=1, batch_size=16, verbose=0
    )
    logits = cnn.predict(x[32:], verbose=0).astype("float64")
    expected = numpy_ce(logits, y[32:]).mean()
    assert history.history["val_loss"][0] == pytest.approx(expected, rel=1e-5)
    assert history.history["val_clean_ce"][0] == pytest.approx(expected, rel=1e-5)


def two_layer_model(seed=0):
    """Flatten → Dense(5, relu) → Dense(4): the features are the hidden layer."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((3, 3, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="relu"),
            keras.layers.Dense(4),
        ]
    )


def numpy_forward(model, x):
    w1, b1, w2, b2 = (w.astype("float64") for w in model.get_weights())
    z = np.maximum(x.reshape(len(x), -1) @ w1 + b1, 0)
    return z, z @ w2 + b2


def log_softmax(logits):
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def whole_loss_batch(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(6, 3, 3, 1)).astype("float32")
    y = np.array([0, 1, 0, 2, 1, 0], dtype="int32")
    x_adv = np.clip(x + rng.uniform(-0.2, 0.2, x.shape), 0, 1).astype("float32")
    return x, y, x_adv


def test_adr_whole_loss_matches_numpy():
    model = two_layer_model()
    x, y, x_adv = whole_loss_batch(3)
    weights = {"local_weight": 1.0, "global_weight": 0.5, "entropy_weight": 0.1}
    method = keras_lfr.methods.get_method("adr", smoothness_weight=1.0, **weights)
    _, total, terms = method.loss(model, x, y, x_adv)

    z, logits = numpy_forward(model, x)
    z_adv, adv_logits = numpy_forward(model, x_adv)
    adv_ce = -log_softmax(adv_logits)[np.arange(6), y].mean()
    local = np.abs(z - z_adv).mean(1).mean()
    pairs = [(i, j) for i in range(6) for j in range(6) if i != j and y[i] == y[j]]
    global_ = np.mean([np.abs(z_adv[i] - z[j]).mean() for i, j in pairs])
    log_p_adv = log_softmax(adv_logits)
    entropy = -(np.exp(log_p_adv) * log_p_adv).sum(1).mean()
    log_p = log_softmax(logits)
    smoothness = (np.exp(log_p) * (log_p - log_p_adv)).sum(1).mean()
    expected = adv_ce + local + 0.5 * global_ + 0.1 * entropy + smoothness
    assert float(terms["global_compactness"]) == pytest.approx(global_, rel=1e-5)
    assert float(total) == pytest.approx(expected, rel=1e-5)


def test_lsp_whole_loss_matches_numpy():
    model = two_layer_model()
    x, y, x_adv = whole_loss_batch(4)
    method = keras_lfr.methods.get_method("lsp", weight=2.0, temperature=0.5)
    _, total, terms = method.loss(model, x, y, x_adv)

    def neighbourhood_log_probs(points):
        u = points.reshape(len(points), -1).astype("float64")
        d2 = ((u[:, None, :] - u[None, :, :]) ** 2).sum(-1)
        off = ~np.eye(len(u), dtype=bool)
        logits = np.where(off, -d2 / (0.5 * d2[off].mean()), -1e9)
        return log_softmax(logits)

    points = np.concatenate([x, x_adv])
    features, _ = numpy_forward(model, points)
    log_p, log_q = neighbourhood_log_probs(points), neighbourhood_log_probs(features)
    structure = (np.exp(log_p) * (log_p - log_q)).sum(1).mean()
    _, adv_logits = numpy_forward(model, x_adv)
    adv_ce = -log_softmax(adv_logits)[np.arange(6), y].mean()
    assert float(terms["structure"]) == pytest.approx(structure, rel=1e-4)
    assert float(total) == pytest.approx(adv_ce + 2.0 * structure, rel=1e-5)
