"""LFR's penalty, inner maximisation and local flatness against independent computations."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_batch, tiny_model

import keras_lfr
from keras_lfr import ops
from keras_lfr.methods.lfr import LFR


def per_example_input_grads(model, x, y):
    """‖∇ₓ CE‖₁ and ∇ₓ‖∇ₓ CE‖₁ computed one example at a time (no batching)."""
    norms, directions = [], []
    for i in range(len(x)):
        xi = tf.constant(x[i : i + 1])
        with tf.GradientTape() as outer:
            outer.watch(xi)
            with tf.GradientTape() as inner:
                inner.watch(xi)
                logits = model(xi, training=False)
                ce = tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=y[i : i + 1], logits=logits
                )
            grad = inner.gradient(ce, xi)
            norm = tf.reduce_sum(tf.abs(grad))
        norms.append(norm.numpy())
        directions.append(outer.gradient(norm, xi).numpy()[0])
    return np.array(norms), np.array(directions)


def test_penalty_matches_per_example_computation(tiny, batch):
    x, y = batch
    x_adv = np.clip(x + 0.05, 0, 1)
    method = LFR(epsilon=0.1, step_size=0.01, steps=2, lam=0.5)
    _, total, terms = method.loss(tiny, tf.constant(x), tf.constant(y), tf.constant(x_adv))
    norms, _ = per_example_input_grads(tiny, x_adv, y)
    logits = tiny(x, training=False).numpy()
    log_probs = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
    ce = -log_probs[np.arange(len(y)), y].mean()
    np.testing.assert_allclose(terms["local_flatness"], norms.mean(), rtol=1e-5)
    np.testing.assert_allclose(terms["clean_ce"], ce, rtol=1e-5)
    np.testing.assert_allclose(total, ce + 0.5 * norms.mean(), rtol=1e-5)


@pytest.mark.parametrize("batch_size", [1, 5, 16])
def test_default_objective_is_the_authors_loss(tiny, batch_size):
    """The default `lam` reproduces the authors' `LFR_loss` at any batch size.

    Their code differentiates the batch-mean cross-entropy with respect to the
    inputs (each example's gradient is 1/B of its own ∇ₓ CE), takes the batch
    mean of the ℓ1 norms, multiplies it by B and weights it by λ = 0.02. The
    factors B and 1/B cancel: their penalty is λ times the batch mean of the
    per-example ‖∇ₓ CE‖₁, what `LFR` computes, not λ·B times it.
    """
    x, y = tiny_batch(batch_size)
    x_adv = tf.constant(np.clip(x + 0.03, 0, 1))
    with tf.GradientTape() as tape:  # the authors' steps, written out in TensorFlow
        tape.watch(x_adv)
        mean_ce = tf.reduce_mean(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tiny(x_adv))
        )
    gradient = tape.gradient(mean_ce, x_adv)
    loss_grad = tf.reduce_mean(tf.reduce_sum(tf.abs(gradient), axis=(1, 2, 3))) * batch_size
    clean = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=tiny(x)))
    authors = clean + 0.02 * loss_grad
    _, total, terms = LFR().loss(tiny, tf.constant(x), tf.constant(y), x_adv)
    np.testing.assert_allclose(total, authors, rtol=1e-5)
    np.testing.assert_allclose(terms["local_flatness"], loss_grad, rtol=1e-5)


def test_sample_weight_scales_per_example_terms(tiny, batch):
    x, y = batch
    weights = np.linspace(0, 2, len(x)).astype("float32")
    method = LFR(epsilon=0.1, step_size=0.01, steps=1, lam=1.0)
    _, _, terms = method.loss(tiny, tf.constant(x), tf.constant(y), tf.constant(x), weights)
    norms, _ = per_example_input_grads(tiny, x, y)
    np.testing.assert_allclose(terms["local_flatness"], (weights * norms).mean(), rtol=1e-5)


def independent_ascent(model, x, y, epsilon, step_size, steps):
    """Per-example sign ascent on ‖∇ₓ CE‖₁ from x, keeping the best iterate."""
    x_adv, best = x.copy(), np.full(len(x), -1.0)
    for _ in range(steps + 1):
        norms, directions = per_example_input_grads(model, x_adv, y)
        best = np.maximum(best, norms)
        x_adv = np.clip(
            np.clip(x_adv + step_size * np.sign(directions), x - epsilon, x + epsilon), 0, 1
        )
    return best


def test_local_flatness_matches_independent_ascent(tiny, batch):
    x, y = batch
    gamma = keras_lfr.local_flatness(tiny, x, y, 0.1, 0.02, 3, random_start="none")
    expected = independent_ascent(tiny, x, y, 0.1, 0.02, 3)
    np.testing.assert_allclose(gamma, expected, rtol=1e-4)


def test_local_flatness_at_zero_epsilon_is_gradient_norm(tiny, batch):
    x, y = batch
    gamma = keras_lfr.local_flatness(tiny, x, y, 0.0, 0.01, 3)
    norms, _ = per_example_input_grads(tiny, x, y)
    np.testing.assert_allclose(gamma, norms, rtol=1e-6)


def test_local_flatness_accepts_one_hot_labels(tiny, batch):
    x, y = batch
    sparse = keras_lfr.local_flatness(tiny, x, y, 0.1, 0.01, 2)
    one_hot = keras_lfr.local_flatness(tiny, x, np.eye(10, dtype="float32")[y], 0.1, 0.01, 2)
    np.testing.assert_array_equal(sparse, one_hot)


@pytest.mark.parametrize("random_start", ["normal", "uniform", "none"])
@pytest.mark.parametrize("epsilon", [0.0, 0.05, 0.3])
def test_inner_max_stays_in_ball_and_pixel_range(random_start, epsilon):
    model = tiny_model()
    x, y = tiny_batch(batch=16)
    x[:4] = 0.0  # on the lower pixel bound
    x[4:8] = 1.0  # on the upper pixel bound
    method = LFR(epsilon=epsilon, step_size=0.1, steps=3, random_start=random_start)
    x_adv = method.perturb(model, tf.constant(x), tf.constant(y), ops.as_seed(3)).numpy()
    assert np.all(np.abs(x_adv - x) <= epsilon + 1e-7)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert np.all(np.isfinite(x_adv))


def test_inner_max_raises_flatness_over_its_start():
    # Smooth activations: with ReLU the objective is piecewise and a tiny random
    # model gives the sign ascent little to climb (the trained SmallCNN does).
    model = tiny_model(activation="softplus")
    x, y = tiny_batch(batch=64)
    start = ops.random_start(tf.constant(x), "normal", 0.3, ops.as_seed(0), 0.0, 1.0)
    method = LFR(epsilon=0.3, step_size=0.02, steps=3, random_start="normal")
    x_adv = method.perturb(model, tf.constant(x), tf.constant(y), ops.as_seed(0))
    before = ops.l1_norm(ops.input_gradient(model, start, y)[0])
    after = ops.l1_norm(ops.input_gradient(model, x_adv, y)[0])
    assert tf.reduce_mean(after) > 1.02 * tf.reduce_mean(before)


def test_training_gradients_are_finite_and_reach_every_weight():
    cnn = keras_lfr.models.small_cnn(dropout=0.0)
    cnn.get_layer("fc3").kernel.assign(np.full((200, 10), 0.01, "float32"))
    model = keras_lfr.wrap(cnn, steps=2)
    model.compile(optimizer="sgd")
    x, y = tiny_batch(batch=4, shape=(28, 28, 1))
    grads, logits, loss, terms = model.compute_gradients(
        tf.constant(x), tf.constant(y), None, ops.as_seed(0)
    )
    assert logits.shape == (4, 10) and np.isfinite(loss)
    assert set(terms) == {"clean_ce", "local_flatness"}
    for grad, variable in zip(grads, model.trainable_variables, strict=True):
        assert grad is not None, variable.path
        assert np.all(np.isfinite(grad)), variable.path


def linear_scale_derivatives(weights, bias, x, y, x_adv):
    """d/d log c of CE(c·z(x)) and of ‖∇ₓ CE(c·z(x'))‖₁ at c = 1 for z = W x + b, in closed form."""

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    onehot = np.eye(weights.shape[1])[y]
    z = x.reshape(len(x), -1) @ weights + bias
    p = softmax(z)
    clean = np.mean(np.sum(p * z, axis=1) - np.sum(onehot * z, axis=1))
    z_adv = x_adv.reshape(len(x_adv), -1) @ weights + bias
    p_adv = softmax(z_adv)
    gradient = (p_adv - onehot) @ weights.T  # ∇ₓ CE at c = 1
    # d(c (p_c − e_y))/d log c = (p − e_y) + p ⊙ (z − E_p z), at c = 1.
    dp = p_adv * (z_adv - np.sum(p_adv * z_adv, axis=1, keepdims=True))
    d_gradient = (p_adv - onehot + dp) @ weights.T
    per_example = np.sum(np.sign(gradient) * d_gradient, axis=1)
    return clean, per_example


def linear_case(scale, seed):
    """A linear model with logits of size ~`scale`, a batch, its x' and their scale derivatives."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(16, 4, 4, 1)).astype("float32")
    y = rng.integers(0, 10, size=16)
    x_adv = np.clip(x + rng.uniform(-0.2, 0.2, size=x.shape), 0, 1).astype("float32")
    weights = (scale * rng.normal(size=(16, 10))).astype("float32")
    bias = (scale * rng.normal(size=10)).astype("float32")
    layers = [keras.Input((4, 4, 1)), keras.layers.Flatten(), keras.layers.Dense(10)]
    model = keras.Sequential(layers)
    model.layers[-1].set_weights([weights, bias])
    derivatives = linear_scale_derivatives(
        *(a.astype("float64") for a in (weights, bias, x)), y, x_adv.astype("float64")
    )
    return (model, x, y, x_adv, *derivatives)


@pytest.mark.parametrize("scale", [0.1, 1.0, 8.0])  # unconfident, mixed, saturated
def test_logit_scale_pressure_matches_the_closed_form_of_a_linear_model(scale):
    model, x, y, x_adv, clean, per_example = linear_case(scale, seed=3)
    got = keras_lfr.logit_scale_pressure(model, x, y, x_adv, lam=0.5)
    assert got["clean_ce"] == pytest.approx(clean, rel=1e-3, abs=1e-5)
    assert got["penalty"] == pytest.approx(0.5 * per_example.mean(), rel=1e-3, abs=1e-5)
    assert got["total"] == pytest.approx(got["clean_ce"] + got["penalty"])
    assert got["shrinking_share"] == pytest.approx(np.mean(per_example > 0))


def test_logit_scale_pressure_tells_a_saturated_model_from_an_unconfident_one():
    x, y = tiny_batch(batch=16)
    model = tiny_model()
    gamma, points = keras_lfr.local_flatness(model, x, y, 0.1, 0.05, 2, return_points=True)
    assert points.shape == x.shape and gamma.shape == (16,)
    inputs = keras.Input(x.shape[1:])
    shrunk = keras.Model(inputs, 1e-3 * model(inputs))
    grown = keras.Model(inputs, 1e3 * model(inputs))
    # Nearly uniform logits: every penalty grows with the scale.
    assert keras_lfr.logit_scale_pressure(shrunk, x, y, points)["shrinking_share"] == 1.0
    # Huge logits: the gradient vanishes wherever the prediction is right and confident.
    correct = np.argmax(grown(x), axis=1) == np.asarray(y)
    assert (
        keras_lfr.logit_scale_pressure(grown, x[correct], y[correct], points[correct])[
            "shrinking_share"
        ]
        < 0.5
    )


@pytest.mark.parametrize("scale", [0.1, 1.0, 8.0])  # unconfident, mixed, saturated
def test_scale_free_penalty_loses_exactly_the_pull_along_the_logit_scale(scale):
    """Same loss value; along (W, b) ↦ (cW, cb), d/d log c drops by λ · mean ‖∇ₓ CE(x')‖₁."""
    model, x, y, x_adv, clean, per_example = linear_case(scale, seed=4)
    weights, bias = model.layers[-1].get_weights()
    lam = 0.5

    def along_scale(penalty):
        method = LFR(epsilon=0.2, step_size=0.05, steps=1, lam=lam, penalty=penalty)
        with tf.GradientTape() as tape:
            _, total, _ = method.loss(model, tf.constant(x), tf.constant(y), tf.constant(x_adv))
        kernel_grad, bias_grad = tape.gradient(total, model.trainable_variables)
        return float(total), float(np.sum(kernel_grad * weights) + np.sum(bias_grad * bias))

    paper_total, paper_pull = along_scale("paper")
    free_total, free_pull = along_scale("scale_free")
    norms, _ = per_example_input_grads(model, x_adv, y)
    assert free_total == pytest.approx(paper_total, rel=1e-6)
    assert paper_pull == pytest.approx(clean + lam * per_example.mean(), rel=1e-3, abs=1e-5)
    assert free_pull == pytest.approx(
        clean + lam * (per_example - norms).mean(), rel=1e-3, abs=1e-5
    )


def test_scale_free_is_an_lfr_choice_with_a_clear_error():
    assert LFR(penalty="scale_free").get_config()["penalty"] == "scale_free"
    restored = keras_lfr.methods.deserialize(keras_lfr.methods.serialize(LFR(penalty="scale_free")))
    assert restored.penalty == "scale_free"
    assert keras_lfr.methods.get_method("lfr", penalty="scale_free").penalty == "scale_free"
    with pytest.raises(ValueError, match="penalty.*'paper', 'scale_free'"):
        LFR(penalty="margin")
