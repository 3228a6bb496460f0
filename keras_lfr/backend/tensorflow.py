"""keras_lfr's backend pieces on TensorFlow: tapes, the fused cross-entropy, `tf.distribute`."""

import tensorflow as tf

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

    Recorded on any enclosing tape, so the gradient can be differentiated again.
    """
    x = tf.convert_to_tensor(x)
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        values, aux = fn(x)
        total = tf.reduce_sum(values)
    return (values, aux), tape.gradient(total, x)


def value_and_weight_gradients(fn, variables):
    """`fn()` returns `(loss, aux)`; returns `(gradients of loss w.r.t. variables, aux)`."""
    with tf.GradientTape() as tape:
        loss, aux = fn()
    return tape.gradient(loss, variables), aux


def cond(pred, true_fn, false_fn):
    """`true_fn()` if the scalar `pred` holds, else `false_fn()`: one branch runs (`tf.cond`)."""
    return tf.cond(pred, true_fn, false_fn)


def replica():
    """`(replica id, replicas in sync)` of the current `tf.distribute` replica context."""
    context = tf.distribute.get_replica_context()
    return context.replica_id_in_sync_group, context.num_replicas_in_sync


def run_step(model, step, data):
    """Runs a stateful train or test step: on TensorFlow, Keras calls it as `step(data)`."""
    del model
    return step(data)


def is_tensor(x):
    """Whether `x` is a TensorFlow tensor (or variable)."""
    return tf.is_tensor(x)


def is_concrete(x):
    """Whether `x` holds values (eager), not a symbol (inside `tf.function`)."""
    del x
    return tf.executing_eagerly()


def gradient_function(model, compute_gradients):
    """The function the train step calls for the gradients; XLA per replica when needed.

    With `jit_compile=True` under a strategy with several replicas Keras
    cannot compile the whole step: the per-replica gradient computation is
    compiled instead and the optimizer update runs outside it.
    """
    if model.jit_compile and model.distribute_strategy.num_replicas_in_sync > 1:
        model.jit_compile = False
        return tf.function(compute_gradients, jit_compile=True)
    return compute_gradients


def cross_entropy(labels, logits):
    """Per-example softmax cross-entropy of int32 labels: TensorFlow's fused kernel."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)


def batch_function(fn, variables=()):
    """`fn(*tensors)` compiled (`tf.function`) once for any batch size.

    A cascade shrinks the batch from attack to attack: tracing with an
    unknown batch dimension keeps that to one trace. The compiled function
    reads `variables` (the model's) at every call, as TensorFlow graphs do.
    """
    del variables
    compiled = tf.function(fn)

    def run(*args):
        args = [tf.convert_to_tensor(a) for a in args]
        specs = [tf.TensorSpec([None, *a.shape[1:]], a.dtype) for a in args]
        return compiled.get_concrete_function(*specs)(*args)

    return run
