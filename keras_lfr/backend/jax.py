"""keras_lfr's backend pieces on JAX: `jax.grad` inside stateless scopes, Keras' pure step.

Keras' JAX trainer calls a train step as a pure function of the model's state
(`train_step(state, data)`). `run_step` maps that state onto the model's
variables in a `keras.StatelessScope`, so the one stateful-style step of
`RobustModel` runs unchanged, and collects the assigned values as the new
state. The gradients are `jax.grad` of functions that read the variables
through a nested scope; state a function assigns (Dropout's seed, batch
statistics) is carried out of the gradient's trace as auxiliary output.
"""

import jax
import jax.numpy as jnp
import keras

from keras_lfr.backend.common import ChildScope, propagate

__all__ = [
    "batch_function",
    "cross_entropy",
    "gradient_function",
    "cond",
    "is_concrete",
    "is_tensor",
    "replica",
    "run_step",
    "value_and_gradient",
    "value_and_weight_gradients",
]


def value_and_gradient(fn, x):
    """`fn(x)` is `(values, aux)`; returns `(values, aux)` and ∇ₓ Σ values.

    Differentiable again, like every `jax.grad`.
    """
    assigned = []

    def total(x):
        with ChildScope() as scope:
            values, aux = fn(x)
        variables, new = scope.updates()
        assigned[:] = variables
        return jnp.sum(values), (values, aux, new)

    gradient, (values, aux, new) = jax.grad(total, has_aux=True)(jnp.asarray(x))
    propagate(assigned, new)
    return (values, aux), gradient


def value_and_weight_gradients(fn, variables):
    """`fn()` returns `(loss, aux)`; returns `(gradients of loss w.r.t. variables, aux)`."""
    variables = list(variables)
    assigned = []

    def loss_of(values):
        with ChildScope(list(zip(variables, values, strict=True))) as scope:
            loss, aux = fn()
        others, new = scope.updates(exclude=variables)
        assigned[:] = others
        return loss, (aux, new)

    gradients, (aux, new) = jax.grad(loss_of, has_aux=True)([v.value for v in variables])
    propagate(assigned, new)
    return gradients, aux


def cond(pred, true_fn, false_fn):
    """`true_fn()` if the scalar `pred` holds, else `false_fn()`.

    Both branches run and the result is selected: variables assigned in a
    branch (Dropout's seed) cannot leave a `jax.lax.cond`.
    """
    true, false = true_fn(), false_fn()
    return jax.tree_util.tree_map(lambda a, b: jnp.where(pred, a, b), true, false)


def replica():
    """`(0, 1)`: Keras' JAX trainer runs one program over the global batch (SPMD)."""
    return 0, 1


def run_step(model, step, state, data):
    """Runs a stateful-style step as Keras' JAX trainer calls it: `(state, data) -> (logs, state)`.

    `state` is `(trainable, non_trainable[, optimizer], metrics)` values, in
    the order of the model's variable lists.
    """
    groups = [model.trainable_variables, model.non_trainable_variables]
    if len(state) == 4:
        groups.append(model.optimizer.variables)
    groups.append(model.metrics_variables)
    mapping = [
        (variable, value)
        for variables, values in zip(groups, state, strict=True)
        for variable, value in zip(variables, values, strict=True)
    ]
    with keras.StatelessScope(mapping) as scope:
        logs = step(data)
    new_state = tuple([scope.get_current_value(v) for v in variables] for variables in groups)
    return logs, new_state


def is_tensor(x):
    """Whether `x` is a JAX array (or tracer)."""
    return isinstance(x, jax.Array)


def is_concrete(x):
    """Whether `x` holds values: not a tracer of `jax.jit` or `jax.grad`."""
    return not isinstance(x, jax.core.Tracer)


def gradient_function(model, compute_gradients):
    """The function the train step calls for the gradients: on JAX, as is (Keras jits the step)."""
    del model
    return compute_gradients


def cross_entropy(labels, logits):
    """Per-example softmax cross-entropy of int32 labels: −log softmax(logits)[label]."""
    log_p = jax.nn.log_softmax(logits)
    return -jnp.take_along_axis(log_p, labels[:, None], axis=1)[:, 0]


def batch_function(fn, variables=()):
    """`fn(*arrays)` compiled with `jax.jit` (once per batch size).

    The current values of `variables` (the model's) are arguments of the
    compiled function, read at every call: a jitted function would otherwise
    keep the weights it was traced with as constants.
    """
    variables = list(variables)

    @jax.jit
    def compiled(values, *args):
        with ChildScope(list(zip(variables, values, strict=True))):
            return fn(*args)

    return lambda *args: compiled([v.value for v in variables], *(jnp.asarray(a) for a in args))
