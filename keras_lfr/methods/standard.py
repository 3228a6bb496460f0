"""Plain empirical risk minimisation: the undefended baseline."""

from keras_lfr import ops
from keras_lfr.methods.base import Method, register_method


@register_method("standard")
class Standard(Method):
    """Cross-entropy on clean inputs, with no inner maximisation.

    Reports `clean_ce`.
    """

    terms = ("clean_ce",)

    def loss(self, model, x, y, x_adv, sample_weight=None):
        del x_adv
        logits = model(x, training=True)
        ce = ops.weighted_mean(ops.cross_entropy(y, logits), sample_weight)
        return logits, ce, {"clean_ce": ce}

    def get_config(self):
        return {}
