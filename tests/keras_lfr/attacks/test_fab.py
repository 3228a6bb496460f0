"""FAB-T: its l-inf projection and its step against numpy, and its strength."""

import keras
import numpy as np
import pytest

from keras_lfr import attacks
from keras_lfr.attacks.fab import fab_step, project_onto_hyperplane_linf


def projection_numpy(x, w, c, clip_min=0.0, clip_max=1.0, iterations=200):
    """The least-l-inf δ with <w, δ> = c in the box, row by row, by bisection on the radius."""
    deltas = []
    for xi, wi, ci in zip(x, w, c, strict=True):
        direction = np.sign(wi) * np.sign(ci)
        room = np.where(direction > 0, clip_max - xi, xi - clip_min)
        room = np.where(direction == 0, 0.0, np.maximum(room, 0.0))

        def reach(r, wi=wi, room=room):
            return np.sum(np.abs(wi) * np.minimum(r, room))

        low, high = 0.0, float(room.max())
        if reach(high) < abs(ci):
            radius = high  # infeasible: as far as the box allows
        else:
            for _ in range(iterations):
                middle = (low + high) / 2
                low, high = (middle, high) if reach(middle) < abs(ci) else (low, middle)
            radius = high
        deltas.append(direction * np.minimum(radius, room))
    return np.stack(deltas)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_projection_is_the_least_linf_step_onto_the_hyperplane_in_the_box(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(size=(6, 50)).astype("float32")
    x[0, :10] = 0.0  # pixels at the box's bounds
    x[1, :10] = 1.0
    w = rng.normal(size=(6, 50)).astype("float32")
    w[2, ::3] = 0.0  # coordinates that cannot help
    c = rng.normal(scale=2.0, size=6).astype("float32")
    c[3] = 0.0  # already on the hyperplane
    c[4] = 1e3  # unreachable within the box
    delta = np.asarray(project_onto_hyperplane_linf(x, w, c))
    expected = projection_numpy(x, w, c)
    np.testing.assert_allclose(delta, expected, atol=1e-5)
    assert np.all(x + delta >= -1e-6) and np.all(x + delta <= 1 + 1e-6)
    reachable = np.arange(6) != 4
    np.testing.assert_allclose(
        np.sum(w * delta, axis=1)[reachable], c[reachable], rtol=1e-4, atol=1e-4
    )
    assert np.all(delta[3] == 0) and np.all(delta[2, ::3] == 0)
    # Unreachable: every useful coordinate moved to its bound.
    useful = w[4] != 0
    assert np.allclose((x + delta)[4][useful], np.where(w[4][useful] > 0, 1.0, 0.0))


def linear_model(seed=0, inputs=12, classes=4):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential([keras.Input((inputs,)), keras.layers.Dense(classes)])
    rng = np.random.default_rng(seed)
    weights = rng.normal(size=(inputs, classes)).astype("float32")
    bias = rng.normal(size=classes).astype("float32")
    model.layers[0].set_weights([weights, bias])
    return model, weights, bias


def test_step_matches_numpy_and_lands_on_a_linear_boundary():
    model, weights, bias = linear_model()
    rng = np.random.default_rng(1)
    x_orig = rng.uniform(0.3, 0.7, size=(5, 12)).astype("float32")
    x = np.clip(x_orig + rng.uniform(-0.1, 0.1, size=x_orig.shape), 0, 1).astype("float32")
    labels = np.argmax(x_orig @ weights + bias, axis=1)
    targets = (labels + 1) % 4
    normal = (weights[:, targets] - weights[:, labels]).T  # ∇(f_t − f_y), per example
    gap = np.sum(x * normal, axis=1) + bias[targets] - bias[labels]
    for alpha_max, eta in ((0.1, 1.05), (0.0, 1.0), (1.0, 1.2)):
        step = np.asarray(
            fab_step(
                x, x_orig, gap, normal, alpha_max=alpha_max, eta=eta, clip_min=0.0, clip_max=1.0
            )
        )
        # The same step written out in numpy.
        delta = projection_numpy(x, normal, -gap)
        gap_orig = gap + np.sum(normal * (x_orig - x), axis=1)
        delta_orig = projection_numpy(x_orig, normal, -gap_orig)
        norm, norm_orig = np.abs(delta).max(axis=1), np.abs(delta_orig).max(axis=1)
        alpha = np.minimum(norm / (norm + norm_orig), alpha_max)[:, None]
        expected = np.clip(
            (1 - alpha) * (x + eta * delta) + alpha * (x_orig + eta * delta_orig), 0, 1
        )
        np.testing.assert_allclose(step, expected, atol=1e-5)
        if (alpha_max, eta) == (0.0, 1.0):
            # A linear model's linearisation is exact: one step reaches f_t = f_y.
            logits = step @ weights + bias
            rows = np.arange(5)
            np.testing.assert_allclose(logits[rows, targets], logits[rows, labels], atol=1e-4)


def test_fab_breaks_an_undefended_model_within_epsilon(undefended):
    cnn, x, y = undefended
    x, y = x[:32], y[:32]
    x_adv = attacks.fab(cnn, x, y, epsilon=0.3, steps=20, num_targets=3).numpy()
    assert np.abs(x_adv - x.numpy()).max() <= 0.3 + 1e-6
    fooled = np.argmax(cnn(x_adv, training=False), axis=1) != y
    assert fooled.mean() >= 0.9
    # What it does not break, it returns unchanged.
    np.testing.assert_array_equal(x_adv[~fooled], x.numpy()[~fooled])
    # FAB minimises the perturbation: at a smaller radius, fewer are broken.
    small = attacks.fab(cnn, x, y, epsilon=0.02, steps=20, num_targets=3).numpy()
    assert np.mean(np.argmax(cnn(small, training=False), axis=1) != y) < fooled.mean()
