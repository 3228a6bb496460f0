"""Checks that catch models which would make training or attacks meaningless."""

import sys
import types
import warnings

import keras
import numpy as np

from keras_lfr import _validation, backend

_PROBABILITY_ACTIVATIONS = ("softmax", "sigmoid", "log_softmax")


def _last_layer(model):
    layers = getattr(model, "layers", None)
    return layers[-1] if layers else None


def final_activation(model):
    """Returns the name of a probability-producing last activation, else `None`.

    Looks at the last layer of a Sequential or functional model: a `Softmax`
    layer, or any layer whose `activation` is softmax, sigmoid or log-softmax.
    """
    layer = _last_layer(model)
    if layer is None:
        return None
    if isinstance(layer, keras.layers.Softmax):
        return "softmax"
    activation = getattr(layer, "activation", None)
    name = getattr(activation, "__name__", None)
    return name if name in _PROBABILITY_ACTIVATIONS else None


def outputs_look_like_probabilities(outputs, atol=1e-3):
    """True if every row of `outputs` lies in [0, 1] and sums to 1 within `atol`."""
    outputs = np.asarray(outputs, dtype=np.float64)
    return bool(
        outputs.size
        and np.all(outputs >= 0)
        and np.all(outputs <= 1)
        and np.allclose(outputs.sum(axis=-1), 1.0, atol=atol)
    )


def warn_if_not_logits(model, outputs=None):
    """Warns when `model` appears to output probabilities instead of logits.

    Every loss and attack in keras_lfr applies its own softmax: a model that
    already ends in a softmax trains on flattened gradients and makes
    gradient-based attacks look stronger or weaker than they are.

    Args:
        model: The model to check.
        outputs: Optional outputs of the model on sample inputs; if given,
            they are checked too. Defaults to `None`.

    Returns:
        `True` if a warning was issued.
    """
    activation = final_activation(model)
    reason = None
    if activation is not None:
        reason = f"its last layer applies `{activation}`"
    elif outputs is not None and outputs_look_like_probabilities(outputs):
        reason = "its outputs on the first batch are non-negative and sum to 1"
    if reason is None:
        return False
    warnings.warn(
        f"Model {getattr(model, 'name', model)!r} looks like it outputs probabilities "
        f"({reason}). "
        "keras_lfr expects logits: remove the final softmax/sigmoid (keep it for "
        "serving only, e.g. `keras.Sequential([model, keras.layers.Softmax()])`).",
        stacklevel=3,
    )
    return True


def validate_batch(
    x, y=None, *, num_classes=None, input_rank=None, clip_min=None, clip_max=None, where="the data"
):
    """Checks a concrete batch before it reaches TensorFlow; raises or warns clearly.

    Args:
        x: Images (NumPy array or eager tensor).
        y: Integer or one-hot labels, or `None`. Defaults to `None`.
        num_classes: Number of model outputs, to range-check labels. Defaults
            to `None`.
        input_rank: Rank the model expects for `x` (with the batch axis).
            Defaults to `None`.
        clip_min: Smallest valid pixel value; pixels below it are warned
            about. Defaults to `None`.
        clip_max: Largest valid pixel value. Defaults to `None`.
        where: What is being checked, for the messages. Defaults to
            `"the data"`.

    Raises:
        ValueError: For integer images, a wrong rank or out-of-range labels.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(
            f"Invalid images in {where}: dtype {x.dtype}. Expected floating-point pixels "
            "scaled to the clip range, e.g. `tf.cast(images, tf.float32) / 255` for [0, 1]."
        )
    if input_rank is not None and x.ndim != input_rank:
        raise ValueError(
            f"Invalid images in {where}: shape {x.shape} (rank {x.ndim}). Expected rank "
            f"{input_rank} including the batch axis, e.g. (batch, height, width, channels)."
        )
    outside = None
    if clip_min is not None and clip_max is not None:
        outside = _validation.pixels_outside(x, clip_min, clip_max)
    if outside:
        low, high = outside
        warnings.warn(
            f"Pixels in {where} range over [{low:g}, {high:g}], outside "
            f"[clip_min, clip_max] = [{clip_min:g}, {clip_max:g}]: perturbations are "
            "clipped to that range, so inputs outside it change meaning. Rescale the "
            "images or set `clip_min`/`clip_max`.",
            stacklevel=3,
        )
    if y is None or num_classes is None:
        return
    y = np.asarray(y)
    labels = y.argmax(axis=-1) if y.ndim == 2 and y.shape[-1] > 1 else y.reshape(-1)
    if y.ndim == 2 and y.shape[-1] > 1 and y.shape[-1] != num_classes:
        raise ValueError(
            f"Invalid labels in {where}: one-hot width {y.shape[-1]}. Expected {num_classes} "
            "(the model's number of outputs)."
        )
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(
            f"Invalid labels in {where}: values in [{labels.min()}, {labels.max()}]. "
            f"Expected integers in [0, {num_classes - 1}] (the model has {num_classes} outputs)."
        )


def input_shape_of(model):
    """The shape of one input of a built model (no batch axis), or `None`."""
    inputs = getattr(model, "inputs", None) if model.built else None
    if inputs:
        return tuple(inputs[0].shape[1:])
    build_config = model.get_build_config() if model.built else None
    if build_config and "input_shape" in build_config:
        return tuple(build_config["input_shape"][1:])
    return None


def check_fit_data(robust_model, x, y=None):
    """Checks the first batch of the data passed to a `RobustModel`'s training loop.

    Floating-point images of the model's input rank, pixels within the
    method's clip range, labels in range, logits rather than probabilities;
    builds the model if needed (checkpoint callbacks need the weights before
    training). Data that cannot be read ahead is not checked.

    Args:
        robust_model: The `RobustModel` about to train.
        x: The data passed to `fit` (arrays, `tf.data.Dataset`, `PyDataset`
            or generator).
        y: The labels passed to `fit`, if any. Defaults to `None`.

    Returns:
        A tuple `(sample_x, data)`: a few inputs (or `None`) and the data to
        train on (a generator's first batch is put back).

    Raises:
        ValueError: If the batch is not usable.
    """
    sample_x, sample_y, data = first_batch(x, y)
    model, method = robust_model.inner_model, robust_model.method
    outputs = None
    if sample_x is not None:
        shape = input_shape_of(model)
        validate_batch(
            sample_x,
            input_rank=None if shape is None else len(shape) + 1,
            clip_min=getattr(method, "clip_min", None),
            clip_max=getattr(method, "clip_max", None),
            where="the data passed to fit",
        )
        if not robust_model.built:
            robust_model.build((None, *sample_x.shape[1:]))
        outputs = model(sample_x, training=False)
        validate_batch(
            sample_x, sample_y, num_classes=outputs.shape[-1], where="the data passed to fit"
        )
    warn_if_not_logits(model, outputs)
    return sample_x, data


def first_batch(x, y, count=32):
    """A few `(inputs, labels)` from the data passed to `fit`, to check them early.

    Reads the first batch of a `tf.data.Dataset`, a `keras.utils.PyDataset`
    or a Python generator (which is then replaced by one that yields that
    batch again first), or slices arrays. Returns `(inputs, labels, data)`,
    `data` being what `fit` should train on; inputs are `None` when the data
    cannot be read ahead.
    """
    data = x
    if is_tf_dataset(x):
        x, y = unpack_batch(next(iter(x.take(1))))
    elif isinstance(x, keras.utils.PyDataset):
        x, y = unpack_batch(x[0])
    elif isinstance(x, types.GeneratorType):
        first = next(x)
        data = prepend(first, x)
        x, y = unpack_batch(first)
    if isinstance(x, (list, tuple)) or not hasattr(x, "ndim") or x.ndim < 1:
        return None, None, data
    x = x[:count] if backend.is_tensor(x) else np.asarray(x[:count])
    return x, None if y is None else np.asarray(y)[:count], data


def is_tf_dataset(x):
    """Whether `x` is a `tf.data.Dataset` (without importing TensorFlow when no one has)."""
    tf = sys.modules.get("tensorflow")
    return tf is not None and isinstance(x, tf.data.Dataset)


def prepend(first, rest):
    """A generator (what Keras accepts) of `first`, then the items of `rest`."""
    yield first
    yield from rest


def unpack_batch(batch):
    """`(inputs, labels)` of a batch that is `(x, y[, sample_weight])` or just `x`."""
    if isinstance(batch, (tuple, list)):
        return batch[0], batch[1] if len(batch) > 1 else None
    return batch, None
