"""Small differentiable building blocks shared by the methods and the attacks.

All functions are plain TensorFlow, work per example, and run unchanged in
eager mode, inside `tf.function` and under XLA. Randomness is stateless: every
function that draws noise takes an explicit `seed` (a shape-`[2]` int tensor).
"""

import tensorflow as tf

START_KINDS = ("normal", "normal_unclipped", "uniform", "none")
# Standard deviation of the authors' random start, x + 0.001 * N(0, 1).
NORMAL_START_STDDEV = 0.001


def cross_entropy(labels, logits):
    """Per-example softmax cross-entropy of integer labels against logits.

    Args:
        labels: Integer class indices, shape `(batch,)`.
        logits: Unnormalised scores, shape `(batch, classes)`. Computed in
            float32 whatever the model's compute dtype.

    Returns:
        A float32 tensor of shape `(batch,)`.
    """
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(labels, tf.int32), logits=tf.cast(logits, tf.float32)
    )


def input_gradient(model, x, labels, training=False):
    """Gradient of the summed per-example cross-entropy with respect to `x`.

    Because the loss is a sum of per-example terms, row `i` of the result is
    exactly the gradient of example `i`'s own loss (in inference mode; with
    batch statistics in training mode the examples interact through them).
    Recorded on any enclosing tape, so the result can be differentiated again
    (double backprop) with respect to `x` or the weights.

    Args:
        model: A callable returning logits.
        x: The inputs.
        labels: Integer class indices, shape `(batch,)`.
        training: Whether to call the model in training mode. Defaults to
            `False`.

    Returns:
        A tuple `(gradient, logits)`; `gradient` has the shape of `x`.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = model(x, training=training)
        loss = tf.reduce_sum(cross_entropy(labels, logits))
    return tape.gradient(loss, x), logits


def l1_norm(x):
    """Per-example l1 norm over all but the first axis."""
    return tf.reduce_sum(tf.abs(tf.reshape(x, [tf.shape(x)[0], -1])), axis=1)


def l2_norm(x):
    """Per-example l2 norm over all but the first axis."""
    return tf.norm(tf.reshape(x, [tf.shape(x)[0], -1]), axis=1)


def per_example_dot(a, b):
    """Per-example inner product ⟨aᵢ, bᵢ⟩ over all but the first axis."""
    return tf.reduce_sum(tf.reshape(a * b, [tf.shape(a)[0], -1]), axis=1)


def project_linf(x_adv, x, epsilon, clip_min, clip_max):
    """Projects `x_adv` onto the l-inf ball B(x, epsilon) within the pixel range."""
    x_adv = tf.clip_by_value(x_adv, x - epsilon, x + epsilon)
    return tf.clip_by_value(x_adv, clip_min, clip_max)


def uniform(shape, seed, minval=0.0, maxval=1.0, dtype=tf.float32):
    """Stateless U(minval, maxval) samples, the same with and without XLA.

    TensorFlow's own float conversion of random bits differs between XLA and
    the graph kernels; converting Philox's uint32 bits here keeps a seeded run
    reproducible whatever the compiler: U(0, 1) is bit for bit the same, and
    other ranges agree up to the rounding of the scaling (XLA may fuse it).
    """
    bits = tf.random.stateless_uniform(
        shape, seed, minval=None, maxval=None, dtype=tf.uint32, alg="philox"
    )
    # 24 high bits -> (0, 1), never exactly 0 or 1.
    unit = (tf.cast(tf.bitwise.right_shift(bits, 8), tf.float32) + 0.5) * (1.0 / (1 << 24))
    return tf.cast(minval + (maxval - minval) * unit, dtype)


def normal(shape, seed, dtype=tf.float32):
    """Stateless N(0, 1) samples (Box-Muller on `uniform`), identical with and without XLA."""
    u = uniform(tf.concat([[2], tf.cast(shape, tf.int32)], axis=0), seed)
    sample = tf.sqrt(-2.0 * tf.math.log(u[0])) * tf.cos(2.0 * 3.141592653589793 * u[1])
    return tf.cast(sample, dtype)


def random_start(x, kind, epsilon, seed, clip_min, clip_max):
    """Draws the starting point of an inner maximisation.

    Args:
        x: The clean inputs.
        kind: `"normal"` for x + 0.001 * N(0, 1) projected onto the ball and
            the pixel range (the LFR authors' start), `"normal_unclipped"`
            for the same point left unprojected, so that it may lie just
            outside the pixel range (the TRADES authors' start: their first
            clamp follows the first step), `"uniform"` for
            x + U(-epsilon, epsilon) (Madry et al.), or `"none"` to start at x.
        epsilon: Radius of the l-inf ball.
        seed: A shape-`[2]` integer tensor for the stateless generator.
        clip_min: Smallest valid pixel value.
        clip_max: Largest valid pixel value.

    Returns:
        A point of the ball B(x, epsilon) within the pixel range (any point
        near x for `"normal_unclipped"`).
    """
    if kind == "none":
        return x
    if kind in ("normal", "normal_unclipped"):
        noise = NORMAL_START_STDDEV * normal(tf.shape(x), seed, dtype=x.dtype)
        if kind == "normal_unclipped":
            return x + noise
    else:
        noise = uniform(tf.shape(x), seed, -epsilon, epsilon, dtype=x.dtype)
    return project_linf(x + noise, x, epsilon, clip_min, clip_max)


def weighted_mean(values, sample_weight=None):
    """Batch mean of per-example `values`, each scaled by its sample weight.

    Like Keras' `"sum_over_batch_size"` reduction: sum(w * v) / batch size.
    """
    if sample_weight is not None:
        values = values * tf.cast(tf.reshape(sample_weight, [-1]), values.dtype)
    return tf.reduce_mean(values)


def sparse_labels(y):
    """Converts integer, `(batch, 1)` or one-hot labels to integer indices.

    Args:
        y: Labels of shape `(batch,)`, `(batch, 1)` or `(batch, classes)`.

    Returns:
        An int32 tensor of shape `(batch,)`.
    """
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] is not None and y.shape[-1] > 1:
        return tf.argmax(y, axis=-1, output_type=tf.int32)
    return tf.cast(tf.reshape(y, [-1]), tf.int32)


def fold_seed(seed, value):
    """Derives a new stateless seed from `seed` and an integer `value`."""
    seed = tf.cast(seed, tf.int64)
    return tf.stack([seed[0], seed[1] * 1_000_003 + tf.cast(value, tf.int64)])


def as_seed(seed):
    """Turns an int or a shape-`[2]` int tensor into a stateless seed tensor."""
    if isinstance(seed, int):
        return tf.constant([seed, 0], dtype=tf.int64)
    return tf.cast(seed, tf.int64)


def iterate(body, state, steps, *, first=0, active=None):
    """Runs `state = body(i, state)` for i = first, first + 1, … in a `tf.while_loop`.

    At most `steps` iterations; with `active` (a function of the state
    returning a scalar bool), the loop also stops as soon as it is false. The
    state may be a tensor or any nest of tensors. The loop is a graph loop
    (not unrolled), compiles under XLA, and sets `maximum_iterations` so that
    it stays differentiable.
    """
    last = first + steps

    def cond(i, state):
        going = i < last
        return going if active is None else going & active(state)

    _, state = tf.while_loop(
        cond,
        lambda i, state: (i + 1, body(i, state)),
        (tf.constant(first), state),
        maximum_iterations=steps,
    )
    return state


def expand_like(values, x):
    """Reshapes per-example `values` of shape `(batch,)` to broadcast against `x`."""
    return tf.reshape(values, [-1] + [1] * (len(x.shape) - 1))


def project_l2(x_adv, x, epsilon, clip_min, clip_max):
    """Projects `x_adv` onto the l2 ball B₂(x, epsilon), then clips to the pixel range."""
    delta = x_adv - x
    factor = tf.minimum(1.0, epsilon / tf.maximum(expand_like(l2_norm(delta), x), 1e-12))
    return tf.clip_by_value(x + delta * factor, clip_min, clip_max)


NORMS = ("linf", "l2")


def ascend(
    objective,
    x,
    x_start,
    *,
    epsilon,
    step_size,
    steps,
    clip_min,
    clip_max,
    norm="linf",
    decay=None,
    keep_best=False,
):
    """Projected steepest ascent of a per-example objective in an ε-ball.

    The one inner-maximisation loop of keras_lfr: every method with an inner
    max and the PGD-family attacks (PGD, FGSM, MI-FGSM) run it. Each of the
    `steps` iterations takes g = ∇ Σᵢ objective(x')ᵢ (each example's
    direction is its own gradient) and moves x' ← Π(x' + step_size · d):

    - `norm="linf"`: d = sign(g), Π onto B∞(x, ε) ∩ [clip_min, clip_max];
      with `decay` (MI-FGSM's μ), d = sign(m) for the momentum
      m ← μ·m + g/‖g‖₁;
    - `norm="l2"`: d = g/‖g‖₂, Π onto B₂(x, ε), then the pixel range.

    No gradient reaches the weights or `x`. Arguments are not validated here
    (the methods check theirs once, when built; the attacks on every call).

    Args:
        objective: Maps x' to per-example values, shape `(batch,)`.
        x: The centre of the ball.
        x_start: The first iterate (e.g. from `random_start`).
        epsilon: Radius of the ball (a float or scalar tensor).
        step_size: Step length (a float or scalar tensor).
        steps: Number of iterations (a Python int).
        clip_min: Smallest valid pixel value.
        clip_max: Largest valid pixel value.
        norm: `"linf"` or `"l2"`. Defaults to `"linf"`.
        decay: Momentum μ of the l-inf direction, or `None` for plain sign
            ascent. Defaults to `None`.
        keep_best: Also return, per example, the best of all `steps + 1`
            iterates. Defaults to `False`.

    Returns:
        The last iterate; or, with `keep_best`, a tuple `(x_best, best)` of
        the per-example iterate with the largest objective and that value.
    """
    x = tf.stop_gradient(x)
    project = project_linf if norm == "linf" else project_l2

    def value_and_gradient(x_adv):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x_adv)
            values = objective(x_adv)
            total = tf.reduce_sum(values)
        return values, tape.gradient(total, x_adv)

    def direction(grad, momentum):
        if norm == "l2":
            return grad / tf.maximum(expand_like(l2_norm(grad), x), 1e-12), momentum
        if decay is None:
            return tf.sign(grad), momentum
        momentum = decay * momentum + grad / (expand_like(l1_norm(grad), x) + 1e-12)
        return tf.sign(momentum), momentum

    def keep(x_new, values, x_best, best):
        better = values > best
        return tf.where(expand_like(better, x), x_new, x_best), tf.maximum(values, best)

    def step(_, state):
        x_adv, momentum, *best = state
        values, grad = value_and_gradient(x_adv)
        if keep_best:
            best = keep(x_adv, values, *best)
        d, momentum = direction(grad, momentum)
        return (project(x_adv + step_size * d, x, epsilon, clip_min, clip_max), momentum, *best)

    x_start = tf.convert_to_tensor(x_start)
    # Unused state is a scalar, so that plain ascent carries no extra tensors.
    momentum = tf.zeros_like(x_start) if decay is not None else tf.zeros([])
    best = (x_start, tf.fill([tf.shape(x_start)[0]], -float("inf"))) if keep_best else ()
    x_adv, _, *best = iterate(step, (x_start, momentum, *best), steps)
    if not keep_best:
        return tf.stop_gradient(x_adv)
    # The last iterate has not been scored yet.
    x_best, best = keep(x_adv, objective(x_adv), *best)
    return tf.stop_gradient(x_best), tf.stop_gradient(best)


def attack_loss(model, y, targets=None):
    """The per-example objective of a cross-entropy attack, as a function of x'.

    CE(f(x'), y) to push away from the labels `y` (untargeted), or
    −CE(f(x'), t) to pull towards the `targets` t; the model in inference mode.
    """
    if targets is None:
        labels = sparse_labels(y)
        return lambda x_adv: cross_entropy(labels, model(x_adv, training=False))
    labels = sparse_labels(targets)
    return lambda x_adv: -cross_entropy(labels, model(x_adv, training=False))


def margin(scores, labels):
    """s_y − max_{i≠y} s_i per example, in float32: negative once misclassified.

    On logits (the Square attack's objective) or on probabilities (the
    decision surfaces).
    """
    scores = tf.cast(scores, tf.float32)
    true = tf.gather(scores, labels, axis=1, batch_dims=1)
    others = tf.where(tf.one_hot(labels, tf.shape(scores)[1]) > 0, -float("inf"), scores)
    return true - tf.reduce_max(others, axis=1)


def kl_divergence(logits_p, logits_q):
    """Per-example KL(softmax(logits_p) ‖ softmax(logits_q)), in float32."""
    log_p = tf.nn.log_softmax(tf.cast(logits_p, tf.float32))
    log_q = tf.nn.log_softmax(tf.cast(logits_q, tf.float32))
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)
