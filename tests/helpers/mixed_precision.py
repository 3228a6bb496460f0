"""Mixed-precision evaluation on one Keras backend: what bfloat16 searches, float32 judges.

Usage: python tests/helpers/mixed_precision.py BACKEND OUT.json

BACKEND is `tensorflow` or `jax` (Keras fixes its backend at import, hence a
separate process; `tests/keras_lfr/test_mixed_precision.py` calls `compute`
in its own TensorFlow process and this script for JAX). Everything runs on
tiny models and a few 4×4 or 8×8 images, so that JAX on a CPU takes seconds.
"""

import functools
import json
import os
import sys

# The label every image of the disagreeing model has, and its logits: in
# float32, class 1 wins by 2e-5 at every input; in bfloat16, where 1.0039
# and 1.0117 round down to 1.0 and 1.0078, class 0 wins by 0.0078.
LABEL = 1
HIDDEN_BIAS = 1.0039
GAIN = 1.0117
OTHER_LOGIT = 1.015625  # = 1 + 2/128: exact in bfloat16


def disagreeing_model():
    """Logits (1.015625, 1.0039 × 1.0117) at any input: class 1 in float32, class 0 in bfloat16.

    The logits do not depend on the input, so no attack can break an image
    in float32, while the bfloat16 copy misclassifies every image.
    """
    import keras
    import numpy as np

    inputs = keras.Input((4, 4, 1))
    flat = keras.layers.Flatten()(inputs)
    hidden = keras.layers.Dense(1, kernel_initializer="zeros")(flat)
    logits = keras.layers.Dense(2)(hidden)
    model = keras.Model(inputs, logits)
    model.layers[-2].set_weights([np.zeros((16, 1), "float32"), np.array([HIDDEN_BIAS], "float32")])
    model.layers[-1].set_weights(
        [np.array([[0.0, GAIN]], "float32"), np.array([OTHER_LOGIT, 0.0], "float32")]
    )
    return model


def threshold_model(sign=1.0):
    """One pixel; predicts class 1 where `sign` · (2x − 1) > 0."""
    import keras

    model = keras.Sequential(
        [keras.Input((1, 1, 1)), keras.layers.Flatten(), keras.layers.Dense(2)]
    )
    set_threshold(model, sign)
    return model


def set_threshold(model, sign):
    import numpy as np

    kernel = np.array([[-sign, sign]], "float32")
    bias = np.array([0.5 * sign, -0.5 * sign], "float32")
    model.layers[-1].set_weights([kernel, bias])


def moves_what_it_classifies_right(model, x, labels):
    """An "attack" that sends an image to 0.25 where the searched model classifies it right."""
    import keras

    right = keras.ops.cast(keras.ops.argmax(model(x, training=False), axis=1), "int32") == labels
    return keras.ops.where(right[:, None, None, None], keras.ops.full_like(x, 0.25), x)


def in_bfloat16(model):
    """What the attacks of a mixed-precision evaluation search on: float32 logits of a copy."""
    import keras

    import keras_lfr

    copy = keras_lfr.models.bfloat16_copy(model)
    return lambda x, training=False: keras.ops.cast(copy(x, training=training), "float32")


def tiny_model():
    import keras

    keras.utils.set_random_seed(0)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu"),
            keras.layers.Dense(10),
        ]
    )


def tiny_batch(batch=16):
    """Random 8×8 images labelled by `tiny_model`'s predictions (all correct clean)."""
    import numpy as np

    x = np.random.default_rng(0).uniform(size=(batch, 8, 8, 1)).astype("float32")
    return x, np.argmax(np.asarray(tiny_model()(x)), axis=1).astype("int32")


def compute():
    """The checks' values on this process's backend, as a JSON-serialisable dict."""
    import keras
    import numpy as np

    import keras_lfr
    from keras_lfr import attacks, backend, evaluation

    results = {"backend": backend.NAME}
    predict = lambda model, x: np.argmax(np.asarray(keras.ops.cast(model(x), "float32")), axis=1)  # noqa: E731

    # 1. The disagreeing model: bfloat16 misclassifies every image, float32 none.
    model = disagreeing_model()
    copy = keras_lfr.models.bfloat16_copy(model)
    x = np.random.default_rng(1).uniform(size=(6, 4, 4, 1)).astype("float32")
    y = np.full(6, LABEL, "int32")
    results["float32_predictions"] = predict(model, x).tolist()
    results["bfloat16_predictions"] = predict(copy, x).tolist()
    results["copy_dtype"] = str(keras.backend.standardize_dtype(copy(x).dtype))
    results["copy_policies"] = sorted({layer.dtype_policy.name for layer in copy.layers})
    results["same_weights"] = all(
        np.array_equal(np.asarray(a), np.asarray(b))
        for a, b in zip(copy.get_weights(), model.get_weights(), strict=True)
    )
    chosen = {
        "apgd_ce": functools.partial(attacks.apgd, epsilon=0.3, steps=3),
        "square": functools.partial(attacks.square, epsilon=0.3, queries=10),
    }
    disagreeing = [(x, y)]
    for precision in evaluation.PRECISIONS:
        for cascade in (False, True):
            found = evaluation.robust_accuracy(
                model,
                disagreeing,
                chosen,
                cascade=cascade,
                verbose=0,
                per_example=True,
                precision=precision,
            )
            key = f"disagreeing/{precision}/{'cascade' if cascade else 'every'}"
            results[key] = found["per_example"]

    # 2. An easy case: the verdicts of a bfloat16 search are float32's judgement of
    # its points, and here the same as a float32 search's.
    model = tiny_model()
    x, y = tiny_batch()
    pgd = functools.partial(attacks.pgd, epsilon=0.02, step_size=0.01, steps=3, random_start=False)
    x_adv = pgd(in_bfloat16(model), x, y)
    results["easy/judged_by_hand"] = (predict(model, x_adv) == y).tolist()
    for precision in evaluation.PRECISIONS:
        correct = evaluation.correct_under(model, pgd, precision=precision)
        results[f"easy/{precision}"] = np.asarray(correct(x, y)).tolist()

    # 3. The copy follows the original's weights from call to call.
    model = threshold_model()
    correct = evaluation.correct_under(model, moves_what_it_classifies_right, precision="mixed")
    x, y = np.full((1, 1, 1, 1), 0.75, "float32"), np.array([1], "int32")
    results["threshold/before"] = np.asarray(correct(x, y)).tolist()
    set_threshold(model, -1.0)  # "trained": now class 0 at 0.75, class 1 at 0.25
    results["threshold/after"] = np.asarray(correct(x, y)).tolist()

    # 4. The callback during training, in both precisions.
    x, y = tiny_batch(batch=8)
    for precision in evaluation.PRECISIONS:
        robust = keras_lfr.wrap(tiny_model(), method="standard")
        robust.compile(optimizer=keras.optimizers.SGD(1e-4))
        callback = keras_lfr.callbacks.AttackEvaluation(
            x, y, {"pgd": pgd}, batch_size=4, precision=precision
        )
        history = robust.fit(x, y, epochs=1, batch_size=8, verbose=0, callbacks=[callback])
        results[f"callback/{precision}"] = history.history["val_adv_pgd_accuracy"]
        classifier = robust.unwrap()
        searched = classifier if precision == "float32" else in_bfloat16(classifier)
        found = pgd(searched, x, y)
        results[f"callback/{precision}/by_hand"] = float(np.mean(predict(classifier, found) == y))
    return results


if __name__ == "__main__":
    backend_name, out = sys.argv[1:3]
    os.environ["KERAS_BACKEND"] = backend_name
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with open(out, "w") as f:
        json.dump(compute(), f)
