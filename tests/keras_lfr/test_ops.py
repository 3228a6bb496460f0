"""The shared primitives of `keras_lfr.ops`, against numpy and their invariants."""

import numpy as np
import pytest
import tensorflow as tf

from keras_lfr import ops


def test_seeds_are_deterministic_and_distinct():
    seed = ops.as_seed(7)
    np.testing.assert_array_equal(seed, [7, 0])
    np.testing.assert_array_equal(ops.as_seed(seed), seed)
    folded = [tuple(ops.fold_seed(seed, i).numpy()) for i in range(50)]
    assert len(set(folded)) == 50
    assert folded[3] == tuple(ops.fold_seed(seed, 3).numpy())


@pytest.mark.parametrize("jit", [False, True])
def test_uniform_and_normal_are_stateless_and_the_same_under_xla(jit):
    seed = ops.as_seed(3)

    @tf.function(jit_compile=jit)
    def draw():
        return (
            ops.uniform([4000], seed),
            ops.uniform([4000], seed, -2.0, 3.0),
            ops.normal([4000], seed),
        )

    unit, u, n = (t.numpy() for t in draw())
    np.testing.assert_array_equal(unit, ops.uniform([4000], seed))  # the same bits
    # Scaling and Box-Muller may round differently under XLA (fused operations).
    np.testing.assert_allclose(u, ops.uniform([4000], seed, -2.0, 3.0), rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(n, ops.normal([4000], seed), rtol=1e-6, atol=1e-6)
    assert -2.0 < u.min() and u.max() < 3.0 and abs(u.mean() - 0.5) < 0.1
    assert abs(n.mean()) < 0.1 and abs(n.std() - 1.0) < 0.1
    other = ops.uniform([4000], ops.fold_seed(seed, 1), -2.0, 3.0).numpy()
    assert not np.array_equal(u, other)


@pytest.mark.parametrize("offset", [-0.5, -0.1, 0.0, 0.05, 0.1, 0.5], ids=lambda o: f"d{o}")
def test_project_linf_inside_on_and_outside_the_ball(offset):
    x = tf.constant([[0.5, 0.05, 0.95]])
    epsilon = 0.1
    projected = ops.project_linf(x + offset, x, epsilon, 0.0, 1.0).numpy()
    expected = np.clip(np.clip(x.numpy() + offset, x - epsilon, x + epsilon), 0.0, 1.0)
    np.testing.assert_allclose(projected, expected, atol=1e-7)
    if abs(offset) <= epsilon:  # inside or on the ball, within the pixel range: unchanged
        inside = (x.numpy() + offset >= 0) & (x.numpy() + offset <= 1)
        np.testing.assert_allclose(projected[inside], (x.numpy() + offset)[inside], atol=1e-7)
    assert np.all(np.abs(projected - x.numpy()) <= epsilon + 1e-7)


def test_projection_gradient_is_finite():
    x = tf.constant([[0.5, 0.0, 1.0]])
    x_adv = tf.Variable([[0.7, -0.1, 1.0]])
    with tf.GradientTape() as tape:
        total = tf.reduce_sum(ops.project_linf(x_adv, x, 0.1, 0.0, 1.0))
    assert np.all(np.isfinite(tape.gradient(total, x_adv).numpy()))


@pytest.mark.parametrize("kind", ops.START_KINDS)
def test_random_starts(kind):
    x = tf.constant(np.tile([0.0, 0.5, 1.0], (64, 1)).astype("float32"))
    start = ops.random_start(x, kind, 0.1, ops.as_seed(0), 0.0, 1.0).numpy()
    distance = np.abs(start - x.numpy())
    if kind == "none":
        np.testing.assert_array_equal(start, x)
    elif kind == "uniform":
        assert distance.max() <= 0.1 + 1e-7 and distance.mean() > 0.02
    else:  # 0.001·N(0, 1)
        assert 0 < distance.max() < 0.01
    in_range = start.min() >= 0.0 and start.max() <= 1.0
    assert in_range == (kind != "normal_unclipped")


def test_margin_matches_numpy_on_logits_and_probabilities():
    scores = np.array([[2.0, 1.0, 3.0], [0.1, 0.7, 0.2]], "float32")
    labels = np.array([2, 0])
    np.testing.assert_allclose(ops.margin(scores, labels), [3.0 - 2.0, 0.1 - 0.7], rtol=1e-6)


def test_kl_divergence_matches_numpy():
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2, 5, 4)).astype("float32")

    def softmax(z):
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)

    p, q = softmax(a.astype("float64")), softmax(b.astype("float64"))
    expected = (p * (np.log(p) - np.log(q))).sum(axis=1)
    np.testing.assert_allclose(ops.kl_divergence(a, b), expected, rtol=1e-5)
    np.testing.assert_allclose(ops.kl_divergence(a, a + 3.0), 0.0, atol=1e-6)  # shift-invariant
    assert np.all(ops.kl_divergence(b, a).numpy() >= 0)


def test_iterate_runs_the_body_steps_times():
    assert int(ops.iterate(lambda i, x: x + i, tf.constant(0), 5)) == 0 + 1 + 2 + 3 + 4


def test_iterate_counts_from_first_and_stops_when_inactive():
    total, count = ops.iterate(
        lambda i, s: (s[0] + i, s[1] + 1), (tf.constant(0), tf.constant(0)), 5, first=3
    )
    assert (int(total), int(count)) == (3 + 4 + 5 + 6 + 7, 5)
    stopped = ops.iterate(lambda i, s: s + 1, tf.constant(0), 10, active=lambda s: s < 4)
    assert int(stopped) == 4


# A quadratic objective with a known ascent direction: -(x' - target)² per example.
def _quadratic(target):
    return lambda x_adv: (
        -tf.reduce_sum(tf.reshape((x_adv - target) ** 2, [tf.shape(x_adv)[0], -1]), axis=1)
    )


def _numpy_ascent(x, start, target, epsilon, step, steps, norm, decay=None):
    """The projected ascent written out in numpy, for the objective above."""
    x_adv, momentum = start.copy(), np.zeros_like(start)
    for _ in range(steps):
        grad = -2.0 * (x_adv - target)
        if norm == "l2":
            norms = np.sqrt((grad**2).sum(axis=1, keepdims=True))
            x_adv = x_adv + step * grad / np.maximum(norms, 1e-12)
            delta = x_adv - x
            length = np.sqrt((delta**2).sum(axis=1, keepdims=True))
            x_adv = np.clip(x + delta * np.minimum(1.0, epsilon / np.maximum(length, 1e-12)), 0, 1)
        else:
            if decay is not None:
                momentum = decay * momentum + grad / (
                    np.abs(grad).sum(axis=1, keepdims=True) + 1e-12
                )
                grad = momentum
            x_adv = np.clip(np.clip(x_adv + step * np.sign(grad), x - epsilon, x + epsilon), 0, 1)
    return x_adv


@pytest.mark.parametrize("norm,decay", [("linf", None), ("linf", 0.0), ("linf", 0.5), ("l2", None)])
def test_ascend_matches_numpy_and_stays_in_the_ball(norm, decay):
    rng = np.random.default_rng(1)
    x = rng.uniform(0.1, 0.9, size=(2, 6)).astype("float32")
    target = rng.uniform(-0.5, 1.5, size=(2, 6)).astype("float32")
    epsilon, step = (0.2, 0.07) if norm == "linf" else (0.3, 0.1)
    x_adv = ops.ascend(
        _quadratic(tf.constant(target)),
        tf.constant(x),
        tf.constant(x),
        epsilon=epsilon,
        step_size=step,
        steps=6,
        clip_min=0.0,
        clip_max=1.0,
        norm=norm,
        decay=decay,
    ).numpy()
    expected = _numpy_ascent(x, x, target, epsilon, step, 6, norm, decay)
    np.testing.assert_allclose(x_adv, expected, atol=1e-5)
    distance = (
        np.abs(x_adv - x).max(axis=1) if norm == "linf" else np.linalg.norm(x_adv - x, axis=1)
    )
    assert np.all(distance <= epsilon + 1e-6) and x_adv.min() >= 0 and x_adv.max() <= 1


def test_ascend_keeps_each_examples_best_iterate():
    # Steps of 0.3 overshoot the maximum at x + 0.1, so the last iterate is
    # worse than the first step's; the best iterate is kept per example.
    x = tf.constant([[0.5], [0.2]])
    objective = _quadratic(x + 0.1)
    kwargs = dict(epsilon=0.4, step_size=0.3, steps=3, clip_min=0.0, clip_max=1.0)
    last = ops.ascend(objective, x, x, **kwargs)
    best_x, best = ops.ascend(objective, x, x, keep_best=True, **kwargs)
    np.testing.assert_allclose(best, objective(best_x), atol=1e-7)
    assert np.all(best.numpy() > objective(last).numpy())
    assert np.all(best.numpy() >= objective(x).numpy())


def test_ascend_stops_gradients():
    x = tf.Variable([[0.5, 0.5]])
    with tf.GradientTape() as tape:
        x_adv = ops.ascend(
            _quadratic(tf.constant([[1.0, 0.0]])),
            x,
            x + 0.0,
            epsilon=0.1,
            step_size=0.05,
            steps=2,
            clip_min=0.0,
            clip_max=1.0,
        )
        total = tf.reduce_sum(x_adv)
    assert tape.gradient(total, x) is None
