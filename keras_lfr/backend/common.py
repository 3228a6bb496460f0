"""Backend-independent helpers of `keras_lfr.backend`."""

import keras
from keras.src.backend.common.stateless_scope import get_stateless_scope


class ChildScope(keras.StatelessScope):
    """A `keras.StatelessScope` that reads its enclosing scope's values and records assignments.

    A plain `StatelessScope` nested in another reads the variables' stored
    values; this one starts from the enclosing scope's mapping (where JAX's
    train step keeps the traced weights), overridden by `state_mapping`.

    Args:
        state_mapping: `(variable, value)` pairs read inside instead.
            Defaults to `()`.
    """

    def __init__(self, state_mapping=()):
        super().__init__(state_mapping)
        self.parent = get_stateless_scope()
        if self.parent is not None:
            for key, value in self.parent.state_mapping.items():
                self.state_mapping.setdefault(key, value)
        self.assigned = {}

    def add_update(self, update):
        super().add_update(update)
        self.assigned[id(update[0])] = update[0]

    def updates(self, exclude=()):
        """The variables assigned inside (except `exclude`) and their new values."""
        skip = {id(v) for v in exclude}
        variables = [v for key, v in self.assigned.items() if key not in skip]
        return variables, [self.get_current_value(v) for v in variables]


def propagate(variables, values):
    """Assigns values to variables: in the enclosing stateless scope if any, else in place."""
    parent = get_stateless_scope()
    for variable, value in zip(variables, values, strict=True):
        if parent is not None:
            parent.add_update((variable, value))
        else:
            variable.assign(value)
