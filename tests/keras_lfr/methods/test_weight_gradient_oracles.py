"""Every method's weight gradient against central finite differences of a numpy objective.

For each training method, the objective `Method.loss(model, x, y, x_adv,
sample_weight)` (the inner maximisation's x_adv held fixed) is written out
again in numpy, float64, on the small ReLU CNN of `helpers.oracles`, from
each method's formula (its docstring and paper), not from its code. The
oracle gradient is the central finite difference of that numpy objective
with respect to every weight; the method's gradient (TensorFlow, float32)
must match it to 1e-5 of each weight tensor's largest entry. The point is
chosen where no ReLU sits at its kink (every pre-activation is at least 1e-3
away from 0, far beyond the finite-difference step) and no absolute value
is at zero. The terms are weighted so that each one moves the gradient by far
more than the tolerance: a dropped term or a `stop_gradient` in the wrong
place (which leaves the loss value unchanged) fails the test.
"""

import numpy as np
import pytest
import tensorflow as tf
from helpers.oracles import (
    ConvNet,
    cross_entropy,
    keras_model,
    log_softmax,
    random_weights,
)

from keras_lfr.methods import get_method

STEP = 1e-5  # finite-difference step on each weight
TOLERANCE = 1e-5  # of the largest entry of each gradient tensor (float32 is within 1e-6)
KINK_MARGIN = 1e-3  # every ReLU pre-activation is at least this far from 0


def weighted_mean(values, sample_weight):
    return np.mean(values * sample_weight)


def kl(logits_p, logits_q):
    """Per-example KL(softmax(p) ‖ softmax(q))."""
    log_p, log_q = log_softmax(logits_p), log_softmax(logits_q)
    return np.sum(np.exp(log_p) * (log_p - log_q), axis=1)


def standard(net, x, x_adv, y, w, hyper):
    return weighted_mean(cross_entropy(net.logits(x), y), w)


def pgd_at(net, x, x_adv, y, w, hyper):
    """(1 − c)·CE(x') + c·CE(x) (Madry et al.; c = clean_weight)."""
    c = hyper["clean_weight"]
    adv = weighted_mean(cross_entropy(net.logits(x_adv), y), w)
    clean = weighted_mean(cross_entropy(net.logits(x), y), w)
    return (1 - c) * adv + c * clean


def trades(net, x, x_adv, y, w, hyper):
    """CE(x) + β·KL(p(x) ‖ p(x')), both distributions depending on the weights."""
    logits = net.logits(x)
    return weighted_mean(cross_entropy(logits, y), w) + hyper["beta"] * weighted_mean(
        kl(logits, net.logits(x_adv)), w
    )


def llr_parts(net, x, x_adv, y):
    """Per-example ℓ(x), g = |ℓ(x+δ) − ℓ(x) − δᵀ∇ₓℓ(x)| and |δᵀ∇ₓℓ(x)|, δ = x' − x fixed."""
    delta = x_adv.astype(np.float64) - x
    grad, logits = net.ce_input_gradient(x, y)
    clean = cross_entropy(logits, y)
    directional = np.sum((delta * grad).reshape(len(x), -1), axis=1)
    shifted = cross_entropy(net.logits(x + delta), y)
    return clean, shifted - clean - directional, directional


def llr(net, x, x_adv, y, w, hyper):
    """ℓ(x) + λ·g(δ; x) + μ·|δᵀ∇ₓℓ(x)| (Qin et al.), differentiated through ∇ₓℓ."""
    clean, gap, directional = llr_parts(net, x, x_adv, y)
    return (
        weighted_mean(clean, w)
        + hyper["lam"] * weighted_mean(np.abs(gap), w)
        + hyper["mu"] * weighted_mean(np.abs(directional), w)
    )


def lfr(net, x, x_adv, y, w, hyper):
    """CE(x) + λ·‖∇ₓ CE(x', y)‖₁ (Xu et al.), differentiated through the input gradient."""
    grad, _ = net.ce_input_gradient(x_adv, y)
    penalty = np.sum(np.abs(grad).reshape(len(x), -1), axis=1)
    return weighted_mean(cross_entropy(net.logits(x), y), w) + hyper["lam"] * weighted_mean(
        penalty, w
    )


def entropy(logits):
    log_p = log_softmax(logits)
    return -np.sum(np.exp(log_p) * log_p, axis=1)


def adr(net, x, x_adv, y, w, hyper):
    """TRADES + local and global compactness, adversarial entropy and smoothness (Bui et al.)."""
    z, z_adv = net.features(x), net.features(x_adv)
    logits, adv_logits = net.logits(x), net.logits(x_adv)
    local = np.mean(np.abs(z - z_adv), axis=1)
    pairs = [
        np.mean(np.abs(z_adv[i] - z[j]))
        for i in range(len(y))
        for j in range(len(y))
        if i != j and y[i] == y[j]
    ]
    return (
        trades(net, x, x_adv, y, w, hyper)
        + hyper["local_weight"] * weighted_mean(local, w)
        + hyper["global_weight"] * np.mean(pairs)
        + hyper["entropy_weight"] * weighted_mean(entropy(adv_logits), w)
        + hyper["smoothness_weight"] * weighted_mean(kl(logits, adv_logits), w)
    )


def neighbourhoods(points, temperature):
    """Row-normalised log-affinities log P_kl ∝ −‖u_k − u_l‖² / (τ · mean_{k≠l} d²), P_kk = 0."""
    u = points.reshape(len(points), -1)
    d2 = np.sum((u[:, None] - u[None]) ** 2, axis=-1)
    off_diagonal = ~np.eye(len(u), dtype=bool)
    logits = -d2 / (temperature * d2[off_diagonal].mean())
    normaliser = np.log(np.sum(np.where(off_diagonal, np.exp(logits), 0.0), axis=1, keepdims=True))
    return np.where(off_diagonal, logits - normaliser, 0.0), off_diagonal


def lsp(net, x, x_adv, y, w, hyper):
    """PGD-AT + weight · mean_k KL(P_k ‖ Q_k) over the 2B clean and adversarial points."""
    tau = hyper["temperature"]
    points = np.concatenate([x, x_adv]).astype(np.float64)
    log_p, mask = neighbourhoods(points, tau)
    log_q, _ = neighbourhoods(np.concatenate([net.features(x), net.features(x_adv)]), tau)
    structure = np.mean(np.sum(np.where(mask, np.exp(log_p) * (log_p - log_q), 0.0), axis=1))
    base = {k: v for k, v in hyper.items() if k == "clean_weight"}
    return pgd_at(net, x, x_adv, y, w, base) + hyper["weight"] * structure


NUMPY_OBJECTIVES = {
    "standard": standard,
    "pgd_at": pgd_at,
    "trades": trades,
    "llr": llr,
    "lfr": lfr,
    "adr": adr,
    "lsp": lsp,
}

# Weights large enough that every term moves the gradient far beyond the tolerance.
CASES = {
    "standard": ("standard", {}),
    "pgd_at": ("pgd_at", {"clean_weight": 0.25}),
    "trades": ("trades", {"beta": 3.0}),
    "llr": ("llr", {"lam": 2.0, "mu": 1.5}),
    "lfr": ("lfr", {"lam": 0.5}),
    "adr": (
        "adr",
        {
            "base": "trades",
            "beta": 1.0,
            "local_weight": 0.5,
            "global_weight": 0.5,
            "entropy_weight": 0.3,
            "smoothness_weight": 0.5,
        },
    ),
    "lsp": ("lsp", {"base": "pgd_at", "clean_weight": 0.5, "weight": 1.0, "temperature": 0.5}),
    "awp_trades": ("awp", {"base": "trades", "gamma": 0.02, "beta": 3.0}),
    "awp_lfr": ("awp", {"base": "lfr", "gamma": 0.02, "lam": 0.5}),
}


def numpy_objective(name, hyper):
    """The numpy objective of a method: `f(weights, x, x_adv, y, sample_weight)`."""
    objective = NUMPY_OBJECTIVES[name]
    return lambda weights, *data: objective(ConvNet(weights), *data, hyper)


def finite_difference_gradient(objective, weights, *data):
    """Central differences (f(w + h eᵢ) − f(w − h eᵢ)) / 2h for every weight, in float64."""
    weights = [np.asarray(w, dtype=np.float64) for w in weights]
    gradients = []
    for tensor in weights:
        gradient = np.zeros_like(tensor)
        for index in np.ndindex(tensor.shape):
            original = tensor[index]
            tensor[index] = original + STEP
            up = objective(weights, *data)
            tensor[index] = original - STEP
            down = objective(weights, *data)
            tensor[index] = original
            gradient[index] = (up - down) / (2 * STEP)
        gradients.append(gradient)
    return gradients


def awp_weights(objective, weights, gamma, *data):
    """w + v, v = γ·‖w‖·∇/‖∇‖ per kernel (rank > 1), from the base's gradient at w (Wu et al.)."""
    gradients = finite_difference_gradient(objective, weights, *data)
    perturbed = []
    for w, g in zip(weights, gradients, strict=True):
        w = np.asarray(w, dtype=np.float64)
        if w.ndim > 1:
            w = w + gamma * np.linalg.norm(w) * g / (np.linalg.norm(g) + 1e-20)
        perturbed.append(w)
    return perturbed


@pytest.fixture(scope="module")
def point():
    """Weights, a batch with repeated labels, fixed x', sample weights: away from every kink."""
    rng = np.random.default_rng(11)
    weights = random_weights(rng)
    x = rng.uniform(0.1, 0.9, size=(6, 6, 6, 1)).astype("float32")
    x_adv = np.clip(x + rng.uniform(-0.2, 0.2, size=x.shape), 0, 1).astype("float32")
    y = np.array([0, 1, 2, 3, 0, 1], dtype="int32")  # pairs of equal labels for ADR
    sample_weight = rng.uniform(0.5, 1.5, size=6).astype("float32")
    return weights, x, x_adv, y, sample_weight


def assert_smooth_at(weights, x, x_adv, y):
    """No ReLU and no absolute value of any objective sits at (or near) its kink."""
    net = ConvNet(weights)
    assert net.kink_margin(x, x_adv) > KINK_MARGIN
    _, gap, directional = llr_parts(net, x, x_adv, y)
    assert np.abs(gap).min() > 1e-3 and np.abs(directional).min() > 1e-3
    z, z_adv = net.features(x), net.features(x_adv)
    differences = np.abs(z[None] - z_adv[:, None])  # every (x'_i, x_j) pair, x_i vs x'_i too
    both_zero = (z[None] == 0) & (z_adv[:, None] == 0)  # locally constant: no kink
    assert np.all(both_zero | (differences > 1e-4))


def keras_gradients(case, weights, x, x_adv, y, sample_weight):
    name, hyper = CASES[case]
    model = keras_model()
    model.set_weights(weights)
    method = get_method(name, **hyper)
    with tf.GradientTape() as tape:
        _, loss, _ = method.loss(
            model, tf.constant(x), tf.constant(y), tf.constant(x_adv), tf.constant(sample_weight)
        )
    return float(loss), [g.numpy() for g in tape.gradient(loss, model.trainable_variables)]


@pytest.mark.parametrize("case", sorted(CASES))
def test_weight_gradient_matches_finite_differences(point, case):
    weights, x, x_adv, y, sample_weight = point
    name, hyper = CASES[case]
    data = (x, x_adv, y, sample_weight)
    if name == "awp":
        base = {k: v for k, v in hyper.items() if k not in ("base", "gamma")}
        objective = numpy_objective(hyper["base"], base)
        # The gradient is the base's at the perturbed weights; v itself is a constant.
        weights_at = awp_weights(objective, weights, hyper["gamma"], *data)
    else:
        objective = numpy_objective(name, hyper)
        weights_at = weights
    assert_smooth_at(weights_at, x, x_adv, y)
    expected = finite_difference_gradient(objective, weights_at, *data)
    loss, gradients = keras_gradients(case, weights, *data)
    np.testing.assert_allclose(loss, objective(weights_at, *data), rtol=1e-5)
    for index, (actual, oracle) in enumerate(zip(gradients, expected, strict=True)):
        scale = np.abs(oracle).max()
        assert scale > 1e-3, (case, index)
        np.testing.assert_allclose(
            actual, oracle, rtol=0, atol=TOLERANCE * scale, err_msg=f"{case}: weight {index}"
        )


# Each term's weight set to zero, one at a time.
DROPPED_TERMS = [
    ("pgd_at", {"clean_weight": 0.0}),
    ("trades", {"beta": 0.0}),
    ("llr", {"lam": 0.0}),
    ("llr", {"mu": 0.0}),
    ("lfr", {"lam": 0.0}),
    ("adr", {"beta": 0.0}),
    ("adr", {"local_weight": 0.0}),
    ("adr", {"global_weight": 0.0}),
    ("adr", {"entropy_weight": 0.0}),
    ("adr", {"smoothness_weight": 0.0}),
    ("lsp", {"weight": 0.0}),
]


@pytest.mark.parametrize(
    "case, dropped", DROPPED_TERMS, ids=[f"{case}-{next(iter(d))}" for case, d in DROPPED_TERMS]
)
def test_every_term_moves_the_gradient_far_beyond_the_tolerance(point, case, dropped):
    # The oracle's power: without any one term the gradient is more than 100
    # tolerances away, so the comparison above cannot miss a dropped term.
    weights, x, x_adv, y, sample_weight = point
    name, hyper = CASES[case]
    data = (x, x_adv, y, sample_weight)
    full = finite_difference_gradient(numpy_objective(name, hyper), weights, *data)
    without = finite_difference_gradient(
        numpy_objective(name, {**hyper, **dropped}), weights, *data
    )
    change = max(np.abs(a - b).max() / np.abs(a).max() for a, b in zip(full, without, strict=True))
    assert change > 100 * TOLERANCE
