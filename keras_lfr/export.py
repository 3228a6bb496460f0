"""Export for serving: a TF SavedModel that maps float32 images to logits."""

import keras

from keras_lfr import _optional
from keras_lfr.checks import input_shape_of

SIGNATURE_KEY = "serving_default"
# How to export a model trained on another backend.
FROM_KERAS_FILE = (
    "load its .keras file with KERAS_BACKEND=tensorflow (the files load on every "
    "backend) and call keras_lfr.export there."
)
INPUT_NAME = "images"
OUTPUT_NAME = "logits"


def _tensorflow():
    """The `tensorflow` module, or an `ImportError` naming the extra that installs it."""
    return _optional.tensorflow_module("tensorflow", "SavedModel export (keras_lfr.export)")


def check_shape(images, shape):
    """An assertion op: `images` has shape `(batch, *shape)`, else a message naming it.

    The rank is compared first, so a wrong rank fails with the same message
    instead of an "Incompatible shapes" error from comparing the sizes.
    """
    tf = _tensorflow()
    actual = tf.shape(images)
    matches = tf.cond(
        tf.equal(tf.size(actual), len(shape) + 1),
        lambda: tf.reduce_all(tf.equal(actual[1:], tf.constant(shape, tf.int32))),
        lambda: tf.constant(False),
    )
    expected = ", ".join(str(d) for d in shape)
    return tf.debugging.assert_equal(
        matches,
        True,
        message=f"{SIGNATURE_KEY} expects float32 `images` of shape (batch, {expected})",
    )


def export(model, path, input_shape=None):
    """Writes a TF SavedModel whose `serving_default` signature returns logits.

    A wrapper such as `LFRModel` is unwrapped first: serving needs only the
    classifier. The signature takes float32 `images` of shape
    `(batch, *input_shape)` and returns `{"logits": (batch, classes)}`; other
    dtypes are rejected by the signature and other shapes or ranks by an
    explicit check whose message names the expected shape (the signature
    itself declares `images` of any shape, so that the check sees them).
    Needs TensorFlow (`pip install "keras_lfr[tensorflow]"`).

    Args:
        model: A `RobustModel` or any Keras model that returns logits.
        path: Directory to write.
        input_shape: Shape of one input without the batch axis. Defaults to
            `None`: taken from the model's `Input` (functional models) or
            from the shape it was built with.

    Returns:
        `path`.

    Raises:
        ValueError: If the input shape is unknown, or the backend is not
            TensorFlow.
        ImportError: If TensorFlow is not installed.

    Example:

    >>> keras_lfr.export(model, "/tmp/lfr_savedmodel")
    >>> served = tf.saved_model.load("/tmp/lfr_savedmodel")
    >>> served.signatures["serving_default"](images=x)["logits"]
    """
    tf = _tensorflow()
    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            "keras_lfr.export writes a TensorFlow SavedModel from the TensorFlow backend. "
            f"Received: a model on the {keras.backend.backend()!r} backend. To export it, "
            + FROM_KERAS_FILE
        )
    if hasattr(model, "unwrap"):
        model = model.unwrap()
    shape = input_shape or input_shape_of(model)
    if shape is None:
        raise ValueError(
            f"Could not infer the input shape of model {model.name!r}. Received: "
            "input_shape=None. Expected a tuple such as (28, 28, 1); subclassed "
            "models must be called once or given `input_shape`."
        )

    def serve(images):
        # The signature fixes the dtype (float32); the shape and rank are checked
        # here so that they fail with this message, not deep inside a layer.
        check = check_shape(images, shape)
        with tf.control_dependencies([check]):  # check before any layer runs
            images = tf.ensure_shape(images, (None, *shape))
        return {OUTPUT_NAME: model(images, training=False)}

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        name=SIGNATURE_KEY,
        fn=serve,
        # Any shape is accepted and checked in the graph: with the shape in the
        # spec, TensorFlow trusts it, and a wrong rank fails inside the check.
        input_signature=[tf.TensorSpec(None, tf.float32, name=INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)
    return path
