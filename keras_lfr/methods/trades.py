"""TRADES (Zhang et al., ICML 2019)."""

import keras

from keras_lfr import _validation, defaults, ops
from keras_lfr.methods.base import BallMethod, register_method


@register_method("trades")
class TRADES(BallMethod):
    """TRADES: CE(f(x), y) + β · KL(f(x) ‖ f(x')), x' maximising the KL.

    Inner max: `steps` sign-ascent steps of size `step_size` on
    Σᵢ KL(p(xᵢ) ‖ p(x'ᵢ)) over B∞(x, `epsilon`) ∩ [`clip_min`, `clip_max`]
    from x + 0.001·N(0, 1), model in inference mode. As in the official
    `trades_loss`, the start is not clipped to the pixel range (the first
    projection follows the first step); `random_start="normal"` clips it, as
    the LFR authors do for LFR. Outer: clean CE plus
    `beta` times the batch mean of the KL, both passes in training mode, as in
    the authors' code. Reference: Zhang et al., "Theoretically Principled
    Trade-off between Robustness and Accuracy", ICML 2019. The LFR paper
    trains TRADES with 1/λ = 1, i.e. β = 1 (the TRADES paper's MNIST setting
    is β = 6).

    Reports `clean_ce` and `kl`.

    Args:
        epsilon: Radius of the l-inf ball. Defaults to `0.3`.
        step_size: Inner step. Defaults to `0.01`.
        steps: Inner steps K. Defaults to `40`.
        beta: Weight β of the KL term. Defaults to `1.0`.
        random_start: Start of the inner max, a kind of
            `keras_lfr.ops.random_start`. Defaults to `"normal_unclipped"`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.

    Raises:
        ValueError: If a hyperparameter is out of range.
    """

    terms = ("clean_ce", "kl")
    term_descriptions = {"kl": "the TRADES KL term"}
    penalty_hyperparameters = ("beta",)

    def __init__(
        self,
        epsilon=defaults.PAPER_EPSILON,
        step_size=defaults.PAPER_STEP_SIZE,
        steps=defaults.PAPER_STEPS,
        beta=1.0,
        clip_min=0.0,
        clip_max=1.0,
        random_start="normal_unclipped",
    ):
        self._set_ball(epsilon, step_size, steps, clip_min, clip_max)
        self.beta = _validation.non_negative_float("beta", beta)
        self.random_start = _validation.one_of("random_start", random_start, ops.START_KINDS)

    def perturb(self, model, x, y, seed, scale=1.0):
        del y
        x = keras.ops.stop_gradient(x)
        clean_logits = keras.ops.stop_gradient(model(x, training=False))

        def objective(x_adv):
            return ops.kl_divergence(clean_logits, model(x_adv, training=False))

        return self.ascend(objective, x, self.random_start, seed, scale)

    def loss(self, model, x, y, x_adv, sample_weight=None):
        logits = model(x, training=True)
        clean_ce = ops.weighted_mean(ops.cross_entropy(y, logits), sample_weight)
        kl = ops.weighted_mean(
            ops.kl_divergence(logits, model(x_adv, training=True)), sample_weight
        )
        return logits, clean_ce + self.beta * kl, {"clean_ce": clean_ce, "kl": kl}

    def get_config(self):
        return {**self.ball_config(), "beta": self.beta, "random_start": self.random_start}
