"""The whole FAB-T loop on linear models, against the closed-form minimal l-inf distance.

For a linear classifier z = W x + b, the points classified as c rather than
the label y form the half-space (w_c − w_y)·x' + (b_c − b_y) > 0, and the
least l-inf perturbation that reaches it (when the pixel box does not bind)
moves every coordinate by d_c = |(w_c − w_y)·x + b_c − b_y| / ‖w_c − w_y‖₁.
Misclassification is the union of these half-spaces, so no adversarial point
is closer than d* = min_c d_c.

On such a model FAB's linearisation is exact and its walk towards target t
stays on the segment from x along the l-inf projection direction: from x +
a·d_t·s, both projections (of the iterate and of x) point along s, and the
step lands at the ratio c = (1 − α)(a + η(1 − a)) + α·η with α =
min((1 − a) / (2 − a), α_max); if c > 1 the point is adversarial (kept if it is
the closest so far) and the walk steps back to β·c, else it goes on from c.
The tests run `attacks.fab` and compare the perturbation it returns with
d_t times the best ratio of that scalar recurrence (two classes), and with
the bounds d* ≤ ‖δ‖∞ ≤ ratio·d* (four classes, every target).
"""

import keras
import numpy as np
import pytest

from keras_lfr import attacks

SHAPE = (3, 4, 1)
# float32 pixels near 0.5 are spaced 6e-8 apart: the perturbation's resolution.
ROUNDING = 3e-7


def linear_model(weights, bias):
    model = keras.Sequential(
        [keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(len(bias))]
    )
    model.layers[-1].set_weights([weights.astype("float32"), bias.astype("float32")])
    return model


def distances(weights, bias, x, y):
    """d_c = |gap_c| / ‖w_c − w_y‖₁ for every class c (inf for c = y), in float64."""
    flat = x.reshape(len(x), -1).astype(np.float64)
    weights, bias = weights.astype(np.float64), bias.astype(np.float64)
    normals = weights.T[None, :, :] - weights.T[y][:, None, :]  # (batch, classes, d)
    gaps = np.einsum("bcd,bd->bc", normals, flat) + bias[None, :] - bias[y][:, None]
    d = np.abs(gaps) / np.maximum(np.abs(normals).sum(axis=2), 1e-300)
    d[np.arange(len(y)), y] = np.inf
    return d


def best_ratio(steps, alpha_max=0.1, eta=1.05, beta=0.9):
    """The closest adversarial of FAB's walk on a linear boundary, in units of d_t."""
    a, best = 0.0, np.inf
    for _ in range(steps):
        remaining = 1.0 - a
        alpha = min(remaining / (remaining + 1.0), alpha_max)
        c = (1 - alpha) * (a + eta * remaining) + alpha * eta
        if c > 1.0:
            best = min(best, c)
            a = beta * c
        else:
            a = c
    return best


def test_the_recurrence_gives_the_known_first_steps():
    # One step overshoots by η; the second, from β·η, lands just past the boundary.
    assert best_ratio(1) == pytest.approx(1.05)
    alpha = 0.055 / 1.055
    second = (1 - alpha) * (0.945 + 1.05 * 0.055) + alpha * 1.05
    assert best_ratio(2) == pytest.approx(second) and 1.0 < second < 1.006


def problem(classes, batch, seed):
    """A linear classifier whose boundaries pass near the centre of the box, and a batch there.

    The classes' weights have different scales, so that the nearest boundary
    is not always the runner-up's.
    """
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(int(np.prod(SHAPE)), classes)) * rng.uniform(0.3, 3.0, classes)
    bias = -0.5 * weights.sum(axis=0) + rng.normal(scale=0.1, size=classes)
    x = rng.uniform(0.3, 0.7, size=(batch, *SHAPE)).astype("float32")
    y = np.argmax(x.reshape(batch, -1) @ weights + bias, axis=1)
    return weights, bias, x, y


@pytest.mark.parametrize(
    "steps, alpha_max, eta, beta",
    [(1, 0.1, 1.05, 0.9), (2, 0.1, 1.05, 0.9), (10, 0.1, 1.05, 0.9), (10, 0.3, 1.2, 0.7)],
)
def test_two_class_walk_follows_the_closed_form(steps, alpha_max, eta, beta):
    weights, bias, x, y = problem(classes=2, batch=8, seed=0)
    d = distances(weights, bias, x, y).min(axis=1)
    ratio = best_ratio(steps, alpha_max, eta, beta)
    # The box never binds: x ± ratio·d stays inside [0, 1].
    assert np.all(d * max(ratio, eta) < 0.3)
    model = linear_model(weights, bias)
    x_adv = attacks.fab(
        model,
        x,
        y,
        epsilon=1.0,
        steps=steps,
        num_targets=1,
        alpha_max=alpha_max,
        eta=eta,
        beta=beta,
    ).numpy()
    perturbation = np.abs(x_adv - x).reshape(len(x), -1)
    np.testing.assert_allclose(perturbation.max(axis=1), ratio * d, rtol=1e-5, atol=ROUNDING)
    # Every coordinate the boundary's normal touches moves by the same amount.
    np.testing.assert_allclose(perturbation.min(axis=1), ratio * d, rtol=1e-5, atol=ROUNDING)
    assert np.all(np.argmax(model(x_adv), axis=1) != y)


def test_every_target_finds_the_minimal_linf_distance_within_the_walks_ratio():
    weights, bias, x, y = problem(classes=4, batch=16, seed=1)
    d = distances(weights, bias, x, y)
    d_star = d.min(axis=1)
    steps = 6
    ratio = best_ratio(steps)
    assert ratio < 1.006
    assert np.all(d_star * 1.05 < 0.3)  # the walk towards the nearest class stays in the box
    model = linear_model(weights, bias)
    x_adv = attacks.fab(model, x, y, epsilon=1.0, steps=steps, num_targets=3).numpy()
    norms = np.abs(x_adv - x).reshape(len(x), -1).max(axis=1)
    assert np.all(np.argmax(model(x_adv), axis=1) != y)
    assert np.all(norms >= d_star - ROUNDING)  # nothing beats the closed form
    assert np.all(norms <= ratio * d_star + ROUNDING)
    # The targets are the most likely wrong classes: with one target, the
    # examples whose nearest boundary is not the runner-up's are found farther.
    runner_up = np.argsort(-(x.reshape(len(x), -1) @ weights + bias), axis=1)[:, 1]
    one = attacks.fab(model, x, y, epsilon=1.0, steps=steps, num_targets=1).numpy()
    one_norms = np.abs(one - x).reshape(len(x), -1).max(axis=1)
    nearest_is_runner_up = np.argmin(d, axis=1) == runner_up
    assert 0 < nearest_is_runner_up.sum() < len(x)
    np.testing.assert_allclose(
        one_norms[nearest_is_runner_up], norms[nearest_is_runner_up], atol=ROUNDING
    )
    assert np.all(one_norms[~nearest_is_runner_up] > norms[~nearest_is_runner_up] * 1.01)


def test_epsilon_keeps_exactly_the_examples_broken_within_it():
    weights, bias, x, y = problem(classes=4, batch=16, seed=1)
    d_star = distances(weights, bias, x, y).min(axis=1)
    model = linear_model(weights, bias)
    ratio = best_ratio(6)
    epsilon = float(np.median(d_star))
    x_adv = attacks.fab(model, x, y, epsilon=epsilon, steps=6, num_targets=3).numpy()
    broken = np.any(x_adv != x, axis=(1, 2, 3))
    # Broken when the closest adversarial found (d*·ratio at most) is within ε,
    # never when even the closed-form minimum lies beyond it.
    assert np.all(broken[ratio * d_star < epsilon - ROUNDING])
    assert not np.any(broken[d_star > epsilon + ROUNDING])
    assert 0 < broken.sum() < len(x)
    np.testing.assert_array_equal(np.argmax(model(x_adv), axis=1) != y, broken)
