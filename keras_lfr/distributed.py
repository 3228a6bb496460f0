"""A training loop over `strategy.run`, for strategies where Keras `fit` does not work.

Keras 3's `fit` does not run under `tf.distribute.MultiWorkerMirroredStrategy`
(keras-team/keras#20585). `distributed_fit` trains a compiled `RobustModel`
with the model's own `train_step` (so the same method, AWP, loss scaling and
metrics as `fit`) inside `strategy.run`, one compiled step per batch.
"""

import keras
import numpy as np

from keras_lfr import _optional, _validation

tf = _optional.tensorflow_module("tensorflow", "keras_lfr.distributed (tf.distribute)")


def distributed_fit(model, data, *, epochs, steps_per_epoch, strategy=None, verbose=1):
    """Trains `model` for `epochs × steps_per_epoch` steps under `strategy`.

    Args:
        model: A `RobustModel` built and compiled under `strategy.scope()`.
        data: Either a `tf.data.Dataset` of global batches (the strategy
            splits each batch across replicas and workers), or a function
            `input_context -> tf.data.Dataset` of per-replica batches (for
            `strategy.distribute_datasets_from_function`, where each worker
            builds its own shard). It must yield at least
            `epochs × steps_per_epoch` batches.
        epochs: Number of epochs (>= 1).
        steps_per_epoch: Steps per epoch (>= 1).
        strategy: The strategy; `None` uses the model's. Defaults to `None`.
        verbose: 1 for a progress bar on the chief worker, 0 for none.
            Defaults to `1`.

    Returns:
        A dict mapping each metric name to its per-epoch values, like
        `History.history`.

    Raises:
        ValueError: If an argument is invalid or the model is not compiled.

    Example:

    >>> strategy = tf.distribute.MultiWorkerMirroredStrategy()
    >>> with strategy.scope():
    ...     model = keras_lfr.wrap(keras_lfr.models.small_cnn(), steps=40)
    ...     model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9))
    >>> history = keras_lfr.distributed.distributed_fit(
    ...     model, global_batches, epochs=100, steps_per_epoch=469)
    """
    epochs = _validation.positive_int("epochs", epochs)
    steps_per_epoch = _validation.positive_int("steps_per_epoch", steps_per_epoch)
    if not getattr(model, "compiled", False):
        raise ValueError(
            f"Invalid value for argument `model`. Received: an uncompiled {type(model).__name__}."
            " Expected a model compiled under the strategy's scope."
        )
    strategy = strategy or model.distribute_strategy
    # The same checks and callbacks as `fit` (data checks, AWP's epoch counter,
    # NaNGuard, CollapseWarning), so a model trains the same under both loops.
    sample = data if isinstance(data, tf.data.Dataset) else data(tf.distribute.InputContext())
    _, own_callbacks = model.prepare_fit(sample)
    callback_list = keras.callbacks.CallbackList(own_callbacks, model=model)
    if isinstance(data, tf.data.Dataset):
        spec = data.element_spec
        iterator = iter(strategy.experimental_distribute_dataset(data))
    else:
        spec = data(tf.distribute.InputContext()).element_spec
        iterator = iter(strategy.distribute_datasets_from_function(data))
    with strategy.scope():
        # What fit builds before its first step: optimizer slots and metric variables
        # (Keras' own builder needs only the shapes and dtypes of a batch).
        model.optimizer.build(model.trainable_variables)
        model._symbolic_build(data_batch=spec)

    @tf.function
    def step(batch):
        strategy.run(model.train_step, args=(batch,))

    chief = _is_chief(strategy)
    history = {}
    callback_list.on_train_begin()
    for epoch in range(epochs):
        model.reset_metrics()
        callback_list.on_epoch_begin(epoch)
        progbar = keras.utils.Progbar(steps_per_epoch, verbose=verbose if chief else 0)
        if verbose and chief:
            print(f"Epoch {epoch + 1}/{epochs}")
        for i in range(steps_per_epoch):
            step(next(iterator))
            logs = {k: float(np.asarray(v)) for k, v in model.get_metrics_result().items()}
            callback_list.on_train_batch_end(i, logs)
            progbar.update(i + 1, list(logs.items()), finalize=i + 1 == steps_per_epoch)
        callback_list.on_epoch_end(epoch, logs)
        for name, value in logs.items():
            history.setdefault(name, []).append(value)
    callback_list.on_train_end()
    return history


def _is_chief(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    task_type = getattr(resolver, "task_type", None)
    return task_type in (None, "chief") or (task_type == "worker" and resolver.task_id == 0)
