"""Decoupled Direction and Norm attack (Rony et al., CVPR 2019), l2."""

import math

import keras

from keras_lfr import _validation, ops


def ddn(
    model,
    x,
    y,
    *,
    steps=100,
    init_norm=1.0,
    gamma=0.05,
    max_step=1.0,
    min_step=0.01,
    clip_min=0.0,
    clip_max=1.0,
    return_norms=False,
):
    """Finds small l2 adversarial examples by decoupling direction and norm.

    Each iteration takes a normalised gradient step on CE(f(x + δ), y) of
    length α (cosine-annealed from `max_step` to `min_step`), then rescales δ
    to the norm ε, which shrinks by (1 − γ) while x + δ is adversarial and
    grows by (1 + γ) while it is not; x + δ is clipped to the pixel range. The
    smallest-norm adversarial seen is kept per example. There is no ε budget:
    the LFR authors count an example as robust when no adversarial is found
    in 20 iterations. Reference: Rony et al., "Decoupling Direction and Norm
    for Efficient Gradient-Based L2 Adversarial Attacks and Defenses", CVPR
    2019.

    Args:
        model: A callable returning logits.
        x: Clean inputs.
        y: Integer or one-hot labels.
        steps: Iterations (>= 1). Defaults to `100`.
        init_norm: Initial norm ε₀. Defaults to `1.0`.
        gamma: Norm update factor γ in (0, 1). Defaults to `0.05`.
        max_step: Initial step α. Defaults to `1.0`.
        min_step: Final step α. Defaults to `0.01`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.
        return_norms: Also return the l2 norms of the perturbations found.
            Defaults to `False`.

    Returns:
        The adversarial inputs (the clean input where none was found); with
        `return_norms=True`, a tuple `(x_adv, norms)` with `inf` where none
        was found.

    Raises:
        ValueError: If an argument is out of range.
    """
    clip_min, clip_max = _validation.clip_range(clip_min, clip_max)
    steps = _validation.positive_int("steps", steps)
    init_norm = _validation.positive_float("init_norm", init_norm)
    gamma = _validation.positive_float("gamma", gamma)
    if gamma >= 1:
        raise ValueError(
            f"Invalid value for argument `gamma`. Received: gamma={gamma!r}. "
            "Expected a float in (0, 1)."
        )
    max_step = _validation.positive_float("max_step", max_step)
    min_step = _validation.non_negative_float("min_step", min_step)
    x = keras.ops.stop_gradient(_validation.images(x, clip_min, clip_max))
    labels = ops.sparse_labels(y)

    def body(i, state):
        delta, norm, best_norm, best_x = state
        x_adv = x + delta
        grad, logits = ops.input_gradient(model, x_adv, labels)
        is_adv = keras.ops.cast(keras.ops.argmax(logits, axis=1), "int32") != labels
        delta_norm = ops.l2_norm(delta)
        better = is_adv & (delta_norm < best_norm)
        best_norm = keras.ops.where(better, delta_norm, best_norm)
        best_x = keras.ops.where(ops.expand_like(better, x), x_adv, best_x)

        progress = keras.ops.cast(i, "float32") / steps
        alpha = min_step + (max_step - min_step) * (1 + keras.ops.cos(math.pi * progress)) / 2
        grad = grad / keras.ops.maximum(ops.expand_like(ops.l2_norm(grad), x), 1e-12)
        delta = delta + alpha * grad
        norm = norm * keras.ops.where(is_adv, 1.0 - gamma, 1.0 + gamma)
        delta = delta * ops.expand_like(norm / keras.ops.maximum(ops.l2_norm(delta), 1e-12), x)
        delta = keras.ops.clip(x + delta, clip_min, clip_max) - x
        return delta, norm, best_norm, best_x

    initial = (
        keras.ops.zeros_like(x),
        ops.per_example_fill(x, init_norm),
        ops.per_example_fill(x, float("inf")),
        x,
    )
    delta, _, best_norm, best_x = ops.iterate(body, initial, steps)
    # The last iterate has not been checked yet.
    last = x + delta
    predictions = keras.ops.argmax(model(last, training=False), axis=1)
    is_adv = keras.ops.cast(predictions, "int32") != labels
    better = is_adv & (ops.l2_norm(delta) < best_norm)
    best_norm = keras.ops.where(better, ops.l2_norm(delta), best_norm)
    best_x = keras.ops.stop_gradient(keras.ops.where(ops.expand_like(better, x), last, best_x))
    return (best_x, best_norm) if return_norms else best_x
