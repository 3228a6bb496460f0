"""PGD adversarial training (Madry et al., ICLR 2018)."""

import keras

from keras_lfr import _validation, defaults, ops
from keras_lfr.methods.base import BallMethod, register_method


@register_method("pgd_at")
class PGDAT(BallMethod):
    """Cross-entropy on PGD-K adversarial examples, optionally mixed with clean CE.

    loss = (1 − `clean_weight`) · CE(x_pgd, y) + `clean_weight` · CE(x, y),
    where x_pgd comes from `steps` l-inf PGD steps of size `step_size` from a
    uniform random start in B∞(x, `epsilon`), model in inference mode.
    Reference: Madry et al., "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018.

    Reports `adv_ce` and `clean_ce`. Clean logits for the compiled metrics come
    from the training-mode pass when `clean_weight > 0`, else from an
    inference-mode pass outside the gradient.

    Args:
        epsilon: Radius of the l-inf ball. Defaults to `0.3`.
        step_size: PGD step. Defaults to `0.01`.
        steps: PGD steps K. Defaults to `40`.
        clean_weight: Weight of the clean CE in [0, 1]. Defaults to `0.0`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.

    Raises:
        ValueError: If a hyperparameter is out of range.
    """

    terms = ("adv_ce", "clean_ce")
    penalty_hyperparameters = ("epsilon",)

    def __init__(
        self,
        epsilon=defaults.PAPER_EPSILON,
        step_size=defaults.PAPER_STEP_SIZE,
        steps=defaults.PAPER_STEPS,
        clean_weight=0.0,
        clip_min=0.0,
        clip_max=1.0,
    ):
        self._set_ball(epsilon, step_size, steps, clip_min, clip_max)
        self.clean_weight = _validation.non_negative_float("clean_weight", clean_weight)
        if self.clean_weight > 1:
            raise ValueError(
                "Invalid value for argument `clean_weight`. Received: "
                f"clean_weight={clean_weight!r}. Expected a float in [0, 1]."
            )

    def perturb(self, model, x, y, seed, scale=1.0):
        # The seed of `attacks.pgd`'s first restart: the same draws as that attack.
        return self.ascend(ops.attack_loss(model, y), x, "uniform", ops.fold_seed(seed, 0), scale)

    def loss(self, model, x, y, x_adv, sample_weight=None):
        adv_ce = ops.weighted_mean(ops.cross_entropy(y, model(x_adv, training=True)), sample_weight)
        if self.clean_weight > 0:
            logits = model(x, training=True)
        else:
            logits = keras.ops.stop_gradient(model(x, training=False))
        clean_ce = ops.weighted_mean(ops.cross_entropy(y, logits), sample_weight)
        total = (1 - self.clean_weight) * adv_ce + self.clean_weight * clean_ce
        return logits, total, {"adv_ce": adv_ce, "clean_ce": clean_ce}

    def get_config(self):
        return {**self.ball_config(), "clean_weight": self.clean_weight}
