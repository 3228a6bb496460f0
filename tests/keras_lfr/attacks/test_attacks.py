"""Attacks: constraints, strength on an undefended model, targets, errors."""

import functools
import importlib

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import tiny_batch, tiny_model

from keras_lfr import attacks, ops


def accuracy(model, x, y):
    return float(np.mean(np.argmax(model(x, training=False), axis=1) == y))


LINF_ATTACKS = {
    "fgsm": functools.partial(attacks.fgsm, random_start=True),
    "pgd": functools.partial(attacks.pgd, step_size=0.05, steps=3, restarts=2),
    "mi_fgsm": functools.partial(attacks.mi_fgsm, step_size=0.05, steps=3),
    "apgd": functools.partial(attacks.apgd, steps=4),
    "apgd_t": functools.partial(attacks.apgd, steps=4, loss="dlr", num_targets=2),
    "square": functools.partial(attacks.square, queries=20),
    "fab_t": functools.partial(attacks.fab, steps=3, num_targets=2),
}


@pytest.mark.parametrize("name", sorted(LINF_ATTACKS))
@pytest.mark.parametrize("epsilon", [0.0, 0.1, 0.5])
def test_linf_attacks_stay_in_ball_and_pixel_range(name, epsilon):
    model = tiny_model()
    x, y = tiny_batch(batch=16)
    x[:4] = 0.0
    x[4:8] = 1.0
    x_adv = LINF_ATTACKS[name](model, x, y, epsilon=epsilon).numpy()
    assert x_adv.shape == x.shape
    assert np.abs(x_adv - x).max() <= epsilon + 1e-6
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    if epsilon == 0:
        np.testing.assert_array_equal(x_adv, x)


def test_l2_pgd_and_ddn_stay_in_pixel_range():
    model = tiny_model()
    x, y = tiny_batch(batch=16)
    x_adv = attacks.pgd(model, x, y, epsilon=0.5, step_size=0.2, steps=3, norm="l2").numpy()
    assert np.linalg.norm((x_adv - x).reshape(16, -1), axis=1).max() <= 0.5 + 1e-5
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    x_adv, norms = attacks.ddn(model, x, y, steps=5, return_norms=True)
    assert x_adv.numpy().min() >= 0 and x_adv.numpy().max() <= 1
    found = np.isfinite(norms.numpy())
    np.testing.assert_allclose(
        np.linalg.norm((x_adv.numpy() - x).reshape(16, -1), axis=1)[found],
        norms.numpy()[found],
        rtol=1e-4,
        atol=1e-5,
    )
    np.testing.assert_array_equal(x_adv.numpy()[~found], x[~found])


def test_pgd_breaks_an_undefended_model(undefended):
    model, x, y = undefended
    assert accuracy(model, x, y) > 0.9
    x_adv = attacks.pgd(model, x, y, epsilon=0.3, step_size=0.01, steps=40)
    assert accuracy(model, x_adv, y) < 0.05


def test_apgd_is_at_least_as_strong_as_pgd(undefended):
    model, x, y = undefended
    pgd = accuracy(model, attacks.pgd(model, x, y, epsilon=0.08, step_size=0.01, steps=20), y)
    apgd = accuracy(model, attacks.apgd(model, x, y, epsilon=0.08, steps=20), y)
    assert pgd > 0.1  # the budget leaves something to compare
    assert apgd <= pgd + 0.01


@pytest.mark.parametrize(
    "attack",
    [
        # ε = 0.5: at 0.3 a fixed target (y + 1) is out of reach for about a third of
        # these images even though the target's CE falls from ~12 to ~1.3.
        functools.partial(attacks.pgd, epsilon=0.5, step_size=0.02, steps=40),
        functools.partial(attacks.mi_fgsm, epsilon=0.5, step_size=0.02, steps=40),
    ],
    ids=["pgd", "mi_fgsm"],
)
def test_targeted_attacks_reach_their_targets(undefended, attack):
    model, x, y = undefended
    targets = (y + 1) % 10
    x_adv = attack(model, x, y, targets=targets)
    hit = np.mean(np.argmax(model(x_adv, training=False), axis=1) == targets)
    assert hit > 0.9


def test_apgd_targeted_dlr_breaks_the_model(undefended):
    model, x, y = undefended
    x_adv = attacks.apgd(model, x, y, epsilon=0.3, steps=20, loss="dlr", num_targets=3)
    assert accuracy(model, x_adv, y) < 0.05


def test_ddn_norms_shrink_with_more_iterations(undefended):
    model, x, y = undefended
    _, short = attacks.ddn(model, x, y, steps=10, return_norms=True)
    _, long = attacks.ddn(model, x, y, steps=60, return_norms=True)
    both = np.isfinite(short.numpy()) & np.isfinite(long.numpy())
    # 10 iterations let the norm grow to about 1.6 only: about half are found.
    assert both.mean() >= 0.25
    short, long = short.numpy()[both], long.numpy()[both]
    assert long.mean() < 0.95 * short.mean()
    assert np.mean(long <= short + 1e-6) > 0.8


def test_dlr_loss_matches_its_definition():
    logits = np.array([[3.0, 1.0, 2.0, 0.0], [0.5, 4.0, 1.0, 2.0]], "float32")
    labels = np.array([0, 0])
    # example 0: correct, second best 2 -> -(3 - 2) / (3 - 1); example 1: -(0.5 - 4) / (4 - 1)
    np.testing.assert_allclose(attacks.dlr_loss(logits, labels), [-0.5, 3.5 / 3], rtol=1e-6)
    targeted = attacks.dlr_loss(logits, labels, targets=np.array([2, 3]))
    np.testing.assert_allclose(targeted, [-(3 - 2) / (3 - 0.5), -(0.5 - 2) / (4 - 0.75)], rtol=1e-6)


def test_square_fools_without_gradients(undefended):
    model, x, y = undefended

    def scores_only(inputs, training=False):  # a model the attack cannot differentiate
        return tf.stop_gradient(model(inputs, training=training))

    x_adv = attacks.square(scores_only, x[:32], y[:32], epsilon=0.3, queries=300)
    assert accuracy(model, x_adv, y[:32]) < 0.5


@pytest.mark.parametrize(
    "call, argument",
    [
        (lambda m, x, y: attacks.pgd(m, x, y, epsilon=-0.1, step_size=0.1, steps=1), "epsilon"),
        (lambda m, x, y: attacks.pgd(m, x, y, epsilon=0.1, step_size=0.1, steps=0), "steps"),
        (
            lambda m, x, y: attacks.pgd(m, x, y, epsilon=0.1, step_size=0.1, steps=1, norm="l1"),
            "norm",
        ),
        (lambda m, x, y: attacks.fgsm(m, x, y, epsilon=1.5), "epsilon"),
        (
            lambda m, x, y: attacks.mi_fgsm(m, x, y, epsilon=0.1, step_size=0.1, steps=1, decay=-1),
            "decay",
        ),
        (lambda m, x, y: attacks.apgd(m, x, y, epsilon=0.1, loss="hinge"), "loss"),
        (lambda m, x, y: attacks.apgd(m, x, y, epsilon=0.1, num_targets=10), "num_targets"),
        (lambda m, x, y: attacks.ddn(m, x, y, steps=0), "steps"),
        (lambda m, x, y: attacks.ddn(m, x, y, gamma=1.5), "gamma"),
        (lambda m, x, y: attacks.square(m, x, y, epsilon=0.1, queries=0), "queries"),
        (lambda m, x, y: attacks.square(m, x.reshape(len(x), -1), y, epsilon=0.1), "x"),
    ],
)
def test_attacks_reject_bad_arguments(call, argument):
    x, y = tiny_batch()
    with pytest.raises(ValueError, match=f"argument `{argument}`"):
        call(tiny_model(), x, y)


def test_attacks_compile_with_xla():
    model = tiny_model()
    x, y = tiny_batch()
    for name, attack in LINF_ATTACKS.items():
        graph = tf.function(lambda: attack(model, x, y, epsilon=0.1))()  # noqa: B023
        xla = tf.function(lambda: attack(model, x, y, epsilon=0.1), jit_compile=True)()  # noqa: B023
        np.testing.assert_allclose(xla, graph, atol=1e-5, err_msg=name)


def _apgd_ce_numpy(weights, x, y, x_start, epsilon, steps, momentum_from_start):
    """AutoAttack's APGD-CE loop (`autopgd_base.attack_single_run`, l-inf) in numpy.

    `momentum_from_start=True` is AutoAttack's rule (the momentum term is x_k
    minus the point the previous step started from); `False` is the rule
    keras_lfr used before (minus the point just computed: always zero).
    """
    w1, b1, w2, b2 = weights
    flat = x.reshape(len(x), -1)

    def loss_and_grad(z):
        hidden = np.tanh(z.reshape(len(z), -1) @ w1 + b1)
        logits = hidden @ w2 + b2
        p = np.exp(logits - logits.max(axis=1, keepdims=True))
        p /= p.sum(axis=1, keepdims=True)
        loss = -np.log(p[np.arange(len(y)), y])
        p[np.arange(len(y)), y] -= 1.0
        grad = ((p @ w2.T) * (1 - hidden**2)) @ w1.T
        fooled = np.argmax(logits, axis=1) != y
        return loss, grad.reshape(z.shape), fooled

    def project(z):
        z = np.clip(z.reshape(len(z), -1), flat - epsilon, flat + epsilon)
        return np.clip(z, 0.0, 1.0).reshape(x.shape)

    window, min_window = max(int(0.22 * steps), 1), max(int(0.06 * steps), 1)
    shrink = max(int(0.03 * steps), 1)
    x_adv = x_start.copy()
    loss, grad, fooled = loss_and_grad(x_adv)
    x_best, grad_best, loss_best = x_adv.copy(), grad.copy(), loss.copy()
    x_fooled, ever_fooled = x_adv.copy(), fooled.copy()
    step = np.full(len(x), 2.0 * epsilon)[:, None, None, None]
    x_old = x_adv.copy()
    previous, increases, since_check = loss.copy(), np.zeros(len(x)), 0
    loss_at_check, reduced_at_check = loss_best.copy(), np.ones(len(x), bool)
    for i in range(steps):
        a = 0.75 if i > 0 else 1.0
        momentum_term = x_adv - x_old
        start_of_step = x_adv.copy()
        z = project(x_adv + step * np.sign(grad))
        x_adv = project(x_adv + a * (z - x_adv) + (1 - a) * momentum_term)
        x_old = start_of_step if momentum_from_start else x_adv.copy()
        loss, grad, fooled = loss_and_grad(x_adv)
        x_fooled[fooled] = x_adv[fooled]
        ever_fooled |= fooled
        improved = loss > loss_best
        x_best[improved], grad_best[improved] = x_adv[improved], grad[improved]
        loss_best[improved] = loss[improved]
        increases += loss > previous
        previous = loss.copy()
        since_check += 1
        if since_check == window:
            stalled = ~reduced_at_check & (loss_at_check >= loss_best)
            reduce = (increases <= window * 0.75) | stalled
            reduced_at_check, loss_at_check = reduce, loss_best.copy()
            step[reduce] /= 2.0
            x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]
            window, since_check, increases = max(window - shrink, min_window), 0, np.zeros(len(x))
    return np.where(ever_fooled[:, None, None, None], x_fooled, x_best)


def test_apgd_momentum_follows_autoattack():
    apgd_module = importlib.import_module("keras_lfr.attacks.apgd")

    keras.utils.set_random_seed(3)
    model = keras.Sequential(
        [
            keras.Input((3, 3, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(6, activation="tanh"),
            keras.layers.Dense(3),
        ]
    )
    rng = np.random.default_rng(0)
    x = rng.uniform(0.35, 0.65, size=(16, 3, 3, 1)).astype("float32")
    y = rng.integers(0, 3, size=16).astype("int32")
    epsilon, steps = 0.3, 10
    start = apgd_module._start(x, epsilon, ops.fold_seed(ops.as_seed(0), 0), 0.0, 1.0).numpy()
    weights = [w.astype("float64") for w in model.get_weights()]
    ours = attacks.apgd(model, x, y, epsilon=epsilon, steps=steps, seed=0).numpy()
    reference = _apgd_ce_numpy(weights, x, y, start, epsilon, steps, momentum_from_start=True)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    # The case discriminates: the old rule (momentum term always zero) ends elsewhere.
    old_rule = _apgd_ce_numpy(weights, x, y, start, epsilon, steps, momentum_from_start=False)
    assert np.abs(old_rule - reference).max() > 1e-2


@pytest.mark.parametrize(
    "iteration, rescale, halvings",
    [
        (0, False, 0),
        (10, False, 0),
        (11, False, 1),
        (50, False, 1),
        (51, False, 2),
        (4001, False, 7),
        (8001, False, 9),
        # rescaled to 10,000 (queries = 5,000): iteration i counts as floor(2 i)
        (5, True, 0),
        (6, True, 1),
        (25, True, 1),
        (26, True, 2),
        (4001, True, 9),
    ],
)
def test_square_p_schedule(iteration, rescale, halvings):
    square_module = importlib.import_module("keras_lfr.attacks.square")
    p = square_module.square_fraction(0.8, iteration, 5000, rescale_schedule=rescale)
    assert float(p) == pytest.approx(0.8 / 2**halvings)
