"""APGD-T against a numpy port of AutoAttack's code, step by step from the same start.

The port follows `APGDAttack_targeted` of AutoAttack (`autopgd_base.py`,
l-inf): the targeted DLR loss −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2), one run
per target t = the 2nd, 3rd, … most likely class, each of `n_iter` steps
with a first step of 2ε, momentum 0.75 on the previous step's start point,
and checkpoints (first window 0.22·n_iter, shrinking by 0.03·n_iter to at
least 0.06·n_iter) at which an example halves its step and restarts from its
best point if its loss rose in at most ρ = 0.75 of the window's steps, or if it
did not improve since a checkpoint that did not halve it. The model is the
numpy twin of a small ReLU CNN (`helpers.oracles`), its DLR gradient derived
by hand. Both start from keras_lfr's random start (AutoAttack's x + ε·t/‖t‖∞,
t ~ U(−1, 1)); the state of keras_lfr's loop after every step (iterate, step
size, best loss, fooled) must agree with the port's.

One line differs from AutoAttack's code, as in the APGD-CE oracle of
`test_attacks.py`: the first window counts its first step as a rise when the
loss rose above the start point's (Algorithm 1 of the paper). AutoAttack's
`check_oscillation` compares it instead with `loss_steps[-1]`, a row not yet
written (zeros): `first_window_reference="autoattack"` reproduces that.
"""

import importlib

import numpy as np
import pytest
from helpers.oracles import (
    classified_problem,
    recording_iterate,
)

from keras_lfr import attacks, ops

apgd_module = importlib.import_module("keras_lfr.attacks.apgd")


def dlr_targeted(logits, labels, targets):
    """AutoAttack's `dlr_loss_targeted` and its gradient with respect to the logits."""
    rows = np.arange(len(labels))
    order = np.argsort(logits, axis=1)
    ranked = np.take_along_axis(logits, order, axis=1)
    numerator = -(logits[rows, labels] - logits[rows, targets])
    denominator = ranked[:, -1] - 0.5 * (ranked[:, -3] + ranked[:, -4]) + 1e-12
    d_numerator = np.zeros_like(logits)
    d_numerator[rows, labels] -= 1.0
    d_numerator[rows, targets] += 1.0
    d_denominator = np.zeros_like(logits)
    d_denominator[rows, order[:, -1]] += 1.0
    d_denominator[rows, order[:, -3]] -= 0.5
    d_denominator[rows, order[:, -4]] -= 0.5
    loss = numerator / denominator
    d_loss = (
        d_numerator / denominator[:, None] - (numerator / denominator**2)[:, None] * d_denominator
    )
    return loss, d_loss


def apgd_single_run(
    net, x, y, target, x_start, eps, n_iter, rho=0.75, first_window_reference="start"
):
    """AutoAttack's `attack_single_run` (l-inf, targeted DLR), from `x_start`, in numpy.

    Returns `(x_best, acc, loss_best, x_best_adv, history)`; `history` holds
    after each iteration the iterate (after a checkpoint's restart), the step
    size, the best loss, whether the example was ever misclassified, and
    `closest`: how near the step's decisions came to a tie (the smallest
    nonzero gap between two losses compared, the gap between the top two
    logits, the distance to a ReLU's kink, and the smallest nonzero |gradient|
    relative to the largest), where float32 and float64 could decide
    differently. (Losses exactly equal come from an example whose iterate did
    not move: both precisions see the same point.)
    """
    x = x.astype(np.float64)
    n_iter_2, n_iter_min = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1)
    size_decr = max(int(0.03 * n_iter), 1)

    def evaluate(z):
        logits = net.logits(z)
        loss, d_logits = dlr_targeted(logits, y, target)
        return loss, net.input_gradient(z, d_logits), logits

    def closeness(z, logits, grad, compared):
        top_two = np.sort(logits, axis=1)[:, -2:]
        magnitude = np.abs(grad).reshape(len(z), -1)
        nonzero = np.where(magnitude > 0, magnitude, np.inf).min(axis=1)
        gaps = np.abs(np.concatenate(compared))
        return min(
            np.where(gaps > 0, gaps, np.inf).min(),
            (top_two[:, 1] - top_two[:, 0]).min(),
            net.kink_margin(z),
            (nonzero / magnitude.max(axis=1)).min(),
        )

    def project(z):
        return np.clip(np.minimum(np.maximum(z, x - eps), x + eps), 0.0, 1.0)

    x_adv = np.clip(x_start.astype(np.float64), 0.0, 1.0)
    x_best, x_best_adv = x_adv.copy(), x_adv.copy()
    loss_steps = np.zeros((n_iter, len(x)))
    loss_indiv, grad, logits = evaluate(x_adv)
    start_loss = loss_indiv.copy()
    grad_best = grad.copy()
    acc = np.argmax(logits, axis=1) == y
    loss_best = loss_indiv.copy()
    step_size = np.full((len(x), 1, 1, 1), 2.0 * eps)
    x_adv_old = x_adv.copy()
    k, counter3 = n_iter_2, 0
    loss_best_last_check, reduced_last_check = loss_best.copy(), np.ones(len(x), bool)
    history = []
    for i in range(n_iter):
        grad2 = x_adv - x_adv_old
        x_adv_old = x_adv.copy()
        a = 0.75 if i > 0 else 1.0
        x_adv_1 = project(x_adv + step_size * np.sign(grad))
        x_adv = project(x_adv + (x_adv_1 - x_adv) * a + grad2 * (1 - a))

        loss_indiv, grad, logits = evaluate(x_adv)
        pred = np.argmax(logits, axis=1) == y
        acc = acc & pred
        x_best_adv[~pred] = x_adv[~pred]

        loss_steps[i] = loss_indiv
        compared = [loss_indiv - loss_best]
        improved = loss_indiv > loss_best
        x_best[improved], grad_best[improved] = x_adv[improved], grad[improved]
        loss_best[improved] = loss_indiv[improved]
        counter3 += 1
        if counter3 == k:
            # check_oscillation(loss_steps, i, k, loss_best, k3=rho)
            rises = np.zeros(len(x))
            for counter5 in range(k):
                previous = loss_steps[i - counter5 - 1]
                if i - counter5 - 1 < 0 and first_window_reference == "start":
                    previous = start_loss
                rises += loss_steps[i - counter5] > previous
                compared.append(loss_steps[i - counter5] - previous)
            oscillation = rises <= k * rho
            no_improvement = ~reduced_last_check & (loss_best_last_check >= loss_best)
            reduce = oscillation | no_improvement
            reduced_last_check, loss_best_last_check = reduce, loss_best.copy()
            step_size[reduce] /= 2.0
            x_adv[reduce], grad[reduce] = x_best[reduce], grad_best[reduce]
            k, counter3 = max(k - size_decr, n_iter_min), 0
        history.append(
            {
                "x_adv": x_adv.copy(),
                "step": step_size[:, 0, 0, 0].copy(),
                "loss_best": loss_best.copy(),
                "fooled": ~acc,
                "closest": closeness(x_adv, logits, grad, compared),
            }
        )
    return x_best, acc, loss_best, x_best_adv, history


def apgd_targeted(net, x, y, eps, n_iter, n_target_classes, starts, **kwargs):
    """AutoAttack's `APGDAttack_targeted.perturb` (one restart per target) in numpy.

    Each target's run attacks only the examples no earlier target broke; an
    example is returned as its last misclassified iterate of the run that
    broke it, or as x. `starts[j]` is the start of target j's run. Returns
    `(adv, broken, histories)`, the histories over the whole batch (the runs
    are per example, so restricting them to the remaining examples changes
    nothing but what is kept).
    """
    logits = net.logits(x)
    acc = np.argmax(logits, axis=1) == y
    adv = x.astype(np.float64).copy()
    order = np.argsort(logits, axis=1)
    histories = []
    for target_class in range(2, n_target_classes + 2):
        target = order[:, -target_class]
        _, acc_curr, _, adv_curr, history = apgd_single_run(
            net, x, y, target, starts[target_class - 2], eps, n_iter, **kwargs
        )
        histories.append(history)
        newly = acc & ~acc_curr
        adv[newly] = adv_curr[newly]
        acc = acc & ~newly
    return adv, ~acc, histories


@pytest.fixture(scope="module")
def problem():
    return classified_problem(seed=2)


NUM_TARGETS = 2
# (epsilon, steps, seed): checkpoint windows of 4, 3, 2, 1, 1, … steps (20 steps)
# and 2, 1, 1, … (10 steps); cases chosen away from ties (see `closest`).
CASES = [(0.08, 20, 1), (0.07, 10, 0)]


def reference_run(net, x, y, epsilon, steps, seed):
    starts = [
        apgd_module._start(x, epsilon, ops.fold_seed(ops.as_seed(seed), run), 0.0, 1.0).numpy()
        for run in range(NUM_TARGETS)
    ]
    return apgd_targeted(net, x, y, epsilon, steps, NUM_TARGETS, starts)


@pytest.mark.parametrize("epsilon, steps, seed", CASES)
def test_apgd_t_matches_autoattack_step_by_step(problem, monkeypatch, epsilon, steps, seed):
    model, net, x, y = problem
    reference, broken, histories = reference_run(net, x, y, epsilon, steps, seed)
    # No decision of the case is within rounding of a tie (where float32 may
    # legitimately decide otherwise than float64).
    assert min(state["closest"] for history in histories for state in history) > 1e-6
    trace = []
    monkeypatch.setattr(ops, "iterate", recording_iterate(trace))
    ours = attacks.apgd(
        model, x, y, epsilon=epsilon, steps=steps, loss="dlr", num_targets=NUM_TARGETS, seed=seed
    ).numpy()

    assert len(trace) == NUM_TARGETS
    for run, (states, history) in enumerate(zip(trace, histories, strict=True)):
        assert len(states) == len(history) == steps
        for i, (state, expected) in enumerate(zip(states, history, strict=True)):
            where = f"target {run + 1}, step {i}"
            np.testing.assert_allclose(state["x_adv"], expected["x_adv"], atol=1e-5, err_msg=where)
            np.testing.assert_allclose(state["step"], expected["step"], rtol=1e-6, err_msg=where)
            np.testing.assert_allclose(
                state["loss_best"], expected["loss_best"], rtol=1e-4, atol=1e-6, err_msg=where
            )
            np.testing.assert_array_equal(state["fooled"], expected["fooled"], err_msg=where)
    # The final points: the broken examples as AutoAttack returns them (keras_lfr
    # returns the unbroken ones at their highest loss, AutoAttack as x).
    assert np.array_equal(np.argmax(net.logits(ours), axis=1) != y, broken)
    np.testing.assert_allclose(ours[broken], reference[broken], atol=1e-5)
    assert np.abs(ours - x).max() <= epsilon + 1e-6


def test_the_cases_see_step_halvings_restarts_and_both_outcomes(problem):
    # The comparison is not vacuous: in every case some checkpoints halve some
    # examples' steps and not others', and the runs break some examples and not
    # others; in one, the second target breaks examples the first did not.
    _, net, x, y = problem
    second_target_matters = False
    for epsilon, steps, seed in CASES:
        _, broken, histories = reference_run(net, x, y, epsilon, steps, seed)
        for history in histories:
            steps_taken = np.stack([state["step"] for state in history])
            halved = steps_taken[1:] < steps_taken[:-1]
            assert np.any(halved.any(axis=1) & ~halved.all(axis=1))
        assert 0 < broken.sum() < len(y)
        second_target_matters |= bool(np.any(broken & ~histories[0][-1]["fooled"]))
    assert second_target_matters
