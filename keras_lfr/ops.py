"""Small differentiable building blocks shared by the methods and the attacks.

All functions are written with `keras.ops` (the backend-specific pieces, such
as the input gradient and the random bits, are in `keras_lfr.backend`), work
per example, and run unchanged eagerly, inside `tf.function` or `jax.jit` and
under XLA. Randomness is stateless: every function that draws noise takes an
explicit `seed` (a shape-`[2]` uint32 tensor; `as_seed` makes one), and the
same seed draws the same numbers on every backend.
"""

import math

from keras import ops

from keras_lfr import backend

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
    return backend.cross_entropy(ops.cast(labels, "int32"), ops.cast(logits, "float32"))


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

    def loss(x):
        logits = model(x, training=training)
        return cross_entropy(labels, logits), logits

    (_, logits), gradient = backend.value_and_gradient(loss, x)
    return gradient, logits


def flatten(x):
    """`x` as `(batch, features)`: all but the first axis in one."""
    return ops.reshape(x, (ops.shape(x)[0], -1))


def l1_norm(x):
    """Per-example l1 norm over all but the first axis."""
    return ops.sum(ops.abs(flatten(x)), axis=1)


def l2_norm(x):
    """Per-example l2 norm over all but the first axis."""
    return ops.sqrt(ops.sum(ops.square(flatten(x)), axis=1))


def per_example_dot(a, b):
    """Per-example inner product ⟨aᵢ, bᵢ⟩ over all but the first axis."""
    return ops.sum(flatten(a * b), axis=1)


def project_linf(x_adv, x, epsilon, clip_min, clip_max):
    """Projects `x_adv` onto the l-inf ball B(x, epsilon) within the pixel range."""
    x_adv = ops.clip(x_adv, x - epsilon, x + epsilon)
    return ops.clip(x_adv, clip_min, clip_max)


# 2^32 / φ: keeps seed 0 from hashing a zero key.
_GOLDEN = 0x9E3779B9


def _mix(x):
    """A bijective avalanche hash of uint32 values (the "lowbias32" constants)."""
    x = ops.bitwise_xor(x, ops.right_shift(x, 16)) * ops.convert_to_tensor(0x7FEB352D, "uint32")
    x = ops.bitwise_xor(x, ops.right_shift(x, 15)) * ops.convert_to_tensor(0x846CA68B, "uint32")
    return ops.bitwise_xor(x, ops.right_shift(x, 16))


def random_bits(shape, seed):
    """Stateless uint32 bits: a keyed hash of each element's position.

    Counter-based, written with `keras.ops` in uint32 arithmetic only, so
    that a seed gives the same bits on every backend and compiler (XLA or
    not): random starts are the same on TensorFlow and JAX.

    Args:
        shape: The shape of the result (ints; on TensorFlow the batch
            dimension may be a scalar tensor).
        seed: A shape-`[2]` seed from `as_seed` or `fold_seed`.

    Returns:
        A uint32 tensor of `shape`.
    """
    seed = ops.cast(seed, "uint32")
    size = math.prod(shape[1:]) * shape[0] if shape else 1
    index = ops.cast(ops.arange(size, dtype="int32"), "uint32")
    golden = ops.convert_to_tensor(_GOLDEN, "uint32")
    bits = _mix(_mix(ops.bitwise_xor(index, _mix(seed[0] + golden))) + _mix(seed[1]))
    return ops.reshape(bits, shape)


def uniform(shape, seed, minval=0.0, maxval=1.0, dtype="float32"):
    """Stateless U(minval, maxval) samples from `random_bits`, the same on every backend.

    U(0, 1) is bit for bit the same with and without XLA; other ranges
    agree up to the rounding of the scaling (XLA may fuse it).
    """
    bits = random_bits(shape, seed)
    # 24 high bits -> (0, 1), never exactly 0 or 1.
    unit = (ops.cast(ops.right_shift(bits, 8), "float32") + 0.5) * (1.0 / (1 << 24))
    return ops.cast(minval + (maxval - minval) * unit, dtype)


def normal(shape, seed, dtype="float32"):
    """Stateless N(0, 1) samples (Box-Muller on `uniform`), identical with and without XLA."""
    u = uniform((2, *shape), seed)
    sample = ops.sqrt(-2.0 * ops.log(u[0])) * ops.cos(2.0 * math.pi * u[1])
    return ops.cast(sample, dtype)


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
        noise = NORMAL_START_STDDEV * normal(ops.shape(x), seed, dtype=x.dtype)
        if kind == "normal_unclipped":
            return x + noise
    else:
        noise = uniform(ops.shape(x), seed, -epsilon, epsilon, dtype=x.dtype)
    return project_linf(x + noise, x, epsilon, clip_min, clip_max)


def weighted_mean(values, sample_weight=None):
    """Batch mean of per-example `values`, each scaled by its sample weight.

    Like Keras' `"sum_over_batch_size"` reduction: sum(w * v) / batch size.
    """
    if sample_weight is not None:
        values = values * ops.cast(ops.reshape(sample_weight, (-1,)), values.dtype)
    return ops.mean(values)


def sparse_labels(y):
    """Converts integer, `(batch, 1)` or one-hot labels to integer indices.

    Args:
        y: Labels of shape `(batch,)`, `(batch, 1)` or `(batch, classes)`.

    Returns:
        An int32 tensor of shape `(batch,)`.
    """
    y = ops.convert_to_tensor(y)
    if len(y.shape) == 2 and y.shape[-1] is not None and y.shape[-1] > 1:
        return ops.cast(ops.argmax(y, axis=-1), "int32")
    return ops.cast(ops.reshape(y, (-1,)), "int32")


def make_seed(a, b):
    """A stateless seed: shape `[2]`, uint32, from two integers or integer scalars (mod 2³²)."""
    return ops.stack([ops.cast(a, "uint32"), ops.cast(b, "uint32")])


def fold_seed(seed, value):
    """Derives a new stateless seed from `seed` and an integer `value` (uint32 arithmetic)."""
    seed = ops.cast(seed, "uint32")
    mixed = seed[1] * ops.convert_to_tensor(1_000_003, "uint32") + ops.cast(value, "uint32")
    return ops.stack([seed[0], mixed])


def as_seed(seed):
    """Turns an int or a shape-`[2]` int tensor into a stateless seed tensor."""
    if isinstance(seed, int):
        return make_seed(seed, 0)
    return make_seed(seed[0], seed[1])


def iterate(body, state, steps, *, first=0, active=None):
    """Runs `state = body(i, state)` for i = first, first + 1, … in a compiled loop.

    At most `steps` iterations; with `active` (a function of the state
    returning a scalar bool), the loop also stops as soon as it is false. The
    state may be a tensor or any nest of tensors, whose shapes and dtypes
    `body` keeps. The loop is a graph loop (not unrolled) and compiles under
    XLA; nothing differentiates through it (the attacks and inner
    maximisations stop its gradient).
    """
    last = first + steps

    def cond(i, state):
        going = i < last
        return going if active is None else ops.logical_and(going, active(state))

    _, state = ops.while_loop(
        cond,
        lambda i, state: (i + 1, body(i, state)),
        (ops.convert_to_tensor(first, "int32"), state),
        maximum_iterations=steps,
    )
    return state


def expand_like(values, x):
    """Reshapes per-example `values` of shape `(batch,)` to broadcast against `x`."""
    return ops.reshape(values, (-1,) + (1,) * (len(x.shape) - 1))


def project_l2(x_adv, x, epsilon, clip_min, clip_max):
    """Projects `x_adv` onto the l2 ball B₂(x, epsilon), then clips to the pixel range."""
    delta = x_adv - x
    factor = ops.minimum(1.0, epsilon / ops.maximum(expand_like(l2_norm(delta), x), 1e-12))
    return ops.clip(x + delta * factor, clip_min, clip_max)


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
    x = ops.stop_gradient(x)
    project = project_linf if norm == "linf" else project_l2

    def direction(grad, momentum):
        if norm == "l2":
            return grad / ops.maximum(expand_like(l2_norm(grad), x), 1e-12), momentum
        if decay is None:
            return ops.sign(grad), momentum
        momentum = decay * momentum + grad / (expand_like(l1_norm(grad), x) + 1e-12)
        return ops.sign(momentum), momentum

    def keep(x_new, values, x_best, best):
        better = values > best
        return ops.where(expand_like(better, x), x_new, x_best), ops.maximum(values, best)

    def step(_, state):
        x_adv, momentum, *best = state
        (values, _), grad = backend.value_and_gradient(lambda x: (objective(x), None), x_adv)
        if keep_best:
            best = keep(x_adv, values, *best)
        d, momentum = direction(grad, momentum)
        return (project(x_adv + step_size * d, x, epsilon, clip_min, clip_max), momentum, *best)

    x_start = ops.convert_to_tensor(x_start)
    # Unused state is a scalar, so that plain ascent carries no extra tensors.
    momentum = ops.zeros_like(x_start) if decay is not None else ops.zeros(())
    best = (x_start, per_example_fill(x_start, -math.inf)) if keep_best else ()
    x_adv, _, *best = iterate(step, (x_start, momentum, *best), steps)
    if not keep_best:
        return ops.stop_gradient(x_adv)
    # The last iterate has not been scored yet.
    x_best, best = keep(x_adv, objective(x_adv), *best)
    return ops.stop_gradient(x_best), ops.stop_gradient(best)


def per_example_fill(x, value, dtype="float32"):
    """A `(batch,)` tensor of `value`, one per example of `x`."""
    return ops.full((ops.shape(x)[0],), value, dtype=dtype)


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


def pick(scores, classes):
    """`scores[i, classes[i]]` per example: shape `(batch,)`."""
    return ops.take_along_axis(scores, ops.cast(classes, "int32")[:, None], axis=1)[:, 0]


def margin(scores, labels):
    """s_y − max_{i≠y} s_i per example, in float32: negative once misclassified.

    On logits (the Square attack's objective) or on probabilities (the
    decision surfaces).
    """
    scores = ops.cast(scores, "float32")
    labels = ops.cast(labels, "int32")
    true = pick(scores, labels)
    others = ops.where(ops.one_hot(labels, scores.shape[1]) > 0, -math.inf, scores)
    return true - ops.max(others, axis=1)


def kl_divergence(logits_p, logits_q):
    """Per-example KL(softmax(logits_p) ‖ softmax(logits_q)), in float32."""
    log_p = ops.log_softmax(ops.cast(logits_p, "float32"))
    log_q = ops.log_softmax(ops.cast(logits_q, "float32"))
    return ops.sum(ops.exp(log_p) * (log_p - log_q), axis=-1)
