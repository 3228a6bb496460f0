"""The few pieces of keras_lfr that differ between Keras backends.

Everything else is written with `keras.ops`. Each backend module
(`tensorflow.py`, `jax.py`) provides the same functions:

- `value_and_gradient(fn, x)`: `fn(x)` and ∇ₓ Σ fn(x), itself differentiable
  again (LFR's double backprop);
- `value_and_weight_gradients(fn, variables)`: `fn()`'s `(loss, aux)` and the
  gradients of `loss` with respect to `variables`;
- `cross_entropy(labels, logits)`: per-example softmax cross-entropy
  (TensorFlow's fused kernel is faster than the composed ops);
- `batch_function(fn, variables)`: `fn` compiled for any batch size,
  reading the variables' current values at every call (the evaluation
  loops);
- `cond(pred, true_fn, false_fn)`: a branch on a scalar tensor;
- `replica()`: this replica's id and the number of replicas in sync;
- `gradient_function(model, fn)`: what the train step calls for the
  gradients (TensorFlow compiles it per replica under a strategy);
- `run_step(model, step, *args)`: runs a stateful-style train or test step
  (`step(data)`, reading and assigning variables) with the backend's step
  signature (TensorFlow: `(data)`; JAX: `(state, data)`, returning the new
  state);
- `is_tensor(x)` and `is_concrete(x)`.
"""

import keras

# The Keras backend keras_lfr runs on.
NAME = keras.backend.backend()
if NAME == "tensorflow":
    from keras_lfr.backend.tensorflow import *  # noqa: F403
elif NAME == "jax":
    from keras_lfr.backend.jax import *  # noqa: F403
else:
    raise ImportError(
        f"keras_lfr runs on Keras' TensorFlow and JAX backends. Received: "
        f"KERAS_BACKEND={NAME!r}. Set KERAS_BACKEND to 'tensorflow' or 'jax'."
    )
