"""Checks that catch models which would make training or attacks meaningless."""

import warnings

import keras
import numpy as np

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
    if clip_min is not None and clip_max is not None and x.size:
        low, high = float(x.min()), float(x.max())
        if low < clip_min - 1e-6 or high > clip_max + 1e-6:
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
