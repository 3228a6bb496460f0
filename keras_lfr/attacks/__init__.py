"""Adversarial attacks: plain functions of (model, x, y, *, epsilon, ...)."""

from keras_lfr.attacks.pgd import pgd

__all__ = ["pgd"]
