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


def warn_if_not_logits(model, x=None):
    """Warns when `model` appears to output probabilities instead of logits.

    Every loss and attack in keras_lfr applies its own softmax: a model that
    already ends in a softmax trains on flattened gradients and makes
    gradient-based attacks look stronger or weaker than they are.

    Args:
        model: The model to check.
        x: Optional sample inputs; if given, the model's outputs on them are
            checked too. Defaults to `None`.

    Returns:
        `True` if a warning was issued.
    """
    activation = final_activation(model)
    reason = None
    if activation is not None:
        reason = f"its last layer applies `{activation}`"
    elif x is not None and outputs_look_like_probabilities(model(x, training=False)):
        reason = "its outputs on the first batch are non-negative and sum to 1"
    if reason is None:
        return False
    warnings.warn(
        f"Model {model.name!r} looks like it outputs probabilities ({reason}). "
        "keras_lfr expects logits: remove the final softmax/sigmoid (keep it for "
        "serving only, e.g. `keras.Sequential([model, keras.layers.Softmax()])`).",
        stacklevel=3,
    )
    return True
