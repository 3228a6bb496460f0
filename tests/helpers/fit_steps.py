"""Runs compiled `fit` steps of every method on one Keras backend, for comparing backends.

Usage: python tests/helpers/fit_steps.py BACKEND IN.npz OUT.npz

BACKEND is `tensorflow` or `jax` (Keras fixes its backend at import, hence a
separate process; `tests/keras_lfr/test_cross_backend_steps.py` calls
`compute` in its own TensorFlow process and this script for JAX). IN.npz
holds a batch (`x`, `y`, `sample_weight`) and the weights of a small CNN
(`cnn/0`, `cnn/1`, …) and of a BatchNorm CNN (`bn/0`, …). For every method
the script trains a wrapped copy of the CNN for one `fit` step over the whole
batch, inner maximisation and random start included (jitted on JAX, a graph
on TensorFlow), and writes the weights and the logged loss; AWP on LFR with a
one-step warm-up for two steps (the warm-up branch, then AWP); TRADES with
and without AWP on the BatchNorm CNN (every weight and moving statistic);
and the BatchNorm CNN's statistics before and after a bare AWP proxy pass.
"""

import os
import sys

# Every method, with its own random start; AWP on LFR with a warm-up step.
BALL = {"epsilon": 0.1, "step_size": 0.05, "steps": 2}
METHODS = {
    "standard": ("standard", {}),
    "pgd_at": ("pgd_at", {**BALL, "clean_weight": 0.25}),
    "trades": ("trades", {**BALL, "beta": 3.0}),
    "llr": ("llr", {**BALL, "lam": 1.0, "mu": 0.5}),
    "lfr": ("lfr", {**BALL, "lam": 0.5}),
    "adr": ("adr", {**BALL, "base": "pgd_at", "local_weight": 0.5, "global_weight": 0.5}),
    "lsp": ("lsp", {**BALL, "base": "trades", "weight": 1.0}),
    "awp": ("awp", {**BALL, "base": "lfr", "lam": 0.5, "gamma": 0.02, "warmup_steps": 1}),
}
# Optimizer steps per method: AWP's warm-up step, then one with AWP.
STEPS = {"awp": 2}


def cnn(input_shape=(6, 6, 1)):
    import keras

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )


def bn_cnn(input_shape=(6, 6, 1)):
    """BatchNorm on the inputs (its statistics do not depend on any weight), then after a conv."""
    import keras

    return keras.Sequential(
        [
            keras.Input(input_shape),
            keras.layers.BatchNormalization(momentum=0.9, name="bn_inputs"),
            keras.layers.Conv2D(2, 3, activation="relu"),
            keras.layers.BatchNormalization(momentum=0.9, name="bn_features"),
            keras.layers.Flatten(),
            keras.layers.Dense(4),
        ]
    )


def compute(data):
    """All the values, on the backend Keras was imported with: a dict of numpy arrays."""
    import keras
    import numpy as np

    import keras_lfr
    from keras_lfr import backend, ops
    from keras_lfr.methods import awp_perturbation, get_method

    x, y, sample_weight = data["x"], data["y"], data["sample_weight"]
    weights = {
        name: [data[f"{name}/{i}"] for i in range(sum(k.startswith(f"{name}/") for k in data))]
        for name in ("cnn", "bn")
    }
    jit = keras.backend.backend() == "jax"
    results = {}

    def train(key, builder, method, hyperparameters, steps=1, **wrapper):
        model = builder()
        model.set_weights(weights["bn" if builder is bn_cnn else "cnn"])
        robust = keras_lfr.wrap(model, method=method, seed=5, **hyperparameters, **wrapper)
        robust.compile(optimizer=keras.optimizers.SGD(0.5), jit_compile=jit)
        history = robust.fit(
            x,
            y,
            sample_weight=sample_weight,
            batch_size=len(x),
            epochs=steps,
            shuffle=False,
            verbose=0,
        )
        results[f"{key}/loss"] = np.asarray(history.history["loss"])
        for i, w in enumerate(model.get_weights()):
            results[f"{key}/w{i}"] = np.asarray(w)
        return model

    for key, (method, hyperparameters) in METHODS.items():
        train(key, cnn, method, hyperparameters, steps=STEPS.get(key, 1))
    trades = METHODS["trades"][1]
    train("bn_trades", bn_cnn, "trades", trades)
    train("bn_trades_awp", bn_cnn, "trades", trades, awp_gamma=0.02)

    # A bare proxy pass (eager): the statistics must be those it started from.
    model = bn_cnn()
    model.set_weights(weights["bn"])
    before = [np.asarray(v.value) for v in model.non_trainable_variables]
    method = get_method("trades", **trades)
    labels = ops.sparse_labels(y)
    x_adv = method.perturb(model, x, labels, ops.as_seed(0))
    perturbation = awp_perturbation(model, method, x, labels, x_adv, sample_weight, 0.02)
    results["proxy/moved"] = np.asarray(
        [np.max(np.abs(np.asarray(d))) for d in perturbation if d is not None]
    )
    for i, (b, v) in enumerate(zip(before, model.non_trainable_variables, strict=True)):
        results[f"proxy/before{i}"] = b
        results[f"proxy/after{i}"] = np.asarray(v.value)
    results["backend"] = np.asarray(backend.NAME)
    return results


if __name__ == "__main__":
    backend_name, inputs, out = sys.argv[1:4]
    os.environ["KERAS_BACKEND"] = backend_name
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import numpy as np

    np.savez(out, **compute(dict(np.load(inputs))))
