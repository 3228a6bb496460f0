"""FAB-T (Croce & Hein, ICML 2020): the targeted l-inf Fast Adaptive Boundary attack."""

import keras

from keras_lfr import _validation, backend, ops


def project_onto_hyperplane_linf(x, w, c, clip_min=0.0, clip_max=1.0):
    """The smallest l-inf step to a hyperplane within the pixel box, per example.

    For each row, returns the δ of least ‖δ‖∞ with ⟨w, δ⟩ = c and
    `clip_min` ≤ x + δ ≤ `clip_max`. Moving coordinate j by at most r in the
    direction sign(c·w_j), as far as the box allows (its room ρ_j), changes
    ⟨w, δ⟩ by |w_j|·min(r, ρ_j); their sum S(r) is piecewise linear and
    increasing, so the least r with S(r) = |c| is found exactly between two
    sorted rooms. If even the whole room falls short (S(∞) < |c|), δ moves
    every coordinate to its bound: the closest the box allows.

    Args:
        x: Points, shape `(batch, d)`.
        w: Normals, shape `(batch, d)`.
        c: Targets of ⟨w, δ⟩, shape `(batch,)`.
        clip_min: Smallest pixel value. Defaults to `0.0`.
        clip_max: Largest pixel value. Defaults to `1.0`.

    Returns:
        δ, shape `(batch, d)`.
    """
    x, w, c = (keras.ops.cast(v, "float32") for v in (x, w, c))
    direction = keras.ops.sign(w) * keras.ops.sign(c)[:, None]
    room = keras.ops.where(direction > 0, clip_max - x, x - clip_min)
    room = keras.ops.where(direction == 0, 0.0, keras.ops.maximum(room, 0.0))
    weight = keras.ops.abs(w)
    order = keras.ops.argsort(room, axis=1)
    room_sorted = keras.ops.take_along_axis(room, order, axis=1)
    weight_sorted = keras.ops.take_along_axis(weight, order, axis=1)
    # With r = the k-th smallest room, the k smallest rooms are used up and
    # the rest move by r: S = A_k + r·B_k.
    used = keras.ops.cumsum(weight_sorted * room_sorted, axis=1)
    rest = keras.ops.sum(weight, axis=1, keepdims=True) - keras.ops.cumsum(weight_sorted, axis=1)
    reach = used + room_sorted * rest
    target = keras.ops.abs(c)[:, None]
    # The first sorted room at which S reaches |c|; r lies between it and the one before.
    enough = reach >= target
    feasible = keras.ops.any(enough, axis=1)
    k = keras.ops.argmax(keras.ops.cast(enough, "int32"), axis=1)
    zero = keras.ops.zeros_like(target)
    used_before = keras.ops.concatenate([zero, used[:, :-1]], axis=1)
    rest_before = keras.ops.concatenate(
        [keras.ops.sum(weight, axis=1, keepdims=True), rest[:, :-1]], axis=1
    )
    a = keras.ops.take_along_axis(used_before, k[:, None], axis=1)[:, 0]
    b = keras.ops.take_along_axis(rest_before, k[:, None], axis=1)[:, 0]
    radius = (target[:, 0] - a) / keras.ops.maximum(b, 1e-12)
    radius = keras.ops.where(feasible, radius, keras.ops.max(room, axis=1))
    return direction * keras.ops.minimum(radius[:, None], room)


def _logit_gap(model, x, labels, targets, shape):
    """f_t − f_y at the flat points `x` and its gradient, and the logits."""

    def gap_of(x):
        logits = keras.ops.cast(model(keras.ops.reshape(x, shape), training=False), "float32")
        return ops.pick(logits, targets) - ops.pick(logits, labels), logits

    (gap, logits), gradient = backend.value_and_gradient(gap_of, x)
    return gap, gradient, logits


def fab_step(x, x_orig, gap, gradient, *, alpha_max, eta, clip_min, clip_max):
    """One FAB step from `x` towards the linearised boundary f_t = f_y.

    The boundary of the linearisation at x is {z: gap + ⟨∇gap, z − x⟩ = 0}.
    δ projects x onto it and δ₀ projects x_orig (both in l-inf, within the
    box); the step is a convex combination of the two overshot projections,
    biased towards the original point by α = min(‖δ‖ / (‖δ‖ + ‖δ₀‖), α_max):
    x' = clip((1 − α)(x + η δ) + α (x_orig + η δ₀)).

    Args:
        x: Current points, flat `(batch, d)`.
        x_orig: Original points, flat.
        gap: f_t − f_y at x, `(batch,)`.
        gradient: Its gradient at x, flat.
        alpha_max: Largest bias α towards the original point.
        eta: Overshoot η of each projection.
        clip_min: Smallest pixel value.
        clip_max: Largest pixel value.

    Returns:
        The next points, flat.
    """
    delta = project_onto_hyperplane_linf(x, gradient, -gap, clip_min, clip_max)
    gap_at_orig = gap + keras.ops.sum(gradient * (x_orig - x), axis=1)
    delta_orig = project_onto_hyperplane_linf(x_orig, gradient, -gap_at_orig, clip_min, clip_max)
    norm = keras.ops.max(keras.ops.abs(delta), axis=1)
    norm_orig = keras.ops.max(keras.ops.abs(delta_orig), axis=1)
    alpha = keras.ops.minimum(norm / keras.ops.maximum(norm + norm_orig, 1e-12), alpha_max)
    alpha = alpha[:, None]
    step = (1 - alpha) * (x + eta * delta) + alpha * (x_orig + eta * delta_orig)
    return keras.ops.clip(step, clip_min, clip_max)


def _run(model, x_orig, labels, targets, shape, steps, alpha_max, eta, beta, clip_min, clip_max):
    def body(_, state):
        x, best, best_norm = state
        gap, gradient, _ = _logit_gap(model, x, labels, targets, shape)
        x_new = fab_step(
            x,
            x_orig,
            gap,
            gradient,
            alpha_max=alpha_max,
            eta=eta,
            clip_min=clip_min,
            clip_max=clip_max,
        )
        logits = model(keras.ops.reshape(x_new, shape), training=False)
        fooled = keras.ops.cast(keras.ops.argmax(logits, axis=1), "int32") != labels
        norm = keras.ops.max(keras.ops.abs(x_new - x_orig), axis=1)
        better = fooled & (norm < best_norm)
        best = keras.ops.where(better[:, None], x_new, best)
        best_norm = keras.ops.where(better, norm, best_norm)
        # Once across the boundary, step back towards the original point.
        x_new = keras.ops.where(fooled[:, None], (1 - beta) * x_orig + beta * x_new, x_new)
        return keras.ops.stop_gradient(x_new), best, best_norm

    state = (x_orig, x_orig, ops.per_example_fill(x_orig, float("inf")))
    _, best, best_norm = ops.iterate(body, state, steps)
    return best, best_norm


def fab(
    model,
    x,
    y,
    *,
    epsilon,
    steps=100,
    num_targets=9,
    alpha_max=0.1,
    eta=1.05,
    beta=0.9,
    clip_min=0.0,
    clip_max=1.0,
):
    """FAB-T: the targeted l-inf Fast Adaptive Boundary attack, AutoAttack's settings.

    For each of the `num_targets` most likely wrong classes t (by the clean
    logits), `steps` FAB steps (`fab_step`) walk from the clean point towards
    the boundary f_t = f_y of the linearised model, projecting in l-inf within
    the pixel box; whenever a step misclassifies, the point is kept if it is
    the closest adversarial found so far and the walk steps back to
    (1 − β)·x_orig + β·x. FAB minimises the perturbation; an example counts as
    broken at radius `epsilon` when its closest adversarial is within it.
    Reference: Croce & Hein, "Minimally distorted Adversarial Examples with a
    Fast Adaptive Boundary Attack", ICML 2020; AutoAttack's standard version
    runs it with 9 targets, 100 steps, one start from the clean point,
    α_max = 0.1, η = 1.05, β = 0.9.

    Args:
        model: A callable returning logits.
        x: Clean inputs.
        y: Integer or one-hot labels.
        epsilon: l-inf radius at which an adversarial counts.
        steps: FAB steps per target (>= 1). Defaults to `100`.
        num_targets: Target classes (>= 1, below the number of classes).
            Defaults to `9`.
        alpha_max: Largest bias towards the original point. Defaults to `0.1`.
        eta: Overshoot of the projections. Defaults to `1.05`.
        beta: Backward step once adversarial. Defaults to `0.9`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.

    Returns:
        Per example, its closest adversarial if that is within `epsilon`,
        else the clean input.

    Raises:
        ValueError: If an argument is out of range.
    """
    x, epsilon, clip_min, clip_max = _validation.attack_inputs(x, epsilon, clip_min, clip_max)
    steps = _validation.positive_int("steps", steps)
    num_targets = _validation.positive_int("num_targets", num_targets)
    labels = ops.sparse_labels(y)
    shape = (-1, *x.shape[1:])
    flat = ops.flatten(x)
    ranked = keras.ops.argsort(-keras.ops.cast(model(x, training=False), "float32"), axis=1)
    if num_targets >= ranked.shape[1]:
        raise ValueError(
            f"Invalid value for argument `num_targets`. Received: num_targets={num_targets!r}. "
            f"Expected at most {ranked.shape[1] - 1} (classes minus one)."
        )
    best, best_norm = flat, ops.per_example_fill(flat, float("inf"))
    for j in range(1, num_targets + 1):
        targets = keras.ops.cast(ranked[:, j], "int32")
        found, norm = _run(
            model, flat, labels, targets, shape, steps, alpha_max, eta, beta, clip_min, clip_max
        )
        closer = norm < best_norm
        best = keras.ops.where(closer[:, None], found, best)
        best_norm = keras.ops.where(closer, norm, best_norm)
    within = best_norm <= epsilon
    return keras.ops.stop_gradient(
        keras.ops.reshape(keras.ops.where(within[:, None], best, flat), shape)
    )
