"""PGD stays in its ball and hurts an undefended model."""

import numpy as np
import pytest
from conftest import tiny_batch, tiny_model

from keras_lfr import attacks, ops


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
def test_pgd_stays_in_ball_and_pixel_range(norm, epsilon):
    model = tiny_model()
    x, y = tiny_batch(batch=16)
    x[:4] = 0.0
    x_adv = attacks.pgd(
        model, x, y, epsilon=epsilon, step_size=0.2, steps=3, norm=norm, restarts=2
    ).numpy()
    delta = (x_adv - x).reshape(len(x), -1)
    size = np.abs(delta).max(axis=1) if norm == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(size <= epsilon + 1e-5)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    if epsilon == 0:
        np.testing.assert_array_equal(x_adv, x)


def test_pgd_raises_the_loss_and_restarts_keep_the_worst_case():
    model = tiny_model()
    x, y = tiny_batch(batch=64)
    clean = ops.cross_entropy(y, model(x)).numpy()
    one = ops.cross_entropy(
        y, model(attacks.pgd(model, x, y, epsilon=0.1, step_size=0.02, steps=5))
    ).numpy()
    three = ops.cross_entropy(
        y, model(attacks.pgd(model, x, y, epsilon=0.1, step_size=0.02, steps=5, restarts=3))
    ).numpy()
    assert one.mean() > clean.mean()
    assert np.all(three >= one - 1e-5)


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        ({"epsilon": -1.0}, "epsilon"),
        ({"steps": 0}, "steps"),
        ({"norm": "l3"}, "norm"),
        ({"restarts": 0}, "restarts"),
    ],
)
def test_pgd_rejects_bad_arguments(kwargs, argument):
    model = tiny_model()
    x, y = tiny_batch()
    args = {"epsilon": 0.1, "step_size": 0.01, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        attacks.pgd(model, x, y, **args)
