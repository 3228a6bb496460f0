"""Three LFR train steps on JAX over 1 and over 2 (virtual CPU) devices.

Usage: python tests/helpers/jax_data_parallel.py OUT.npz

Keras' JAX backend runs one program over the global batch, sharded by
`keras.distribution.DataParallel`; the host's CPU is split into two devices
(XLA_FLAGS), which must be set before JAX starts, hence a separate process.
Writes the weights after the steps and the logged loss and flatness for each
device count.
"""

import os
import sys

os.environ["KERAS_BACKEND"] = "jax"
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"

import jax  # noqa: E402
import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_lfr  # noqa: E402

rng = np.random.default_rng(0)
x = rng.uniform(size=(48, 28, 28, 1)).astype("float32")
y = rng.integers(0, 10, 48).astype("int32")
results = {}
for count in (1, 2):
    keras.distribution.set_distribution(
        keras.distribution.DataParallel(devices=jax.devices("cpu")[:count])
    )
    keras.utils.set_random_seed(1)
    model = keras_lfr.wrap(keras_lfr.models.small_cnn(dropout=0.0), method="lfr", steps=2)
    model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=True)
    history = model.fit(x, y, batch_size=16, epochs=1, shuffle=False, verbose=0)
    results[f"{count}/loss"] = np.asarray(history.history["loss"][0])
    results[f"{count}/flatness"] = np.asarray(history.history["local_flatness"][0])
    for i, w in enumerate(model.unwrap().get_weights()):
        results[f"{count}/w{i}"] = w
    # The devices the weights live on: replicated over all of them.
    sharding = model.trainable_variables[0].value.sharding
    results[f"{count}/devices"] = np.asarray(len(sharding.device_set))
keras.distribution.set_distribution(None)
np.savez(sys.argv[1], **results)
