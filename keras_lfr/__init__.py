"""keras_lfr: adversarially robust training for Keras as a one-line change.

>>> model = keras_lfr.wrap(cnn, method="lfr", epsilon=0.3, steps=40, lam=0.02)
>>> model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), metrics=["accuracy"])
>>> model.fit(train_ds, epochs=100)
"""

from keras_lfr import (
    attacks,
    callbacks,
    checks,
    data,
    defaults,
    distributed,
    evaluation,
    methods,
    models,
    ops,
    surfaces,
    zoo,
)
from keras_lfr.export import export
from keras_lfr.methods import available_methods, local_flatness
from keras_lfr.robust_model import LFRModel, RobustModel, wrap

__version__ = "0.2.0"

__all__ = [
    "LFRModel",
    "RobustModel",
    "attacks",
    "available_methods",
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
