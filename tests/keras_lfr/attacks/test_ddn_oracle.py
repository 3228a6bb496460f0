"""DDN against a numpy port of Rony et al.'s reference implementation, step by step.

The port follows `ddn` of Rony's adversarial library
(`adv_lib/attacks/decoupled_direction_norm.py`, untargeted, without
quantisation: `levels=None`): at iteration i, with α = 0.01 + 0.99·(1 +
cos(π i / steps))/2 (SGD with lr 1 under `CosineAnnealingLR(T_max=steps,
eta_min=0.01)`), record x + δ if it is adversarial with a smaller ‖δ‖₂ than
the best so far; step δ ← δ + α·∇CE/‖∇CE‖₂; multiply the norm ε by 1 − γ if
x + δ was adversarial, else by 1 + γ, capped at the largest norm the box
allows, ‖max(x, 1 − x)‖₂; rescale δ to ε and clip x + δ to [0, 1]. Rony et
al., "Decoupling Direction and Norm for Efficient Gradient-Based L2
Adversarial Attacks and Defenses", CVPR 2019.

keras_lfr's `ddn` does not cap ε (the cases below keep ε below the cap, so
that the two agree), and it also checks the last iterate, which the
reference does not; the port does the latter when `check_last` is set. The
model is the numpy twin of a small ReLU CNN (`helpers.oracles`).
"""

import math

import numpy as np
import pytest
from helpers.oracles import (
    classified_problem,
    recording_iterate,
)

from keras_lfr import attacks, ops


def l2(v):
    return np.sqrt(np.sum(v.reshape(len(v), -1) ** 2, axis=1))


def ddn_numpy(net, x, y, steps, gamma=0.05, init_norm=1.0, check_last=False):
    """Rony's `ddn` (untargeted, `levels=None`) in numpy.

    Returns the adversarial inputs, their norms (inf where none was found),
    the history of `(δ, ε, best_l2, best_x)` after each iteration, and
    `closest`: the smallest gap between the top two logits at any iterate, the
    margin of the decisions "adversarial or not" (where float32 and float64
    could disagree). `worst_norm` is returned too, to check it never bound.
    """
    x = x.astype(np.float64)
    delta = np.zeros_like(x)
    eps = np.full(len(x), init_norm)
    worst_norm = l2(np.maximum(x, 1 - x))
    best_l2, best_delta = worst_norm.copy(), np.zeros_like(x)
    adv_found = np.zeros(len(x), bool)
    history, closest, largest = [], np.inf, 0.0

    def expand(v):
        return v[:, None, None, None]

    for i in range(steps):
        alpha = 0.01 + (1 - 0.01) * (1 + math.cos(math.pi * i / steps)) / 2
        norm = l2(delta)
        grad, logits = net.ce_input_gradient(x + delta, y)
        top_two = np.sort(logits, axis=1)[:, -2:]
        closest = min(closest, (top_two[:, 1] - top_two[:, 0]).min())
        is_adv = np.argmax(logits, axis=1) != y
        is_both = is_adv & (norm < best_l2)
        adv_found |= is_adv
        best_l2 = np.where(is_both, norm, best_l2)
        best_delta = np.where(expand(is_both), delta, best_delta)

        grad_norms = l2(grad)
        assert np.all(grad_norms > 1e-12)  # the reference would draw a random direction
        delta = delta + alpha * grad / expand(grad_norms)

        eps = np.where(is_adv, (1 - gamma) * eps, (1 + gamma) * eps)
        largest = max(largest, float(np.max(eps / worst_norm)))
        eps = np.minimum(eps, worst_norm)
        delta = delta * expand(eps / l2(delta))
        delta = np.clip(x + delta, 0.0, 1.0) - x
        found = np.where(adv_found, best_l2, np.inf)
        history.append((delta.copy(), eps.copy(), found, x + best_delta))
    if check_last:
        logits = net.logits(x + delta)
        top_two = np.sort(logits, axis=1)[:, -2:]
        closest = min(closest, (top_two[:, 1] - top_two[:, 0]).min())
        norm = l2(delta)
        is_both = (np.argmax(logits, axis=1) != y) & (norm < best_l2)
        adv_found |= is_both
        best_l2 = np.where(is_both, norm, best_l2)
        best_delta = np.where(expand(is_both), delta, best_delta)
    norms = np.where(adv_found, best_l2, np.inf)
    return x + best_delta, norms, history, closest, largest


@pytest.fixture(scope="module")
def problem():
    return classified_problem(seed=3)


# (steps, init_norm, gamma): from a small norm that grows until some examples
# break (then shrinks) and others stay unbroken, and from a large one that
# breaks every example at once and shrinks.
CASES = [(10, 0.1, 0.1), (8, 1.0, 0.05)]


@pytest.mark.parametrize("steps, init_norm, gamma", CASES)
def test_ddn_matches_the_reference_step_by_step(problem, monkeypatch, steps, init_norm, gamma):
    model, net, x, y = problem
    expected, expected_norms, history, closest, largest = ddn_numpy(
        net, x, y, steps, gamma=gamma, init_norm=init_norm, check_last=True
    )
    assert closest > 1e-5  # no "adversarial or not" within rounding of a tie
    assert largest < 1.0  # the reference's cap on ε never binds here
    trace = []
    monkeypatch.setattr(ops, "iterate", recording_iterate(trace))
    ours, norms = attacks.ddn(
        model, x, y, steps=steps, init_norm=init_norm, gamma=gamma, return_norms=True
    )
    (states,) = trace
    assert len(states) == steps
    for i, (state, (delta, eps, best_norm, best_x)) in enumerate(zip(states, history, strict=True)):
        where = f"iteration {i}"
        np.testing.assert_allclose(state[0], delta, atol=2e-6, err_msg=where)
        np.testing.assert_allclose(state[1], eps, rtol=1e-6, err_msg=where)
        np.testing.assert_allclose(state[2], best_norm, rtol=1e-5, err_msg=where)
        np.testing.assert_allclose(state[3], best_x, atol=2e-6, err_msg=where)
    np.testing.assert_allclose(ours, expected, atol=2e-6)
    np.testing.assert_allclose(norms, expected_norms, rtol=1e-5)


def test_the_cases_grow_and_shrink_the_norm_and_find_adversarials(problem):
    # Not vacuous: ε rises and falls, the best norm improves after the first
    # adversarial is found, and the first case leaves some examples unbroken.
    _, net, x, y = problem
    found = []
    for steps, init_norm, gamma in CASES:
        _, norms, history, _, _ = ddn_numpy(net, x, y, steps, gamma=gamma, init_norm=init_norm)
        eps = np.stack([h[1] for h in history])
        assert np.any(np.diff(eps, axis=0) < 0)
        best = np.stack([h[2] for h in history])
        finite = np.isfinite(best[:-1]) & np.isfinite(best[1:])
        assert np.any(best[1:][finite] < best[:-1][finite])
        found.append(np.isfinite(norms).sum())
        if init_norm < 1:
            assert np.any(np.diff(eps, axis=0) > 0)
    assert 0 < found[0] < len(y) and found[1] == len(y)
