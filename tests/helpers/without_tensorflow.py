"""Trains and evaluates with keras_lfr on JAX in a process where TensorFlow cannot be imported.

Usage: KERAS_BACKEND=jax python tests/helpers/without_tensorflow.py

`sys.modules["tensorflow"] = None` makes every `import tensorflow` fail and
`importlib.util.find_spec("tensorflow")` return None, as on a machine without
it (the GPU machine). Prints one JSON line of what it measured.
"""

import json
import sys

for name in ("tensorflow", "tensorflow_datasets"):
    sys.modules[name] = None

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_lfr  # noqa: E402

assert keras.backend.backend() == "jax"
rng = np.random.default_rng(0)
x = rng.uniform(size=(64, 28, 28, 1)).astype("float32")
y = rng.integers(0, 10, 64).astype("int32")
model = keras_lfr.wrap(keras_lfr.models.small_cnn(), method="lfr", steps=2, step_size=0.1)
model.compile(optimizer="adam", metrics=["accuracy"])
history = model.fit(x, y, batch_size=32, epochs=1, verbose=0)
evaluated = keras_lfr.evaluation.robust_accuracy(
    model.unwrap(),
    [(x[:32], y[:32])],
    {
        "pgd": lambda m, xs, ys: keras_lfr.attacks.pgd(
            m, xs, ys, epsilon=0.3, step_size=0.1, steps=2
        )
    },
    verbose=0,
)
errors = {}
for name in ("data", "export", "zoo"):
    try:
        getattr(keras_lfr, name)
    except ImportError as error:
        errors[name] = str(error)
print(
    json.dumps(
        {
            "tensorflow_loaded": any(
                m.startswith("tensorflow") and sys.modules[m] for m in sys.modules
            ),
            "loss": history.history["loss"][0],
            "evaluated": {k: v for k, v in evaluated.items() if isinstance(v, float)},
            "errors": errors,
        }
    )
)
