"""Checkpointing the random-generator states of a model's layers (e.g. Dropout).

Keras does not save `SeedGenerator` states with the weights, so a run resumed
from a checkpoint (or a reloaded model) would draw new Dropout masks. Storing
them beside the weights makes it continue exactly where it stopped.
"""

_KEY = "seed_generator_{}"


def generators(model):
    """The `SeedGenerator`s of a model's layers, in a fixed order."""
    return [
        generator
        for layer in model._flatten_layers()
        for generator in getattr(layer, "_seed_generators", [])
    ]


def save(model, store):
    """Adds the states of `model`'s generators to a `save_own_variables` store."""
    for i, generator in enumerate(generators(model)):
        store[_KEY.format(i)] = generator.state


def load(model, store):
    """Restores the generators' states found in `store`; returns the other entries.

    Stores written before the states were saved simply lack them.
    """
    found = generators(model)
    keys = [_KEY.format(i) for i in range(len(found))]
    stored = set(store.keys())
    for generator, key in zip(found, keys, strict=True):
        if key in stored:
            generator.state.assign(store[key])
    return {k: store[k] for k in stored if k not in keys}
