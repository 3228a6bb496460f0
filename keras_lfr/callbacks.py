"""Keras callbacks for robust training."""

import functools
import time

import keras
import numpy as np

from keras_lfr import _validation, attacks, defaults, ops
from keras_lfr._guards import ACCURACY_METRICS, CollapseWarning, DriftWarning, NaNGuard
from keras_lfr.evaluation import running
from keras_lfr.threat import ThreatModel

__all__ = [
    "ACCURACY_METRICS",
    "AttackEvaluation",
    "CollapseWarning",
    "DriftWarning",
    "NaNGuard",
    "WallClock",
    "default_attack",
]


def default_attack(model):
    """PGD-10 with steps of ε/10 at the model's own threat model (or the paper's).

    Args:
        model: A `keras_lfr.RobustModel` or `keras_lfr.zoo.ZooModel` (its
            `keras_lfr.ThreatModel.of_model` gives ε and the pixel range) or
            any other model (the paper's ε = 0.3 on [0, 1]).

    Returns:
        An attack `fn(model, x, y) -> x_adv`.
    """
    threat = ThreatModel.of_model(model) or ThreatModel(defaults.PAPER_EPSILON)
    return functools.partial(
        attacks.pgd, step_size=threat.epsilon / 10, steps=10, **threat.as_ball()
    )


class AttackEvaluation(keras.callbacks.Callback):
    """Measures accuracy under attacks on a held-out slice every few epochs.

    Adds `val_adv_<name>_accuracy` to the epoch logs, so the values show in
    the progress bar, `History` and TensorBoard (place this callback before
    `TensorBoard` in the list).

    Args:
        x: Held-out images (a few hundred keep it cheap).
        y: Their integer or one-hot labels.
        attacks_by_name: Dict of name -> `fn(model, x, y) -> x_adv`. Defaults
            to `None`: PGD-10 with steps of ε/10, named `"pgd"`, at the
            radius and pixel range the model is trained for when it is a
            `keras_lfr.RobustModel` or a zoo model
            (`keras_lfr.ThreatModel.of_model`), else at the paper's ε = 0.3
            on [0, 1] (`keras_lfr.defaults`).
        every: Evaluate every `every` epochs (and after the last one).
            Defaults to `1`.
        batch_size: Examples per attack batch. Defaults to `256`.
        precision: `"float32"`, or `"mixed"`: every attack but Square
            searches on a bfloat16 copy of the model, its weights copied at
            every evaluation (`keras_lfr.evaluation.search_precision`), and
            each point the attacks return is judged by the model itself
            (`keras_lfr.evaluation.correct_under`). Much cheaper where
            bfloat16 is fast; it can only miss an example float32 would have
            broken, never count one float32 rejects, so it reads as an upper
            bound of float32's accuracy. An attack that searches in bfloat16
            (the default PGD does) needs a functional or Sequential
            classifier. Defaults to `"float32"`.

    Raises:
        ValueError: If `every`, `batch_size` or `precision` is invalid.

    Example:

    >>> callback = keras_lfr.callbacks.AttackEvaluation(x_val[:500], y_val[:500])
    >>> history = model.fit(train_ds, epochs=10, callbacks=[callback])
    >>> history.history["val_adv_pgd_accuracy"]
    >>> fast = keras_lfr.callbacks.AttackEvaluation(x_val[:500], y_val[:500], precision="mixed")
    """

    def __init__(self, x, y, attacks_by_name=None, every=1, batch_size=256, precision="float32"):
        super().__init__()
        self.x = np.asarray(x, dtype="float32")
        self.y = np.asarray(ops.sparse_labels(y))
        self.attacks_by_name = None if attacks_by_name is None else dict(attacks_by_name)
        self.every = _validation.positive_int("every", every)
        self.batch_size = _validation.positive_int("batch_size", batch_size)
        self.precision = _validation.one_of("precision", precision, running.PRECISIONS)
        self._compiled = None

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every and epoch + 1 != last:
            return
        if self.attacks_by_name is None:
            self.attacks_by_name = {"pgd": default_attack(self.model)}
        if self._compiled is None:
            self._compiled = running._correct_steps(
                self.model, self.attacks_by_name, self.precision
            )
        for name, correct in self._compiled.items():
            total = 0
            for start in range(0, len(self.x), self.batch_size):
                stop = start + self.batch_size
                total += int(np.sum(correct(self.x[start:stop], self.y[start:stop])))
            if logs is not None:
                logs[f"val_adv_{name}_accuracy"] = total / len(self.x)


class WallClock(keras.callbacks.Callback):
    """Adds `wall_time`, the seconds since training began, to the epoch logs.

    Place it first in the callback list so that the time includes the other
    callbacks' work of the epoch (e.g. `AttackEvaluation`).

    Args:
        offset: Seconds already spent, added to the time: a resumed run
            passes the `wall_time` of its last checkpoint. Defaults to `0.0`.
    """

    def __init__(self, offset=0.0):
        super().__init__()
        self.offset = float(offset)

    def on_train_begin(self, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["wall_time"] = self.offset + time.perf_counter() - self._start
