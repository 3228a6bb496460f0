"""TensorFlow for the few parts of keras_lfr built on it, with one error where it is missing.

Training, the attacks, the evaluation and the zoo run on Keras' JAX backend
without TensorFlow. Loading data with tensorflow-datasets, `tf.distribute`
and SavedModel export need it: they import it through `tensorflow_module`,
whose error says what needs it and which extra installs it.
"""

import importlib
import importlib.util

# What installs TensorFlow and tensorflow-datasets for keras_lfr.
INSTALL = 'pip install "keras_lfr[tensorflow]"'


def tensorflow_installed():
    """Whether TensorFlow can be imported (without importing it)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except ValueError:  # `sys.modules["tensorflow"] = None`: blocked, as if not installed
        return False


def tensorflow_module(name, needed_for):
    """Imports a module of TensorFlow's extra, e.g. `"tensorflow_datasets"`.

    Args:
        name: The module's name: `"tensorflow"`, a module of it, or
            `"tensorflow_datasets"`.
        needed_for: What needs it, for the error, e.g. `"SavedModel export"`.

    Returns:
        The module.

    Raises:
        ImportError: If the module is not installed; the message names what
            needs it and the extra that installs it.
    """
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        raise ImportError(
            f"{needed_for} needs {name.split('.')[0]}, which is not installed. Install "
            f"keras_lfr's TensorFlow extra: {INSTALL}. Training, the attacks, the evaluation "
            "and the zoo run without it on Keras' JAX backend (KERAS_BACKEND=jax), with data "
            "from numpy arrays or an .npz (`keras_lfr.data.load(..., data_npz=...)`)."
        ) from error
