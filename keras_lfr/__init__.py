"""keras_lfr: adversarially robust training for Keras as a one-line change.

>>> model = keras_lfr.wrap(cnn, method="lfr", epsilon=0.3, steps=40, lam=0.02)
>>> model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), metrics=["accuracy"])
>>> model.fit(train_ds, epochs=100)
"""

import importlib

from keras_lfr import _quiet
from keras_lfr._version import __version__ as __version__

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
    data,
    defaults,
    evaluation,
    methods,
    models,
    ops,
    surfaces,
    zoo,
)
from keras_lfr.export import export  # noqa: E402
from keras_lfr.methods import available_methods, local_flatness, logit_scale_pressure  # noqa: E402
from keras_lfr.robust_model import LFRModel, RobustModel, wrap  # noqa: E402
from keras_lfr.threat import ThreatModel  # noqa: E402


def __getattr__(name):
    # `distributed` is built on tf.distribute: imported on first use, so that
    # the rest runs where TensorFlow is not installed (tfds loading and
    # SavedModel export import it when called; `keras_lfr._optional`).
    if name == "distributed":
        return importlib.import_module("keras_lfr.distributed")
    raise AttributeError(f"module 'keras_lfr' has no attribute {name!r}")


__all__ = [
    "LFRModel",
    "RobustModel",
    "ThreatModel",
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
    "logit_scale_pressure",
    "methods",
    "models",
    "ops",
    "surfaces",
    "wrap",
    "zoo",
]
