"""Adversarial Weight Perturbation (Wu, Xia, Wang, NeurIPS 2020), for any method."""

import contextlib

import keras
import tensorflow as tf

# AWP's guard against division by zero in the per-layer normalisation.
_EPS = 1e-20


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
        gamma: The relative size γ of the perturbation (a scalar; may be a
            tensor, e.g. 0 during warm-up).

    Returns:
        A list aligned with `model.trainable_variables`.
    """
    variables = model.trainable_variables
    with tf.GradientTape() as tape:
        with keras.StatelessScope():
            _, loss, _ = method.loss(model, x, y, x_adv, sample_weight)
    grads = tape.gradient(loss, variables)
    perturbation = []
    for variable, grad in zip(variables, grads, strict=True):
        if grad is None or len(variable.shape) <= 1:
            perturbation.append(None)
            continue
        scale = gamma * tf.norm(variable.value) / (tf.norm(grad) + _EPS)
        perturbation.append(tf.stop_gradient(scale * grad))
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
    with keras.StatelessScope(state_mapping=mapping) as scope:
        yield
    for variable in model.non_trainable_variables:
        value = scope.get_current_value(variable)
        if value is not None:
            variable.assign(value)
