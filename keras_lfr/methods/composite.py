"""Shared pieces of the methods that regularise an intermediate representation."""

import keras

from keras_lfr import _validation
from keras_lfr.methods.base import Method, get_method, hyperparameter_names


class CompositeMethod(Method):
    """A method that adds terms to a base method it holds as `self.base`.

    The inner maximisation, its radius and the pixel range are the base's: `perturb`
    delegates to it, and `clip_min`/`clip_max` read it, so that the checks
    `fit` runs on the data (pixels within the clip range) see them.
    """

    base = None

    @property
    def epsilon(self):
        return getattr(self.base, "epsilon", None)

    @property
    def clip_min(self):
        return getattr(self.base, "clip_min", None)

    @property
    def clip_max(self):
        return getattr(self.base, "clip_max", None)

    @property
    def drift_term(self):
        return self.base.drift_term

    @property
    def drift_advice(self):
        return self.base.drift_advice

    def perturb(self, model, x, y, seed, scale=1.0):
        return self.base.perturb(model, x, y, seed, scale)

    def describe(self, term):
        if term in self.term_descriptions:
            return self.term_descriptions[term]
        return self.base.describe(term)


def split_base_hyperparameters(base, choices, hyperparameters):
    """Builds the base method of a composite method from its share of the arguments.

    Raises:
        ValueError: If `base` is not one of `choices`.
    """
    _validation.one_of("base", base, choices)
    return get_method(base, **hyperparameters)


def base_hyperparameter_names(choices):
    """Union of the hyperparameter names of the possible base methods."""
    names = []
    for choice in choices:
        names.extend(n for n in hyperparameter_names(choice) if n not in names)
    return tuple(names)


class FeatureExtractor:
    """Returns `(features, logits)` of a functional model at a named layer.

    The extractor shares the model's weights, so gradients reach them. `layer`
    `None` picks the input of the last layer (the penultimate representation).
    """

    def __init__(self, layer=None):
        self.layer = layer
        self._models = {}

    def __call__(self, model, x, training):
        key = id(model)
        if key not in self._models:
            self._models[key] = self._build(model)
        return self._models[key](x, training=training)

    def _build(self, model):
        if not getattr(model, "inputs", None):
            raise ValueError(
                f"Model {model.name!r} has no symbolic inputs: feature-space methods "
                "need a functional or Sequential model built with `keras.Input`."
            )
        if self.layer is None:
            features = model.layers[-1].input
        else:
            names = [layer.name for layer in model.layers]
            if self.layer not in names:
                raise ValueError(
                    f"Invalid value for argument `layer`. Received: layer={self.layer!r}. "
                    f"Expected the name of a layer of {model.name!r}: {names}."
                )
            features = model.get_layer(self.layer).output
        # A single input is passed as itself, not as a list of one, so that the
        # extractor takes a bare tensor (or array) without a structure warning.
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        return keras.Model(inputs, [features, model.outputs[0]])
