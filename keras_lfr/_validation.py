"""Argument checks shared by methods, attacks and models.

Every error names the argument, the value received and what was expected, so
that a user never has to read a TensorFlow traceback to find a typo.
"""

import numbers

import keras
import numpy as np

from keras_lfr import backend


def _fail(name, value, expected):
    raise ValueError(
        f"Invalid value for argument `{name}`. Received: {name}={value!r}. Expected {expected}."
    )


def non_negative_float(name, value):
    """Returns `value` as a float, or raises if it is not a finite float >= 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not value >= 0
        or value == float("inf")
    ):
        _fail(name, value, "a non-negative float")
    return float(value)


def positive_float(name, value):
    """Returns `value` as a float, or raises if it is not a finite float > 0."""
    if (
        isinstance(value, bool)
        or not isinstance(value, numbers.Real)
        or not value > 0
        or value == float("inf")
    ):
        _fail(name, value, "a positive float")
    return float(value)


def positive_int(name, value):
    """Returns `value` as an int, or raises if it is not an integer >= 1."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        _fail(name, value, "an integer >= 1")
    return int(value)


def integer(name, value):
    """Returns `value` as an int, or raises if it is not an integer."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        _fail(name, value, "an integer")
    return int(value)


def non_negative_int(name, value):
    """Returns `value` as an int, or raises if it is not an integer >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        _fail(name, value, "a non-negative integer")
    return int(value)


def one_of(name, value, choices):
    """Returns `value`, or raises if it is not one of `choices`."""
    if value not in choices:
        _fail(name, value, "one of " + ", ".join(repr(c) for c in choices))
    return value


def clip_range(clip_min, clip_max):
    """Validates a pixel range and returns it as two floats."""
    for name, value in (("clip_min", clip_min), ("clip_max", clip_max)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            _fail(name, value, "a float")
    if not clip_min < clip_max:
        _fail("clip_max", clip_max, f"a float greater than clip_min={clip_min!r}")
    return float(clip_min), float(clip_max)


def epsilon_in_range(epsilon, clip_min, clip_max):
    """Validates `epsilon` against the pixel range it perturbs."""
    epsilon = non_negative_float("epsilon", epsilon)
    if epsilon > clip_max - clip_min:
        _fail(
            "epsilon",
            epsilon,
            f"a float no larger than the pixel range clip_max - clip_min = {clip_max - clip_min!r}",
        )
    return epsilon


def images(x, clip_min, clip_max):
    """Converts attack inputs to a tensor and checks them.

    The dtype is always checked; the pixel range only for concrete (eager)
    values, since symbolic ones have none yet.

    Raises:
        ValueError: For non-float images or pixels outside [clip_min, clip_max].
    """
    x = keras.ops.convert_to_tensor(x)
    if not keras.backend.is_float_dtype(x.dtype):
        _fail(
            "x",
            f"<{keras.backend.standardize_dtype(x.dtype)} tensor of shape {tuple(x.shape)}>",
            "floating-point images, e.g. `tf.cast(images, tf.float32) / 255`",
        )
    if len(x.shape) < 2:
        _fail("x", f"<tensor of shape {tuple(x.shape)}>", "a batch: (batch, ...) with rank >= 2")
    if backend.is_concrete(x):
        outside = pixels_outside(x, clip_min, clip_max)
        if outside:
            _fail(
                "x",
                f"<images with pixels in [{outside[0]:g}, {outside[1]:g}]>",
                f"pixels in [clip_min, clip_max] = [{clip_min:g}, {clip_max:g}]",
            )
    return x


def pixels_outside(x, clip_min, clip_max):
    """`(lowest, highest)` pixel of concrete images not all in [clip_min, clip_max], else `None`.

    The one pixel-range test: attacks reject such inputs (`images`), `fit`
    warns about them (`checks.validate_batch`), since training only clips
    the perturbed inputs.
    """
    if not np.size(x):
        return None
    low, high = float(np.min(x)), float(np.max(x))
    if low < clip_min - 1e-6 or high > clip_max + 1e-6:
        return low, high
    return None


def attack_inputs(x, epsilon, clip_min, clip_max, norm="linf"):
    """Checks the arguments every attack in a norm ball takes.

    Args:
        x: The clean inputs.
        epsilon: Radius of the ball: at most the pixel range for `"linf"`,
            any non-negative float for `"l2"`.
        clip_min: Smallest valid pixel value.
        clip_max: Largest valid pixel value.
        norm: `"linf"` or `"l2"`. Defaults to `"linf"`.

    Returns:
        A tuple `(x, epsilon, clip_min, clip_max)`: `x` a tensor with its
        gradient stopped, the others Python floats.

    Raises:
        ValueError: If an argument is out of range.
    """
    clip_min, clip_max = clip_range(clip_min, clip_max)
    if norm == "linf":
        epsilon = epsilon_in_range(epsilon, clip_min, clip_max)
    else:
        epsilon = non_negative_float("epsilon", epsilon)
    x = keras.ops.stop_gradient(images(x, clip_min, clip_max))
    return x, epsilon, clip_min, clip_max
