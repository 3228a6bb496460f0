"""Adversarial Weight Perturbation (Wu, Xia, Wang, NeurIPS 2020), on top of any method."""

import contextlib

import keras

from keras_lfr import _validation, backend
from keras_lfr.backend.common import ChildScope, propagate
from keras_lfr.methods.base import (
    available_methods,
    deserialize,
    get_method,
    register_method,
    serialize,
)
from keras_lfr.methods.composite import CompositeMethod, base_hyperparameter_names

# AWP's guard against division by zero in the per-layer normalisation.
_EPS = 1e-20


def _norm(tensor):
    """The l2 (Frobenius) norm of a whole tensor of any rank."""
    return keras.ops.sqrt(keras.ops.sum(keras.ops.square(tensor)))


def awp_perturbation(model, method, x, y, x_adv, sample_weight, gamma):
    """The weight perturbation v of AWP for the current batch.

    One proxy ascent step on the method's loss (training mode, with x_adv
    fixed), rescaled per weight tensor: vₗ = γ · ‖wₗ‖ · ∇ₗ / ‖∇ₗ‖ for tensors of
    rank > 1 (kernels), `None` for the rest (biases, normalisation scales). The
    proxy pass runs in a throw-away `keras.StatelessScope`, so it updates no
    statistics (e.g. BatchNorm moving averages). Under several replicas the
    direction comes from the replica's own batch.

    Args:
        model: The inner Keras model.
        method: The `Method` whose loss is perturbed.
        x: Clean inputs.
        y: Integer labels.
        x_adv: The method's perturbed inputs (or `None`).
        sample_weight: Per-example weights or `None`.
        gamma: The relative size γ of the perturbation (a scalar).

    Returns:
        A list aligned with `model.trainable_variables`.
    """
    variables = model.trainable_variables

    def proxy_loss():
        with ChildScope():
            _, loss, _ = method.loss(model, x, y, x_adv, sample_weight)
        return loss, None

    grads, _ = backend.value_and_weight_gradients(proxy_loss, variables)
    perturbation = []
    for variable, grad in zip(variables, grads, strict=True):
        if grad is None or len(variable.shape) <= 1:
            perturbation.append(None)
            continue
        scale = gamma * _norm(variable.value) / (_norm(grad) + _EPS)
        perturbation.append(keras.ops.stop_gradient(scale * grad))
    return perturbation


@contextlib.contextmanager
def perturbed_weights(model, perturbation):
    """Runs the body with the model's weights read as w + v, without changing them.

    Inside, every read of a perturbed variable returns `w + v` (recorded on any
    enclosing tape, so gradients w.r.t. w are gradients at w + v). Updates
    made inside to non-trainable variables (BatchNorm statistics) are applied
    on exit; the trainable weights themselves are never assigned.
    """
    mapping = [
        (variable, variable.value + delta)
        for variable, delta in zip(model.trainable_variables, perturbation, strict=True)
        if delta is not None
    ]
    with ChildScope(mapping) as scope:
        yield
    propagate(*scope.updates(exclude=model.trainable_variables))


@register_method("awp")
class AWP(CompositeMethod):
    """Adversarial Weight Perturbation: the base method's loss at the worst nearby weights.

    Each step: x' from the base method's inner max; one proxy ascent step on
    the base loss gives the per-layer weight perturbation
    vₗ = γ · ‖wₗ‖ · ∇ₗ / ‖∇ₗ‖ (kernels only; `awp_perturbation`); the gradient
    of the base loss is then taken at w + v and applied to w, which the
    perturbation never changes. Reference: Wu, Xia, Wang, "Adversarial Weight
    Perturbation Helps Robust Generalization", NeurIPS 2020 (γ about
    0.005–0.01).

    The logged loss and terms are the base objective at w + v (what the
    gradient is of); the clean logits for the compiled metrics come from an
    extra inference-mode pass at the real weights w. Usually built by
    `wrap(model, method=..., awp_gamma=γ, awp_warmup_steps=S)`.

    Args:
        base: The method to perturb: a registered name (its hyperparameters
            passed as `base_hyperparameters`), a `Method`, or a serialized
            method (`{"name": ..., "config": ...}`). Defaults to `"trades"`.
        gamma: The relative size γ of the weight perturbation (>= 0).
            Defaults to `0.005`.
        warmup_steps: Optimizer steps trained with the base method alone
            before AWP starts; counted from `optimizer.iterations`, so it
            holds in every training loop and resumes with the optimizer.
            Defaults to `0`.
        **base_hyperparameters: Hyperparameters of the base method, when
            `base` is a name.

    Raises:
        ValueError: If a hyperparameter is invalid or `base` is `"awp"`.
    """

    def __init__(self, base="trades", gamma=0.005, warmup_steps=0, **base_hyperparameters):
        if isinstance(base, str):
            choices = tuple(m for m in available_methods() if m != "awp")
            _validation.one_of("base", base, choices)
        elif isinstance(base, dict):
            base = deserialize(base)
        # `get_method` refuses hyperparameters passed with a method instance.
        self.base = get_method(base, **base_hyperparameters)
        if isinstance(self.base, AWP):
            raise ValueError(
                f"Invalid value for argument `base`. Received: base={self.base!r}. "
                "Expected a method other than AWP."
            )
        self.gamma = _validation.non_negative_float("gamma", gamma)
        self.warmup_steps = _validation.non_negative_int("warmup_steps", warmup_steps)
        self.terms = self.base.terms
        self.term_descriptions = {}

    @classmethod
    def hyperparameter_names(cls):
        bases = tuple(m for m in available_methods() if m != "awp")
        return ("base", "gamma", "warmup_steps", *base_hyperparameter_names(bases)[1:])

    @property
    def penalty_hyperparameters(self):
        return self.base.penalty_hyperparameters

    def penalty_values(self):
        return self.base.penalty_values()

    def perturbed_loss(self, model, x, y, x_adv, sample_weight=None):
        """The base method's loss and terms at the perturbed weights w + v."""
        perturbation = awp_perturbation(model, self.base, x, y, x_adv, sample_weight, self.gamma)
        with perturbed_weights(model, perturbation):
            _, loss, terms = self.base.loss(model, x, y, x_adv, sample_weight)
        return loss, terms

    def loss_at_step(self, model, x, y, x_adv, sample_weight, step):
        args = (model, x, y, x_adv, sample_weight)
        if step is None or not self.warmup_steps:
            loss, terms = self.perturbed_loss(*args)
        else:
            # During the warm-up the base loss alone, skipping the proxy pass
            # (a branch, not γ = 0, which would still pay for it).
            loss, terms = backend.cond(
                keras.ops.convert_to_tensor(step) >= self.warmup_steps,
                lambda: self.perturbed_loss(*args),
                lambda: self.base.loss(*args)[1:],
            )
        # The accuracy is the model's own, at the real weights.
        logits = keras.ops.stop_gradient(model(x, training=False))
        return logits, loss, terms

    def loss(self, model, x, y, x_adv, sample_weight=None):
        return self.loss_at_step(model, x, y, x_adv, sample_weight, None)

    def get_config(self):
        return {
            "base": serialize(self.base),
            "gamma": self.gamma,
            "warmup_steps": self.warmup_steps,
        }
