"""Adversarial attacks: plain functions of (model, x, y, *, epsilon, ...).

Each takes a Keras model or any callable that returns logits, works on a batch,
runs eagerly, inside `tf.function` or `jax.jit` and under XLA, and returns adversarial
inputs with the shape of `x`. Projection, clipping and random starts are shared
from `keras_lfr.ops`.

Written with `keras.ops`: every attack runs on Keras' TensorFlow and JAX
backends.
"""

from keras_lfr.attacks.apgd import apgd, dlr_loss
from keras_lfr.attacks.ddn import ddn
from keras_lfr.attacks.fab import fab
from keras_lfr.attacks.fgsm import fgsm
from keras_lfr.attacks.mi_fgsm import mi_fgsm
from keras_lfr.attacks.pgd import pgd
from keras_lfr.attacks.square import square

__all__ = ["apgd", "ddn", "dlr_loss", "fab", "fgsm", "mi_fgsm", "pgd", "square"]
