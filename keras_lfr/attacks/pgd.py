"""Projected gradient descent (Madry et al., ICLR 2018)."""

import keras

from keras_lfr import _validation, ops


def pgd(
    model,
    x,
    y,
    *,
    epsilon,
    step_size,
    steps,
    random_start=True,
    restarts=1,
    norm="linf",
    targets=None,
    clip_min=0.0,
    clip_max=1.0,
    seed=0,
):
    """PGD on the cross-entropy loss, untargeted or targeted.

    Untargeted, maximises CE(f(x'), y); targeted, minimises CE(f(x'), t) for
    the given target labels t. Both over the ball ‖x' − x‖ ≤ `epsilon` intersected with
    [`clip_min`, `clip_max`] by `steps` steps of
    x' ← Π(x' + `step_size` · d), with d = sign(∇) for `"linf"` and
    d = ∇/‖∇‖₂ for `"l2"`. With `restarts > 1` the attack is repeated from
    independent random starts and the per-example worst case (highest loss)
    is kept (highest CE for y, or lowest CE for t). Reference: Madry et al.,
    "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.

    Args:
        model: A callable returning logits (called with `training=False`).
        x: Clean inputs.
        y: Integer labels `(batch,)` or one-hot labels.
        epsilon: Radius of the ball.
        step_size: Step length per iteration.
        steps: Number of iterations (>= 1).
        random_start: Start from a uniform point of the ball instead of x.
            Defaults to `True`.
        restarts: Number of independent runs (>= 1). Defaults to `1`.
        norm: `"linf"` or `"l2"`. Defaults to `"linf"`.
        targets: Integer target labels `(batch,)` for a targeted attack, or
            `None`. Defaults to `None`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.
        seed: Int or shape-`[2]` int tensor for the random starts. Defaults
            to `0`.

    Returns:
        Adversarial inputs with the shape and dtype of `x`.

    Raises:
        ValueError: If an argument is out of range.
    """
    norm = _validation.one_of("norm", norm, ops.NORMS)
    x, epsilon, clip_min, clip_max = _validation.attack_inputs(x, epsilon, clip_min, clip_max, norm)
    step_size = _validation.non_negative_float("step_size", step_size)
    steps = _validation.positive_int("steps", steps)
    restarts = _validation.positive_int("restarts", restarts)

    score = ops.attack_loss(model, y, targets)
    seed = ops.as_seed(seed)

    def start(restart):
        if not random_start:
            return x
        restart_seed = ops.fold_seed(seed, restart)
        if norm == "linf":
            return ops.random_start(x, "uniform", epsilon, restart_seed, clip_min, clip_max)
        # Uniform direction, radius uniform in [0, epsilon].
        direction = ops.normal(keras.ops.shape(x), restart_seed, dtype=x.dtype)
        norms = ops.expand_like(ops.l2_norm(direction), x)
        radius = ops.uniform(
            keras.ops.shape(norms), ops.fold_seed(restart_seed, 1), 0.0, epsilon, dtype=x.dtype
        )
        return ops.project_l2(x + direction / norms * radius, x, epsilon, clip_min, clip_max)

    best_x, best_loss = x, ops.per_example_fill(x, -float("inf"))
    for restart in range(restarts):
        x_adv = ops.ascend(
            score,
            x,
            start(restart),
            epsilon=epsilon,
            step_size=step_size,
            steps=steps,
            clip_min=clip_min,
            clip_max=clip_max,
            norm=norm,
        )
        loss = score(x_adv)
        better = loss > best_loss
        best_loss = keras.ops.where(better, loss, best_loss)
        best_x = keras.ops.where(ops.expand_like(better, x), x_adv, best_x)
    return keras.ops.stop_gradient(best_x)
