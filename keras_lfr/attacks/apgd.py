"""Auto-PGD (Croce & Hein, ICML 2020), l-inf, with CE and DLR losses."""

import keras

from keras_lfr import _validation, backend, ops

LOSSES = ("ce", "dlr")


def dlr_loss(logits, labels, targets=None):
    """Difference of Logits Ratio, per example (higher means more adversarial).

    Untargeted: −(z_y − max_{i≠y} z_i) / (z_π1 − z_π3); targeted at t:
    −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2), with z_π1 ≥ z_π2 ≥ … the sorted
    logits. Invariant to shifting and scaling the logits.
    """
    logits = keras.ops.cast(logits, "float32")
    ranked = keras.ops.flip(keras.ops.sort(logits, axis=1), axis=1)
    true = ops.pick(logits, labels)
    if targets is None:
        top_is_true = keras.ops.cast(keras.ops.argmax(logits, axis=1), "int32") == labels
        other = keras.ops.where(top_is_true, ranked[:, 1], ranked[:, 0])
        return -(true - other) / (ranked[:, 0] - ranked[:, 2] + 1e-12)
    target = ops.pick(logits, targets)
    return -(true - target) / (ranked[:, 0] - 0.5 * (ranked[:, 2] + ranked[:, 3]) + 1e-12)


def _objective(loss, logits, labels, targets):
    if loss == "dlr":
        return dlr_loss(logits, labels, targets)
    if targets is None:
        return ops.cross_entropy(labels, logits)
    return -ops.cross_entropy(targets, logits)


def _schedule(steps):
    """AutoAttack's checkpoint constants: first window, minimum window, shrink."""
    return max(int(0.22 * steps), 1), max(int(0.06 * steps), 1), max(int(0.03 * steps), 1)


def _start(x, epsilon, seed, clip_min, clip_max):
    """AutoAttack's start: x + ε·t/‖t‖∞, t ~ U(−1, 1), in the ball and the pixel range."""
    t = ops.uniform(keras.ops.shape(x), seed, -1.0, 1.0)
    t_max = keras.ops.max(keras.ops.abs(ops.flatten(t)), axis=1)
    return ops.project_linf(
        x + epsilon * t / ops.expand_like(t_max, x), x, epsilon, clip_min, clip_max
    )


def _run(model, x, labels, targets, loss, epsilon, steps, rho, momentum, seed, clip_min, clip_max):
    """One APGD run. Returns (best adversarial-or-max-loss point, fooled, best loss)."""

    def objective(x_adv):
        logits = model(x_adv, training=False)
        return _objective(loss, logits, labels, targets), logits

    def evaluate(x_adv):
        (values, logits), gradient = backend.value_and_gradient(objective, x_adv)
        fooled = keras.ops.cast(keras.ops.argmax(logits, axis=1), "int32") != labels
        return values, gradient, fooled

    def project(z):
        return ops.project_linf(z, x, epsilon, clip_min, clip_max)

    x_adv = _start(x, epsilon, seed, clip_min, clip_max)
    value, grad, fooled = evaluate(x_adv)
    first_window, min_window, shrink = _schedule(steps)
    state = {
        "x_adv": x_adv,
        "x_old": x_adv,
        "grad": grad,
        "step": ops.per_example_fill(x, 2.0 * epsilon),
        "x_best": x_adv,
        "grad_best": grad,
        "loss_best": value,
        "x_fooled": x_adv,
        "fooled": fooled,
        "prev_loss": value,
        "increases": ops.per_example_fill(x, 0.0),
        "since_check": keras.ops.convert_to_tensor(0, "int32"),
        "window": keras.ops.convert_to_tensor(first_window, "int32"),
        "loss_at_check": value,
        "reduced_at_check": ops.per_example_fill(x, True, "bool"),
    }

    def body(i, s):
        a = keras.ops.where(i > 0, momentum, 1.0)
        step = ops.expand_like(s["step"], x)
        z = project(s["x_adv"] + step * keras.ops.sign(s["grad"]))
        x_new = project(s["x_adv"] + a * (z - s["x_adv"]) + (1 - a) * (s["x_adv"] - s["x_old"]))
        value, grad, fooled = evaluate(x_new)
        x_fooled = keras.ops.where(ops.expand_like(fooled, x), x_new, s["x_fooled"])
        improved = value > s["loss_best"]
        x_best = keras.ops.where(ops.expand_like(improved, x), x_new, s["x_best"])
        grad_best = keras.ops.where(ops.expand_like(improved, x), grad, s["grad_best"])
        loss_best = keras.ops.where(improved, value, s["loss_best"])
        increases = s["increases"] + keras.ops.cast(value > s["prev_loss"], "float32")
        since_check = s["since_check"] + 1

        # Checkpoint: halve the step of examples whose loss rose in fewer than
        # rho of the window's steps, or that did not improve since the last
        # checkpoint without a reduction then; they restart from their best point.
        at_check = since_check >= s["window"]
        oscillating = increases <= keras.ops.cast(s["window"], "float32") * rho
        stalled = keras.ops.logical_not(s["reduced_at_check"]) & (s["loss_at_check"] >= loss_best)
        reduce = at_check & (oscillating | stalled)
        new = {
            # The momentum reference is the point this step started from, as
            # in AutoAttack (`grad2 = x_adv - x_adv_old`), not x_new itself.
            "x_old": s["x_adv"],
            "x_adv": keras.ops.where(ops.expand_like(reduce, x), x_best, x_new),
            "grad": keras.ops.where(ops.expand_like(reduce, x), grad_best, grad),
            "step": keras.ops.where(reduce, s["step"] / 2.0, s["step"]),
            "x_best": x_best,
            "grad_best": grad_best,
            "loss_best": loss_best,
            "x_fooled": x_fooled,
            "fooled": s["fooled"] | fooled,
            "prev_loss": value,
            "increases": keras.ops.where(at_check, 0.0, increases),
            "since_check": keras.ops.where(at_check, 0, since_check),
            "window": keras.ops.where(
                at_check, keras.ops.maximum(s["window"] - shrink, min_window), s["window"]
            ),
            "loss_at_check": keras.ops.where(at_check, loss_best, s["loss_at_check"]),
            "reduced_at_check": keras.ops.where(at_check, reduce, s["reduced_at_check"]),
        }
        return new

    state = ops.iterate(body, state, steps)
    result = keras.ops.where(
        ops.expand_like(state["fooled"], x), state["x_fooled"], state["x_best"]
    )
    return result, state["fooled"], state["loss_best"]


def apgd(
    model,
    x,
    y,
    *,
    epsilon,
    steps=100,
    loss="ce",
    restarts=1,
    num_targets=None,
    rho=0.75,
    momentum=0.75,
    clip_min=0.0,
    clip_max=1.0,
    seed=0,
):
    """Auto-PGD: step-size-free PGD with momentum and adaptive step halving.

    Each run starts at a random point of the ball, takes a first step of 2ε,
    and then x_{k+1} = Π(x_k + a(z_k − x_k) + (1 − a)(x_k − x_{k−1})) with
    z_k = Π(x_k + η_k sign(∇L(x_k))) and momentum a = `momentum` (0.75);
    x_{k−1} is the point the previous step started from, as in AutoAttack's
    code (after a checkpoint's restart, x_k is the best point so far). At
    checkpoints (after 22% of the steps, then shrinking windows) an example's
    step η is halved and it restarts from its best point if its loss rose in at
    most a fraction `rho` of the window's steps, or if its best loss did not
    improve since the last checkpoint without a halving. L is CE or the
    Difference of Logits Ratio (`"dlr"`). With `num_targets=n` the attack is run
    against each of the n most likely wrong classes (by the clean logits) with
    the targeted loss (APGD-T; AutoAttack uses targeted DLR with n = 9).
    Across restarts and targets, an example counts as broken if any run broke
    it. Reference: Croce & Hein, "Reliable Evaluation of Adversarial
    Robustness with an Ensemble of Diverse Parameter-free Attacks", ICML 2020.

    Args:
        model: A callable returning logits.
        x: Clean inputs.
        y: Integer or one-hot labels.
        epsilon: l-inf radius.
        steps: Iterations per run (>= 1). Defaults to `100`.
        loss: `"ce"` or `"dlr"` (needs at least 4 classes). Defaults to
            `"ce"`.
        restarts: Random restarts per target (>= 1). Defaults to `1`.
        num_targets: `None` for the untargeted attack, or the number n of
            target classes for APGD-T (`pgd`'s `targets`, by contrast, are
            target labels). Defaults to `None`.
        rho: Checkpoint threshold ρ. Defaults to `0.75`.
        momentum: Momentum a. Defaults to `0.75`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.
        seed: Int or shape-`[2]` int tensor for the random starts. Defaults
            to `0`.

    Returns:
        Adversarial inputs: per example, a misclassified point if any run
        found one, else the point of highest loss.

    Raises:
        ValueError: If an argument is out of range.
    """
    x, epsilon, clip_min, clip_max = _validation.attack_inputs(x, epsilon, clip_min, clip_max)
    steps = _validation.positive_int("steps", steps)
    loss = _validation.one_of("loss", loss, LOSSES)
    restarts = _validation.positive_int("restarts", restarts)
    if num_targets is not None:
        num_targets = _validation.positive_int("num_targets", num_targets)
    labels = ops.sparse_labels(y)
    seed = ops.as_seed(seed)

    if num_targets is None:
        target_sets = [None]
    else:
        ranked = keras.ops.argsort(-keras.ops.cast(model(x, training=False), "float32"), axis=1)
        if num_targets >= ranked.shape[1]:
            raise ValueError(
                f"Invalid value for argument `num_targets`. Received: num_targets={num_targets!r}. "
                f"Expected at most {ranked.shape[1] - 1} (classes minus one)."
            )
        target_sets = [keras.ops.cast(ranked[:, j], "int32") for j in range(1, num_targets + 1)]

    best_x, best_loss = x, ops.per_example_fill(x, -float("inf"))
    fooled = ops.per_example_fill(x, False, "bool")
    run = 0
    for target in target_sets:
        for _ in range(restarts):
            x_run, fooled_run, loss_run = _run(
                model,
                x,
                labels,
                target,
                loss,
                epsilon,
                steps,
                rho,
                momentum,
                ops.fold_seed(seed, run),
                clip_min,
                clip_max,
            )
            run += 1
            # Prefer a point that fools the model; else keep the highest loss.
            not_fooled = keras.ops.logical_not(fooled)
            take = (fooled_run & not_fooled) | (
                not_fooled & keras.ops.logical_not(fooled_run) & (loss_run > best_loss)
            )
            best_x = keras.ops.where(ops.expand_like(take, x), x_run, best_x)
            best_loss = keras.ops.where(take, loss_run, best_loss)
            fooled = fooled | fooled_run
    return keras.ops.stop_gradient(best_x)
