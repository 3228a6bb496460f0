"""Local Flatness Regularization (Xu, Li, Jiang, Xia, ICIP 2020)."""

import math

import keras
import numpy as np

from keras_lfr import _validation, defaults, ops
from keras_lfr.methods.base import BallMethod, register_method

# LFR's penalties: the paper's, and one whose gradient has no pull along the logits' scale.
PENALTIES = ("paper", "scale_free")


def flatness(model, x_adv, labels):
    """Per-example ‖∇ₓ CE(x', y)‖₁ at `x_adv`, model in inference mode (differentiable)."""
    return ops.l1_norm(ops.input_gradient(model, x_adv, labels)[0])


def scale_free(norm, logits):
    """A per-example penalty with `norm`'s value whose pull on the logits' scale is lower by `norm`.

    Returns `norm · s₀ / s`, where `s` is each example's logit spread (the
    standard deviation of its logits over the classes) and `s₀` the same
    number held constant (`stop_gradient`). Its value is `norm`'s. Scaling
    the logits by `c` scales `s` by `c`, so along that direction the
    penalty's derivative is `d norm / d log c − norm`: where ‖∇ₓ CE‖₁ grows
    like `c` (the loss's linear regime) the pull to shrink the logits
    cancels, and where the loss saturates the pull to grow them is stronger
    by `norm`.

    Args:
        norm: Per-example penalties `(batch,)`, e.g. ‖∇ₓ CE(x', y)‖₁.
        logits: The logits `(batch, classes)` the penalties were computed from.

    Returns:
        A float32 tensor `(batch,)`, equal to `norm` in value.
    """
    spread = keras.ops.std(keras.ops.cast(logits, "float32"), axis=-1)
    spread = keras.ops.maximum(spread, 1e-12)
    return norm * keras.ops.stop_gradient(spread) / spread


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
    return_points=False,
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
        return_points: Also return the points x' where the estimates were
            found (for `logit_scale_pressure`). Defaults to `False`.

    Returns:
        A float32 tensor `(batch,)` of γ estimates; with `return_points`, a
        tuple `(gamma, x_flattest)`.

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
    x = _validation.images(x, clip_min, clip_max)
    labels = ops.sparse_labels(y)
    points, gamma = ops.ascend(
        lambda x_adv: flatness(model, x_adv, labels),
        x,
        ops.random_start(x, random_start, epsilon, ops.as_seed(seed), clip_min, clip_max),
        epsilon=epsilon,
        step_size=step_size,
        steps=steps,
        clip_min=clip_min,
        clip_max=clip_max,
        keep_best=True,
    )
    return (gamma, points) if return_points else gamma


def logit_scale_pressure(model, x, y, x_adv, *, lam=0.02, log_step=0.01):
    """Which way LFR's objective pushes the scale of the logits.

    Multiplying a model's logits by c > 0 changes no prediction, and a
    network can do it along one direction of its last layer's weights. LFR's
    objective CE(x) + λ · ‖∇ₓ CE(x')‖₁ depends on c both ways: a larger c
    lowers the clean CE, and lowers the penalty at points x' where the loss
    is saturated (p_y → 1), but raises it where the loss is still in its
    linear regime, since there ∇ₓ CE grows like c. This returns the
    derivatives with respect to log c at c = 1, by central differences.
    A model whose penalty falls as its logits shrink at most of its x' is on
    the unconfident side, where training can lower the penalty by shrinking
    the logits instead of flattening the loss.

    Args:
        model: A callable returning logits; called with `training=False`.
        x: Inputs.
        y: Integer or one-hot labels.
        x_adv: The points x' at which the penalty is measured, e.g. the
            inner maximisation's (`local_flatness(..., return_points=True)`).
        lam: The penalty weight λ. Defaults to `0.02`.
        log_step: The central-difference step in log c. Defaults to `0.01`.

    Returns:
        A dict of floats: `"clean_ce"`, d/d log c of the batch-mean clean
        CE; `"penalty"`, λ times d/d log c of the batch mean of
        ‖∇ₓ CE(c · z(x'), y)‖₁; `"total"`, their sum (where it is positive,
        gradient descent shrinks the logits); `"shrinking_share"`, the
        fraction of examples whose penalty falls as the logits shrink.

    Example:

    >>> gamma, points = keras_lfr.local_flatness(model, x, y, 0.3, 0.1, 5, return_points=True)
    >>> keras_lfr.logit_scale_pressure(model, x, y, points)
    {'clean_ce': -0.0096, 'penalty': 0.0137, 'total': 0.0041, 'shrinking_share': 0.04}
    """
    lam = _validation.non_negative_float("lam", lam)
    labels = ops.sparse_labels(y)
    logits = keras.ops.cast(model(x, training=False), "float32")

    def scaled(sign):
        c = math.exp(sign * log_step)
        clean = keras.ops.mean(ops.cross_entropy(labels, c * logits))
        penalty = flatness(lambda t, training=False: c * model(t, training=training), x_adv, labels)
        return clean, penalty

    (clean_up, penalty_up), (clean_down, penalty_down) = scaled(1), scaled(-1)
    per_example = keras.ops.convert_to_numpy((penalty_up - penalty_down) / (2 * log_step))
    clean_ce = float(clean_up - clean_down) / (2 * log_step)
    penalty = lam * float(np.mean(per_example))
    return {
        "clean_ce": clean_ce,
        "penalty": penalty,
        "total": clean_ce + penalty,
        "shrinking_share": float(np.mean(per_example > 0)),
    }


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

    With `penalty="scale_free"`, the outer penalty keeps its value but its
    derivative along the logits' scale is lower by its value (`scale_free`):
    where the loss is linear the model cannot lower it by shrinking its
    logits. The inner max is the paper's either
    way. Measured less robust than the paper's penalty (docs/RESULTS.md):
    without that pull the logits grow unchecked.

    Args:
        epsilon: Radius of the l-inf ball. Defaults to `0.3` (MNIST).
        step_size: Inner sign-ascent step. Defaults to `0.01`.
        steps: Inner steps K. Defaults to `40`.
        lam: Weight λ of the flatness penalty. Defaults to `0.02`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.
        random_start: `"normal"`, `"uniform"` or `"none"`. Defaults to
            `"normal"`.
        penalty: `"paper"` (‖∇ₓ CE(x')‖₁, the authors') or `"scale_free"`
            (the same value, without the pull to shrink the logits where the
            loss is linear: `scale_free`). Defaults to `"paper"`.

    Raises:
        ValueError: If a hyperparameter is out of range.

    Example:

    >>> model = keras_lfr.wrap(cnn, method=keras_lfr.methods.LFR(penalty="scale_free"))
    """

    terms = ("clean_ce", "local_flatness")
    term_descriptions = {"local_flatness": "the LFR penalty ‖∇ₓ CE(x')‖₁"}
    penalty_hyperparameters = ("lam",)
    drift_term = "local_flatness"
    drift_advice = (
        "raise `lam`, ramp epsilon up more slowly (`epsilon_warmup`), train a smooth "
        "activation (`keras_lfr.models.small_cnn(activation='silu')`), or lower the "
        "learning rate"
    )

    def __init__(
        self,
        epsilon=defaults.PAPER_EPSILON,
        step_size=defaults.PAPER_STEP_SIZE,
        steps=defaults.PAPER_STEPS,
        lam=0.02,
        clip_min=0.0,
        clip_max=1.0,
        random_start="normal",
        penalty="paper",
    ):
        self._set_ball(epsilon, step_size, steps, clip_min, clip_max)
        self.lam = _validation.non_negative_float("lam", lam)
        self.random_start = _validation.one_of("random_start", random_start, ops.START_KINDS)
        self.penalty = _validation.one_of("penalty", penalty, PENALTIES)

    def perturb(self, model, x, y, seed, scale=1.0):
        return self.ascend(
            lambda x_adv: flatness(model, x_adv, y), x, self.random_start, seed, scale
        )

    def loss(self, model, x, y, x_adv, sample_weight=None):
        logits = model(x, training=True)
        clean_ce = ops.weighted_mean(ops.cross_entropy(y, logits), sample_weight)
        grad, adv_logits = ops.input_gradient(model, x_adv, y, training=True)
        norm = ops.l1_norm(grad)
        if self.penalty == "scale_free":
            norm = scale_free(norm, adv_logits)
        flatness = ops.weighted_mean(norm, sample_weight)
        total = clean_ce + self.lam * flatness
        return logits, total, {"clean_ce": clean_ce, "local_flatness": flatness}

    def get_config(self):
        return {
            **self.ball_config(),
            "lam": self.lam,
            "random_start": self.random_start,
            "penalty": self.penalty,
        }
