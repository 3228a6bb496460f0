"""Local Structure Preserving regularisation: our design after Wei, Zhou, Wu (2023)."""

import keras

from keras_lfr import _validation, ops
from keras_lfr.methods.base import register_method
from keras_lfr.methods.composite import (
    CompositeMethod,
    FeatureExtractor,
    base_hyperparameter_names,
    split_base_hyperparameters,
)

BASES = ("pgd_at", "trades")


def neighbourhood_logits(points, temperature):
    """Logits of the affinities P_ij ∝ exp(−‖uᵢ − uⱼ‖² / (τ · mean d²)), P_ii = 0.

    Dividing by the mean of the off-diagonal squared distances makes the
    kernel scale-free, so inputs and embeddings are comparable. The gradient
    flows through the mean too, so it is scale-free as well: the term cannot
    be lowered by growing or shrinking every distance, only by changing the
    neighbourhoods (with the mean's gradient stopped, it drove the SmallCNN's
    features to collapse at every weight tried).
    """
    u = ops.flatten(keras.ops.cast(points, "float32"))
    squared = keras.ops.sum(u * u, axis=1)
    d2 = keras.ops.maximum(
        squared[:, None] + squared[None, :] - 2.0 * keras.ops.matmul(u, keras.ops.transpose(u)), 0.0
    )
    n = keras.ops.shape(u)[0]
    diagonal = keras.ops.cast(keras.ops.eye(n), "bool")
    d2 = keras.ops.where(diagonal, 0.0, d2)
    pairs = keras.ops.cast(n * (n - 1), "float32")
    mean = keras.ops.sum(d2) / pairs
    logits = -d2 / (temperature * keras.ops.maximum(mean, 1e-12))
    return keras.ops.where(diagonal, -1e9, logits)


def structure_loss(inputs, features, temperature):
    """Mean over points of KL(P_input,i ‖ Q_feature,i): the neighbourhood mismatch."""
    p = keras.ops.stop_gradient(neighbourhood_logits(inputs, temperature))
    return keras.ops.mean(ops.kl_divergence(p, neighbourhood_logits(features, temperature)))


@register_method("lsp")
class LSP(CompositeMethod):
    """Local Structure Preserving regularisation: base objective + w · KL(P ‖ Q).

    **This formula is our design.** Wei, Zhou and Wu ("Local Structure
    Preserving Regularization for Improving Adversarial Robustness", 2023)
    describe the idea (keep the input-space neighbourhood structure in the
    embedding space) but publish no formula. Ours, for a batch of clean points
    xᵢ and their adversarial examples x'ᵢ (2B points uₖ with embeddings zₖ,
    the output of `layer`):

        P_kl ∝ exp(−‖u_k − u_l‖² / (τ · mean_{k≠l} ‖u_k − u_l‖²)),  P_kk = 0
        Q_kl ∝ exp(−‖z_k − z_l‖² / (τ · mean_{k≠l} ‖z_k − z_l‖²)),  Q_kk = 0
        L_lsp = mean_k KL(P_k ‖ Q_k)

    loss = base(x, x', y) + `weight` · L_lsp, with the base `"pgd_at"`
    (adversarial training; `clean_weight=1` trains on clean inputs only, i.e.
    LSP without adversarial training) or `"trades"`. P is fixed (no gradient);
    the mean normalisation makes both kernels scale-free; the t-SNE-like KL
    penalises embeddings that tear apart points that are neighbours in input
    space (an adversarial example and its clean point above all) more than
    it penalises merging distant points.

    Reports the base method's terms plus `structure`.

    Args:
        base: `"pgd_at"` or `"trades"`. Defaults to `"pgd_at"`.
        layer: Name of the embedding layer; `None` for the penultimate
            representation. Needs a functional or Sequential model. Defaults
            to `None`.
        weight: Weight w of L_lsp. Defaults to `0.3` (docs/methods.md says
            how it was chosen).
        temperature: Kernel width τ relative to the mean distance. Defaults
            to `0.5`.
        **base_hyperparameters: Hyperparameters of the base method.

    Raises:
        ValueError: If a hyperparameter is invalid.
    """

    def __init__(
        self, base="pgd_at", layer=None, weight=0.3, temperature=0.5, **base_hyperparameters
    ):
        self.base = split_base_hyperparameters(base, BASES, base_hyperparameters)
        self.layer = layer
        self.weight = _validation.non_negative_float("weight", weight)
        self.temperature = _validation.positive_float("temperature", temperature)
        self.terms = (*self.base.terms, "structure")
        self.term_descriptions = {"structure": "the LSP structure term"}
        self.penalty_hyperparameters = ("weight", *self.base.penalty_hyperparameters)
        self._features = FeatureExtractor(layer)

    @classmethod
    def hyperparameter_names(cls):
        return ("base", "layer", "weight", "temperature") + base_hyperparameter_names(BASES)

    def loss(self, model, x, y, x_adv, sample_weight=None):
        logits, total, terms = self.base.loss(model, x, y, x_adv, sample_weight)
        points = keras.ops.concatenate([x, x_adv], axis=0)
        features, _ = self._features(model, points, training=True)
        structure = structure_loss(points, features, self.temperature)
        return logits, total + self.weight * structure, {**terms, "structure": structure}

    def get_config(self):
        return {
            "base": self.base.name,
            "layer": self.layer,
            "weight": self.weight,
            "temperature": self.temperature,
            **self.base.get_config(),
        }
