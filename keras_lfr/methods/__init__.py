"""Training objectives. Each is a `Method` registered under a name for `wrap`."""

from keras_lfr.methods.adr import ADR
from keras_lfr.methods.awp import AWP, awp_perturbation, perturbed_weights
from keras_lfr.methods.base import (
    Method,
    available_methods,
    deserialize,
    get_method,
    hyperparameter_names,
    register_method,
    serialize,
)
from keras_lfr.methods.lfr import LFR, local_flatness, logit_scale_pressure
from keras_lfr.methods.llr import LLR
from keras_lfr.methods.lsp import LSP
from keras_lfr.methods.pgd_at import PGDAT
from keras_lfr.methods.standard import Standard
from keras_lfr.methods.trades import TRADES

__all__ = [
    "ADR",
    "AWP",
    "LFR",
    "LLR",
    "LSP",
    "PGDAT",
    "TRADES",
    "Method",
    "Standard",
    "available_methods",
    "awp_perturbation",
    "deserialize",
    "get_method",
    "hyperparameter_names",
    "local_flatness",
    "logit_scale_pressure",
    "perturbed_weights",
    "register_method",
    "serialize",
]
