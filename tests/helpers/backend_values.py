"""Computes keras_lfr's values on one Keras backend, for comparing backends.

Usage: python tests/helpers/backend_values.py BACKEND IN.npz OUT.npz KERAS_IN KERAS_OUT

BACKEND is `tensorflow` or `jax` (Keras fixes its backend at import, hence a
separate process). IN.npz holds a SmallCNN's weights (`w0`, `w1`, …), a
batch (`x`, `y`, `sample_weight`) and fixed perturbed inputs (`x_adv`). For
every method, the helper writes the loss, the logged terms and the weight
gradients at `x_adv`, and the inner maximisation's result where it has no
random start; the adversarial accuracy and inputs of the deterministic
attacks; the local flatness; a cascade evaluation; the weights and `History`
after two `fit` steps with a cosine ε ramp and `AttackEvaluation` (jitted on
JAX, a graph on TensorFlow: each backend's default on CPU) and the trained
wrapper's logits. It saves that wrapper to KERAS_OUT and, if KERAS_IN
exists, writes the logits of the model loaded from it.
"""

import functools
import os
import sys

backend_name, inputs, out, keras_in, keras_out = sys.argv[1:6]
os.environ["KERAS_BACKEND"] = backend_name
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import keras_lfr  # noqa: E402
from keras_lfr import backend, ops  # noqa: E402

BALL = {"epsilon": 0.3, "step_size": 0.1, "steps": 3}
# Every method, without random starts where the method has them, so that both
# backends start from the same point.
METHODS = {
    "standard": ("standard", {}),
    "lfr": ("lfr", {**BALL, "random_start": "none"}),
    "pgd_at": ("pgd_at", {**BALL, "clean_weight": 0.25}),
    "trades": ("trades", {**BALL, "beta": 6.0, "random_start": "none"}),
    "llr": ("llr", BALL),
    "adr": ("adr", {"base": "trades", **BALL, "random_start": "none"}),
    "lsp": ("lsp", {"base": "trades", **BALL, "random_start": "none"}),
    "awp": ("awp", {"base": "lfr", "gamma": 0.01, **BALL, "random_start": "none"}),
}
# The inner maximisations from each method's own random start (the same
# draws on both backends).
RANDOM_STARTS = ("lfr", "pgd_at", "trades", "llr")

data = np.load(inputs)
weights = [data[f"w{i}"] for i in range(len([k for k in data.files if k.startswith("w")]))]
x, y, sample_weight, x_adv = data["x"], data["y"], data["sample_weight"], data["x_adv"]


def classifier():
    model = keras_lfr.models.small_cnn(dropout=0.0)
    model.set_weights(weights)
    return model


results = {}
model = classifier()
labels = ops.sparse_labels(y)
seed = ops.as_seed(0)
for key, (name, hyperparameters) in METHODS.items():
    method = keras_lfr.methods.get_method(name, **hyperparameters)

    def loss(method=method):
        _, total, terms = method.loss(model, x, labels, x_adv, sample_weight)
        return total, terms

    gradients, terms = backend.value_and_weight_gradients(loss, model.trainable_variables)
    for term, value in terms.items():
        results[f"{key}/term/{term}"] = np.asarray(value)
    results[f"{key}/loss"] = np.asarray(loss()[0])
    for i, gradient in enumerate(gradients):
        results[f"{key}/grad{i}"] = np.asarray(gradient)
for name in RANDOM_STARTS:
    method = keras_lfr.methods.get_method(name, **BALL)
    results[f"{name}/perturb"] = np.asarray(method.perturb(model, x, labels, ops.as_seed(7)))

attacks = keras_lfr.attacks
adversarial = {
    "pgd": attacks.pgd(model, x, y, epsilon=0.3, step_size=0.05, steps=5, random_start=False),
    "pgd_l2": attacks.pgd(
        model, x, y, epsilon=2.0, step_size=0.5, steps=5, norm="l2", random_start=False
    ),
    "fgsm": attacks.fgsm(model, x, y, epsilon=0.3),
    "mi_fgsm": attacks.mi_fgsm(model, x, y, epsilon=0.3, step_size=0.05, steps=5),
    "pgd_random": attacks.pgd(model, x, y, epsilon=0.3, step_size=0.05, steps=5, seed=3),
    "apgd_ce": attacks.apgd(model, x, y, epsilon=0.3, steps=5, seed=3),
    "apgd_t": attacks.apgd(model, x, y, epsilon=0.3, steps=5, loss="dlr", num_targets=2),
    "fab_t": attacks.fab(model, x, y, epsilon=0.3, steps=5, num_targets=2),
    "square": attacks.square(model, x, y, epsilon=0.3, queries=20, seed=3),
    "ddn": attacks.ddn(model, x, y, steps=5),
}
for name, x_attack in adversarial.items():
    predictions = np.argmax(np.asarray(model(x_attack, training=False)), axis=1)
    results[f"attack/{name}/accuracy"] = np.mean(predictions == y)
    results[f"attack/{name}/x"] = np.asarray(x_attack)
results["local_flatness"] = np.asarray(keras_lfr.local_flatness(model, x, y, 0.3, 0.1, 3))
evaluated = keras_lfr.evaluation.robust_accuracy(
    model,
    [(x[:4], y[:4]), (x[4:], y[4:])],
    {
        "apgd_ce": functools.partial(attacks.apgd, epsilon=0.3, steps=10),
        "fab_t": functools.partial(attacks.fab, epsilon=0.3, steps=10, num_targets=2),
        "square": functools.partial(attacks.square, epsilon=0.3, queries=20),
    },
    cascade=True,
    verbose=0,
)
for name, value in evaluated.items():
    if not isinstance(value, dict):
        results[f"evaluation/{name}"] = np.asarray(value)

# Two optimizer steps of the whole train step: LFR's double backprop at
# x' = x (a zero step, so that no sign of a near-zero gradient can differ),
# with a cosine ε ramp (its scale is logged) and the callback that attacks
# after every epoch; then the .keras files.
wrapper = keras_lfr.wrap(
    classifier(),
    method="lfr",
    epsilon_warmup=4,
    epsilon_warmup_shape="cosine",
    **{**METHODS["lfr"][1], "step_size": 0.0},
)
wrapper.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=backend_name == "jax")
history = wrapper.fit(
    x,
    y,
    sample_weight=sample_weight,
    batch_size=len(x),
    epochs=2,
    shuffle=False,
    verbose=0,
    callbacks=[keras_lfr.callbacks.AttackEvaluation(x, y)],
)
for name, values in history.history.items():
    results[f"history/{name}"] = np.asarray(values)
results["fit/loss"] = np.asarray(history.history["loss"][-1])
for i, w in enumerate(wrapper.unwrap().get_weights()):
    results[f"fit/w{i}"] = w
results["evaluate/loss"] = np.asarray(wrapper.evaluate(x, y, verbose=0))
if os.path.exists(keras_in):
    loaded = keras.saving.load_model(keras_in)
    results["loaded/logits"] = np.asarray(loaded.predict(x, verbose=0))
wrapper.save(keras_out)
results["fit/logits"] = np.asarray(wrapper.predict(x, verbose=0))
np.savez(out, **results)
