"""Square Attack (Andriushchenko et al., ECCV 2020), l-inf, score-based black-box."""

import keras

from keras_lfr import _validation, ops

# Iterations (of 10,000 when rescaled) after which the square size p is halved.
_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init, iteration, queries, rescale_schedule=True):
    """The fraction p of pixels a square covers at `iteration` (0-based).

    p halves after iterations 10, 50, 200, 500, 1000, 2000, 4000, 6000 and
    8000. With `rescale_schedule`, the iteration is first mapped onto a budget
    of 10,000 (`iteration / queries * 10000`, truncated), as in the Square
    attack's code; AutoAttack's ensemble runs it with `resc_schedule=False`.
    """
    progress = keras.ops.cast(iteration, "float32")
    if rescale_schedule:
        progress = keras.ops.floor(progress / queries * 10_000)
    halvings = keras.ops.sum(
        keras.ops.cast(progress > keras.ops.convert_to_tensor(_HALVINGS, "float32"), "float32")
    )
    return p_init / 2.0**halvings


def square(
    model,
    x,
    y,
    *,
    epsilon,
    queries=5000,
    p_init=0.8,
    rescale_schedule=True,
    clip_min=0.0,
    clip_max=1.0,
    seed=0,
):
    """Random-search l-inf attack that needs only the model's scores.

    Starts from vertical stripes of ±ε, then, for each query, redraws a random
    square window (side √(p·H·W), p shrinking on a fixed schedule) of the
    perturbation to ±ε per channel, and keeps the change if it lowers the
    margin z_y − max_{i≠y} z_i. Examples stop changing once fooled; the loop
    stops when all are. No gradients are used, so gradient masking does not
    fool it. Reference: Andriushchenko et al., "Square Attack: a
    query-efficient black-box adversarial attack via random search", ECCV 2020.

    Args:
        model: A callable returning logits (or any scores).
        x: Clean images `(batch, height, width, channels)`.
        y: Integer or one-hot labels.
        epsilon: l-inf radius.
        queries: Maximum model queries per example (>= 1). Defaults to
            `5000`.
        p_init: Initial fraction of pixels per square. Defaults to `0.8`.
        rescale_schedule: Stretch p's schedule (fixed for 10,000 queries) to
            `queries`, as the Square attack's code does by default; `False`
            keeps it at fixed iterations, as AutoAttack's ensemble (and
            `evaluation.strong_protocol`) runs it. Defaults to `True`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.
        seed: Int or shape-`[2]` int tensor. Defaults to `0`.

    Returns:
        Adversarial inputs with the shape of `x`.

    Raises:
        ValueError: If an argument is out of range or `x` is not a batch of
            images.
    """
    x, epsilon, clip_min, clip_max = _validation.attack_inputs(x, epsilon, clip_min, clip_max)
    queries = _validation.positive_int("queries", queries)
    p_init = _validation.positive_float("p_init", p_init)
    if len(x.shape) != 4:
        raise ValueError(
            f"Invalid value for argument `x`. Received: x with shape {x.shape}. "
            "Expected a batch of images (batch, height, width, channels)."
        )
    labels = ops.sparse_labels(y)
    seed = ops.as_seed(seed)
    batch, height, width, channels = keras.ops.shape(x)

    def signs(shape, step_seed):
        return keras.ops.where(ops.uniform(shape, step_seed) < 0.5, -epsilon, epsilon)

    def query(x_adv):
        return ops.margin(model(x_adv, training=False), labels)

    def like_x(images):
        # The static shape of `x` (a loop variable keeps its shape).
        return keras.ops.reshape(images, (-1, *x.shape[1:]))

    stripes = signs((batch, 1, width, channels), ops.fold_seed(seed, 0))
    x_best = like_x(keras.ops.clip(x + stripes, clip_min, clip_max))
    best = query(x_best)
    rows = keras.ops.reshape(keras.ops.arange(height, dtype="int32"), (1, -1, 1, 1))
    cols = keras.ops.reshape(keras.ops.arange(width, dtype="int32"), (1, 1, -1, 1))

    def body(i, state):
        x_best, best = state
        step_seed = ops.fold_seed(seed, i)
        # Query i >= 1 follows the initial stripes: iteration i - 1 of AutoAttack.
        p = square_fraction(p_init, i - 1, queries, rescale_schedule)
        area = float(height * width)
        side = keras.ops.cast(keras.ops.round(keras.ops.sqrt(p * area)), "int32")
        side = keras.ops.clip(side, 1, min(height, width) - 1)
        offsets = ops.uniform((2, batch), ops.fold_seed(step_seed, 1))
        top = keras.ops.cast(offsets[0] * keras.ops.cast(height - side + 1, "float32"), "int32")
        left = keras.ops.cast(offsets[1] * keras.ops.cast(width - side + 1, "float32"), "int32")
        top, left = keras.ops.reshape(top, (-1, 1, 1, 1)), keras.ops.reshape(left, (-1, 1, 1, 1))
        window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        values = keras.ops.clip(
            x + signs((batch, 1, 1, channels), ops.fold_seed(step_seed, 2)),
            clip_min,
            clip_max,
        )
        candidate = like_x(keras.ops.where(window, values, x_best))
        score = query(candidate)
        accept = (score < best) & (best > 0)
        x_best = keras.ops.where(ops.expand_like(accept, x), candidate, x_best)
        return x_best, keras.ops.where(accept, score, best)

    # Query 0 drew the stripes; stop early once every example is fooled.
    x_best, _ = ops.iterate(
        body, (x_best, best), queries - 1, first=1, active=lambda s: keras.ops.any(s[1] > 0)
    )
    return keras.ops.stop_gradient(x_best)
