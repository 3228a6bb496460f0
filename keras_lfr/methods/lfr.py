"""Local Flatness Regularization (Xu, Li, Jiang, Xia, ICIP 2020)."""

import tensorflow as tf

from keras_lfr import _validation, ops
from keras_lfr.methods.base import BallMethod, register_method


def _flatness_and_ascent_direction(model, x_adv, labels):
    """Per-example ‖∇ₓ CE‖₁ at `x_adv` and the gradient of their sum w.r.t. `x_adv`."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x_adv)
        grad, _ = ops.input_gradient(model, x_adv, labels)
        flatness = ops.l1_norm(grad)
        total = tf.reduce_sum(flatness)
    return flatness, tape.gradient(total, x_adv)


def flatness_ascent(
    model,
    x,
    labels,
    *,
    epsilon,
    step_size,
    steps,
    random_start,
    seed,
    clip_min,
    clip_max,
    keep_best=False,
):
    """Sign-ascent on Σᵢ ‖∇ₓ CE(x'ᵢ, yᵢ)‖₁ over B∞(x, epsilon) ∩ [clip_min, clip_max].

    The model runs in inference mode and no gradient reaches its weights.
    Inputs are validated by the callers (`LFR`, `local_flatness`).

    Returns:
        The last iterate if `keep_best` is `False`; otherwise a tuple
        `(x_best, gamma)` with the per-example iterate of largest ‖∇ₓ CE‖₁
        among all `steps + 1` iterates and that largest value.
    """
    x = tf.stop_gradient(x)
    x_adv = ops.random_start(x, random_start, epsilon, seed, clip_min, clip_max)

    def keep(x_new, value, x_best, best):
        better = value > best
        return tf.where(ops.expand_like(better, x), x_new, x_best), tf.maximum(value, best)

    def body(i, x_adv, x_best, best):
        value, direction = _flatness_and_ascent_direction(model, x_adv, labels)
        x_best, best = keep(x_adv, value, x_best, best)
        x_next = ops.project_linf(
            x_adv + step_size * tf.sign(direction), x, epsilon, clip_min, clip_max
        )
        return i + 1, x_next, x_best, best

    _, x_adv, x_best, best = tf.while_loop(
        lambda i, *_: i < steps,
        body,
        (tf.constant(0), x_adv, x_adv, tf.fill([tf.shape(x)[0]], -1.0)),
        maximum_iterations=steps,
    )
    if not keep_best:
        return tf.stop_gradient(x_adv)
    # The last iterate has not been scored yet.
    grad, _ = ops.input_gradient(model, x_adv, labels)
    x_best, best = keep(x_adv, ops.l1_norm(grad), x_best, best)
    return tf.stop_gradient(x_best), tf.stop_gradient(best)


def local_flatness(
    model,
    x,
    y,
    epsilon,
    step_size,
    steps,
    *,
    random_start="normal",
    clip_min=0.0,
    clip_max=1.0,
    seed=0,
):
    """Estimates the local flatness γ(x, ε) of a model around each input.

    γ(x, ε) = max over x' ∈ B∞(x, ε) ∩ [clip_min, clip_max] of ‖∇ₓ CE(x', y)‖₁
    (Definition 1 of Xu et al., ICIP 2020), estimated by `steps` sign-ascent
    steps and keeping, per example, the best of all iterates (so the estimate
    never falls below the start point's value). At `epsilon=0` it is
    exactly ‖∇ₓ CE(x, y)‖₁.

    Args:
        model: A callable returning logits; called with `training=False`.
        x: Inputs, e.g. images `(batch, height, width, channels)`.
        y: Integer labels `(batch,)` or one-hot labels.
        epsilon: Radius of the l-inf ball (>= 0).
        step_size: Sign-ascent step (>= 0).
        steps: Number of ascent steps (>= 1).
        random_start: `"normal"` (x + 0.001·N(0, 1), the authors' start),
            `"uniform"` or `"none"`. Defaults to `"normal"`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.
        seed: Int or shape-`[2]` int tensor for the random start. Defaults
            to `0`.

    Returns:
        A float32 tensor `(batch,)` of γ estimates.

    Raises:
        ValueError: If an argument is out of range.

    Example:

    >>> gamma = keras_lfr.local_flatness(model, x, y, 0.3, 0.01, 40)
    """
    clip_min, clip_max = _validation.clip_range(clip_min, clip_max)
    epsilon = _validation.epsilon_in_range(epsilon, clip_min, clip_max)
    step_size = _validation.non_negative_float("step_size", step_size)
    steps = _validation.positive_int("steps", steps)
    random_start = _validation.one_of("random_start", random_start, ops.START_KINDS)
    _, gamma = flatness_ascent(
        model,
        _validation.images(x, clip_min, clip_max),
        ops.sparse_labels(y),
        epsilon=epsilon,
        step_size=step_size,
        steps=steps,
        random_start=random_start,
        seed=ops.as_seed(seed),
        clip_min=clip_min,
        clip_max=clip_max,
        keep_best=True,
    )
    return gamma


@register_method("lfr")
class LFR(BallMethod):
    """Local Flatness Regularization: CE(x) + λ · meanᵢ max_{x'ᵢ} ‖∇ₓ CE(x'ᵢ, yᵢ)‖₁.

    Inner max: `steps` sign-ascent steps of size `step_size` on
    Σᵢ ‖∇ₓ CE(x'ᵢ, yᵢ)‖₁ (double backprop), projected onto
    B∞(x, `epsilon`) ∩ [`clip_min`, `clip_max`], model in inference mode,
    starting from x + 0.001·N(0, 1) as in the authors' code. Outer: clean CE
    plus `lam` times the batch mean of ‖∇ₓ CE(x'ᵢ, yᵢ)‖₁ at the last iterate,
    model in training mode, differentiated through the input gradient.

    Reports `clean_ce` (CE on x) and `local_flatness` (the batch mean of
    ‖∇ₓ CE(x', y)‖₁, the penalty before multiplying by `lam`).

    Args:
        epsilon: Radius of the l-inf ball. Defaults to `0.3` (MNIST).
        step_size: Inner sign-ascent step. Defaults to `0.01`.
        steps: Inner steps K. Defaults to `40`.
        lam: Weight λ of the flatness penalty. Defaults to `0.02`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.
        random_start: `"normal"`, `"uniform"` or `"none"`. Defaults to
            `"normal"`.

    Raises:
        ValueError: If a hyperparameter is out of range.
    """

    terms = ("clean_ce", "local_flatness")
    term_descriptions = {"local_flatness": "the LFR penalty ‖∇ₓ CE(x')‖₁"}
    penalty_hyperparameters = ("lam",)

    def __init__(
        self,
        epsilon=0.3,
        step_size=0.01,
        steps=40,
        lam=0.02,
        clip_min=0.0,
        clip_max=1.0,
        random_start="normal",
    ):
        self._set_ball(epsilon, step_size, steps, clip_min, clip_max)
        self.lam = _validation.non_negative_float("lam", lam)
        self.random_start = _validation.one_of("random_start", random_start, ops.START_KINDS)

    def perturb(self, model, x, y, seed, scale=1.0):
        epsilon, step_size = self.ball(scale)
        return flatness_ascent(
            model,
            x,
            y,
            epsilon=epsilon,
            step_size=step_size,
            steps=self.steps,
            random_start=self.random_start,
            seed=seed,
            clip_min=self.clip_min,
            clip_max=self.clip_max,
        )

    def loss(self, model, x, y, x_adv, sample_weight=None):
        logits = model(x, training=True)
        clean_ce = ops.weighted_mean(ops.cross_entropy(y, logits), sample_weight)
        grad, _ = ops.input_gradient(model, x_adv, y, training=True)
        flatness = ops.weighted_mean(ops.l1_norm(grad), sample_weight)
        total = clean_ce + self.lam * flatness
        return logits, total, {"clean_ce": clean_ce, "local_flatness": flatness}

    def get_config(self):
        return {**self.ball_config(), "lam": self.lam, "random_start": self.random_start}
