"""Decision and loss surfaces around an input, as in Figures 1 and 2 of the LFR paper."""

import keras
import numpy as np

from keras_lfr import _validation, defaults, ops


def sign_directions(x, seed=0):
    """Two random sign directions d₁, d₂ ∈ {−1, +1}^shape(x) (a stateless draw)."""
    x = keras.ops.convert_to_tensor(x)
    u = ops.uniform((2, *keras.ops.shape(x)), ops.as_seed(seed))
    return keras.ops.where(u < 0.5, -1.0, 1.0)


def surface(
    model,
    x,
    y,
    *,
    radius=defaults.PAPER_EPSILON,
    resolution=41,
    kind="decision",
    seed=0,
    clip_min=0.0,
    clip_max=1.0,
):
    """Evaluates a model on the plane x + a·d₁ + b·d₂, |a|, |b| ≤ `radius`.

    d₁, d₂ are random sign directions, so the plane's corners are corners of
    the l-inf ball of radius `radius`. Points are clipped to the pixel range.

    Args:
        model: A callable returning logits.
        x: One input (no batch axis).
        y: Its integer label.
        radius: Half-width of the plane in each direction. Defaults to `0.3`.
        resolution: Grid points per axis. Defaults to `41`.
        kind: `"decision"` for p_y − max_{i≠y} p_i (negative where the point
            is misclassified) or `"loss"` for the cross-entropy. Defaults to
            `"decision"`.
        seed: Seed of the directions. Defaults to `0`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.

    Returns:
        A tuple `(a, b, values)`: the two axes (length `resolution`) and a
        `(resolution, resolution)` array, `values[i, j]` at `(a[i], b[j])`.

    Raises:
        ValueError: If an argument is invalid.
    """
    _validation.one_of("kind", kind, ("decision", "loss"))
    radius = _validation.positive_float("radius", radius)
    resolution = _validation.positive_int("resolution", resolution)
    x = keras.ops.convert_to_tensor(x, "float32")
    d1, d2 = keras.ops.unstack(sign_directions(x, seed))
    axis = np.linspace(-radius, radius, resolution, dtype="float32")
    a, b = np.meshgrid(axis, axis, indexing="ij")
    batch = x[None]
    a = ops.expand_like(keras.ops.convert_to_tensor(a.ravel()), batch)
    b = ops.expand_like(keras.ops.convert_to_tensor(b.ravel()), batch)
    points = batch + a * d1 + b * d2
    points = keras.ops.clip(points, clip_min, clip_max)
    labels = keras.ops.full((points.shape[0],), y, dtype="int32")
    values = []
    for start in range(0, points.shape[0], 512):
        logits = model(points[start : start + 512], training=False)
        chunk_labels = labels[start : start + 512]
        if kind == "loss":
            values.append(keras.ops.convert_to_numpy(ops.cross_entropy(chunk_labels, logits)))
        else:
            p = keras.ops.softmax(keras.ops.cast(logits, "float32"))
            values.append(keras.ops.convert_to_numpy(ops.margin(p, chunk_labels)))
    return axis, axis, np.concatenate(values).reshape(resolution, resolution)
