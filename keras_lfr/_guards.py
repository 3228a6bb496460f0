"""The callbacks `RobustModel.fit` adds by itself: guards against divergence, collapse and drift.

They sit below the model class, which adds them, and need nothing of the
evaluation; `keras_lfr.callbacks` offers them with the others.
"""

import itertools
import math
import warnings

import keras
import numpy as np

from keras_lfr import _validation


class CollapseWarning(keras.callbacks.Callback):
    """Warns once when training has driven the model to a constant prediction.

    A run has collapsed when, at the end of `patience` epochs in a row, the
    clean cross-entropy is within `tolerance` of ln C (the loss of the uniform
    prediction over C classes) and the model predicts one class for every
    example of a reference batch. The warning names the method and the
    hyperparameters to lower. `RobustModel.fit` adds it with the first batch
    of the data.

    Args:
        x: A reference batch of inputs (a few dozen examples).
        method: The `keras_lfr.methods.Method` being trained.
        tolerance: Distance to ln C that counts as "at" ln C. Defaults to
            `0.05`.
        patience: Consecutive collapsed epochs before warning. Defaults to
            `2`.
    """

    def __init__(self, x, method, tolerance=0.05, patience=2):
        super().__init__()
        self.x = x
        self.method = method
        self.tolerance = tolerance
        self.patience = _validation.positive_int("patience", patience)
        self.collapsed_epochs = 0
        self.warned = False

    def on_epoch_end(self, epoch, logs=None):
        ce = (logs or {}).get("clean_ce", (logs or {}).get("loss"))
        if self.warned or ce is None:
            return
        logits = np.asarray(self.model(self.x, training=False))
        chance = math.log(logits.shape[-1])
        predicted = np.unique(np.argmax(logits, axis=-1))
        if abs(float(ce) - chance) > self.tolerance or len(predicted) > 1:
            self.collapsed_epochs = 0
            return
        self.collapsed_epochs += 1
        if self.collapsed_epochs < self.patience:
            return
        self.warned = True
        lower = [f"{k} (now {v!r})" for k, v in self.method.penalty_values().items()]
        advice = f"lower {', '.join(lower)}" if lower else "check the data and learning rate"
        warnings.warn(
            f"Training with method={self.method.name!r} looks collapsed to a constant "
            f"prediction at epoch {epoch + 1}: the clean cross-entropy is {float(ce):.4f}, "
            f"about ln {logits.shape[-1]} = {chance:.4f}, and every example of the "
            f"reference batch is predicted as class {int(predicted[0])}. To train, "
            f"{advice}, or ramp epsilon up with `epsilon_warmup`.",
            stacklevel=2,
        )


# The names `compile(metrics=[...])` gives clean accuracy in the logs.
ACCURACY_METRICS = ("accuracy", "sparse_categorical_accuracy", "categorical_accuracy")


class DriftWarning(keras.callbacks.Callback):
    """Warns once when a penalty keeps rising at full ε while clean accuracy stalls.

    Once ε is at its target, a healthy LFR run lowers its penalty
    ‖∇ₓ CE(x')‖₁ epoch after epoch. A run whose penalty keeps rising while
    clean accuracy stops improving is trading flatness for nothing, and ends
    far less robust than its seeds that did not. The warning
    fires when, over `patience` consecutive epochs at full ε (the logged
    `epsilon_scale` is 1, or absent), the method's `drift_term` rose every
    epoch by more than `min_rise` (relative) and the best clean accuracy rose
    by less than `min_delta`. It names the term, its values and what to
    change. `RobustModel.fit` adds it for methods that set `drift_term`.

    Args:
        method: The `keras_lfr.methods.Method` being trained.
        patience: Consecutive rising epochs before warning. Defaults to `3`.
        min_rise: Smallest relative rise per epoch that counts. Defaults to
            `0.01`.
        min_delta: Smallest gain in clean accuracy over those epochs that
            counts as progress. Defaults to `0.002`.
    """

    def __init__(self, method, patience=3, min_rise=0.01, min_delta=0.002):
        super().__init__()
        self.method = method
        self.patience = _validation.positive_int("patience", patience)
        self.min_rise = _validation.non_negative_float("min_rise", min_rise)
        self.min_delta = _validation.non_negative_float("min_delta", min_delta)
        self.values = []  # (epoch, term, accuracy) at full epsilon, oldest first
        self.warned = False

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        term = self.method.drift_term
        metric = next((name for name in ACCURACY_METRICS if name in logs), None)
        if self.warned or term is None or term not in logs or metric is None:
            return
        if float(logs.get("epsilon_scale", 1.0)) < 1.0:
            self.values = []
            return
        self.values = [*self.values, (epoch, float(logs[term]), float(logs[metric]))]
        window = self.values[-(self.patience + 1) :]
        if len(window) <= self.patience:
            return
        terms = [value for _, value, _ in window]
        rising = all(b > a * (1.0 + self.min_rise) for a, b in itertools.pairwise(terms))
        accuracy = [value for _, _, value in window]
        stalled = max(accuracy[1:]) - accuracy[0] < self.min_delta
        if not (rising and stalled):
            return
        self.warned = True
        shown = ", ".join(f"{value:.3g}" for value in terms)
        warnings.warn(
            f"Training with method={self.method.name!r} looks to be drifting at epoch "
            f"{epoch + 1}: `{term}` ({self.method.describe(term)}) rose for "
            f"{self.patience} epochs at full epsilon ({shown}) while clean training "
            f"accuracy stalled near {accuracy[-1]:.4f}. The model is getting less flat "
            "around its inputs without getting more accurate, and such runs end far less "
            f"robust. To keep the penalty falling, {self.method.drift_advice}.",
            stacklevel=2,
        )


class NaNGuard(keras.callbacks.Callback):
    """Stops training with a clear error as soon as a logged term is NaN or infinite.

    The error names the epoch, the batch, the optimizer step and the terms that
    blew up (for LFR: the clean cross-entropy or the flatness penalty), instead
    of letting NaN weights train on silently. `RobustModel.fit` adds it.

    Raises:
        FloatingPointError: From `on_train_batch_end` when a term is not finite.
    """

    def __init__(self):
        super().__init__()
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        values = {k: float(np.asarray(v)) for k, v in (logs or {}).items()}
        bad = [k for k, v in values.items() if not np.isfinite(v)]
        if not bad:
            return
        self.model.stop_training = True
        culprits = [k for k in bad if k != "loss"] or bad
        method = getattr(self.model, "method", None)
        describe = method.describe if method is not None else (lambda _: "a logged term")
        described = ", ".join(f"`{k}` ({describe(k)})" for k in culprits)
        step = int(self.model.optimizer.iterations) if self.model.optimizer else batch + 1
        raise FloatingPointError(
            f"Training diverged at epoch {self.epoch + 1}, batch {batch + 1} (optimizer step "
            f"{step}): {described} became {', '.join(str(values[k]) for k in culprits)}. "
            f"Logged values: {values}. Lower the learning rate or the penalty weight, or "
            "check the inputs for NaN."
        )
