"""Square Attack (Andriushchenko et al., ECCV 2020), l-inf, score-based black-box."""

import tensorflow as tf

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
    progress = tf.cast(iteration, tf.float32)
    if rescale_schedule:
        progress = tf.floor(progress / queries * 10_000)
    halvings = tf.reduce_sum(tf.cast(progress > tf.constant(_HALVINGS, tf.float32), tf.float32))
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
    if x.shape.rank != 4:
        raise ValueError(
            f"Invalid value for argument `x`. Received: x with shape {x.shape}. "
            "Expected a batch of images (batch, height, width, channels)."
        )
    labels = ops.sparse_labels(y)
    seed = ops.as_seed(seed)
    batch, height, width, channels = (tf.shape(x)[i] for i in range(4))

    def signs(shape, step_seed):
        return tf.where(ops.uniform(shape, step_seed) < 0.5, -epsilon, epsilon)

    def query(x_adv):
        return ops.margin(model(x_adv, training=False), labels)

    stripes = signs(tf.stack([batch, 1, width, channels]), ops.fold_seed(seed, 0))
    x_best = tf.ensure_shape(tf.clip_by_value(x + stripes, clip_min, clip_max), x.shape)
    best = query(x_best)
    rows = tf.reshape(tf.range(height), [1, -1, 1, 1])
    cols = tf.reshape(tf.range(width), [1, 1, -1, 1])

    def body(i, state):
        x_best, best = state
        step_seed = ops.fold_seed(seed, i)
        # Query i >= 1 follows the initial stripes: iteration i - 1 of AutoAttack.
        p = square_fraction(p_init, i - 1, queries, rescale_schedule)
        area = tf.cast(height * width, tf.float32)
        side = tf.cast(tf.round(tf.sqrt(p * area)), tf.int32)
        side = tf.clip_by_value(side, 1, tf.minimum(height, width) - 1)
        offsets = ops.uniform([2, batch], ops.fold_seed(step_seed, 1))
        top = tf.cast(offsets[0] * tf.cast(height - side + 1, tf.float32), tf.int32)
        left = tf.cast(offsets[1] * tf.cast(width - side + 1, tf.float32), tf.int32)
        top, left = tf.reshape(top, [-1, 1, 1, 1]), tf.reshape(left, [-1, 1, 1, 1])
        window = (rows >= top) & (rows < top + side) & (cols >= left) & (cols < left + side)
        values = tf.clip_by_value(
            x + signs(tf.stack([batch, 1, 1, channels]), ops.fold_seed(step_seed, 2)),
            clip_min,
            clip_max,
        )
        candidate = tf.ensure_shape(tf.where(window, values, x_best), x.shape)
        score = query(candidate)
        accept = (score < best) & (best > 0)
        x_best = tf.where(ops.expand_like(accept, x), candidate, x_best)
        return x_best, tf.where(accept, score, best)

    # Query 0 drew the stripes; stop early once every example is fooled.
    x_best, _ = ops.iterate(
        body, (x_best, best), queries - 1, first=1, active=lambda s: tf.reduce_any(s[1] > 0)
    )
    return tf.stop_gradient(x_best)
