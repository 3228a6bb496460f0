"""keras_lfr: adversarially robust training for Keras as a one-line change.

>>> model = keras_lfr.wrap(cnn, method="lfr", epsilon=0.3, steps=40, lam=0.02)
>>> model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), metrics=["accuracy"])
>>> model.fit(train_ds, epochs=100)
"""

import importlib.util

from keras_lfr import _quiet

# keras_lfr's programs import TensorFlow first, with its C++ start-up log at
# the level TF_CPP_MIN_LOG_LEVEL asks for, quiet by default (`keras_lfr._quiet`).
# Imported as a library, keras_lfr leaves TensorFlow's log alone.
if _quiet.running_a_program():
    _quiet.import_tensorflow(_quiet.PROGRAM_LEVEL)

from keras_lfr import (  # noqa: E402
    attacks,
    backend,
    callbacks,
    checks,
    defaults,
    evaluation,
    methods,
    models,
    ops,
    surfaces,
)
from keras_lfr.methods import available_methods, local_flatness  # noqa: E402
from keras_lfr.robust_model import LFRModel, RobustModel, wrap  # noqa: E402

# Modules built on TensorFlow (tf.data and tfds, tf.distribute, SavedModel;
# the zoo loads its test sets with tfds): present where TensorFlow is
# installed, so that the rest runs on the JAX backend on machines without it.
_TENSORFLOW_MODULES = ("data", "distributed", "export", "zoo")
if importlib.util.find_spec("tensorflow") is not None:
    from keras_lfr import data, distributed, zoo
    from keras_lfr.export import export


def __getattr__(name):
    if name in _TENSORFLOW_MODULES:
        raise ImportError(
            f"keras_lfr.{name} needs TensorFlow, which is not installed. Training, "
            "the attacks and the evaluation run without it (KERAS_BACKEND=jax); "
            "`pip install tensorflow` for the rest."
        )
    raise AttributeError(f"module 'keras_lfr' has no attribute {name!r}")


__version__ = "0.3.0"

__all__ = [
    "LFRModel",
    "RobustModel",
    "attacks",
    "available_methods",
    "backend",
    "callbacks",
    "checks",
    "data",
    "defaults",
    "distributed",
    "evaluation",
    "export",
    "local_flatness",
    "methods",
    "models",
    "ops",
    "surfaces",
    "wrap",
    "zoo",
]
