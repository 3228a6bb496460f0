"""The interface every training objective implements, and the method registry."""

import inspect

from keras_lfr import _validation, ops

_REGISTRY = {}
# Logged terms several methods share, and what they are.
COMMON_TERMS = {
    "loss": "the total objective",
    "clean_ce": "the cross-entropy on clean inputs",
    "adv_ce": "the cross-entropy on adversarial inputs",
}
# Logged terms that measure the clean inputs alone: validation reports them too.
CLEAN_TERMS = ("clean_ce",)


def register_method(name):
    """Class decorator that makes a `Method` available as `wrap(..., method=name)`."""

    def decorator(cls):
        cls.name = name
        _REGISTRY[name] = cls
        return cls

    return decorator


def get_method(method, **hyperparameters):
    """Builds a `Method` from its registered name and hyperparameters.

    Args:
        method: A registered name such as `"lfr"`, or a `Method` instance
            (then `hyperparameters` must be empty).
        **hyperparameters: Keyword arguments of the method's constructor.

    Returns:
        A `Method` instance.

    Raises:
        ValueError: If the name is unknown or a hyperparameter is not one the
            method takes.
    """
    if isinstance(method, Method):
        if hyperparameters:
            raise ValueError(
                f"Hyperparameters {sorted(hyperparameters)} were passed together "
                f"with the method instance {method!r}. Pass them to the method's "
                "constructor instead."
            )
        return method
    accepted = hyperparameter_names(method)
    unknown = sorted(set(hyperparameters) - set(accepted))
    if unknown:
        raise ValueError(
            f"Unknown hyperparameter(s) {unknown} for method={method!r}. "
            f"Expected some of {list(accepted)}."
        )
    return _REGISTRY[method](**hyperparameters)


def serialize(method):
    """`{"name": ..., "config": ...}` of a registered method, for a model's config."""
    return {"name": method.name, "config": method.get_config()}


def deserialize(config):
    """Rebuilds a method from `serialize`'s output (a `Method` is returned as is)."""
    if isinstance(config, Method):
        return config
    return get_method(config["name"], **config["config"])


def hyperparameter_names(method):
    """Returns the names of the hyperparameters a registered method takes.

    Raises:
        ValueError: If `method` is not a registered name.
    """
    if method not in _REGISTRY:
        raise ValueError(
            f"Invalid value for argument `method`. Received: method={method!r}. "
            f"Expected one of {sorted(_REGISTRY)}."
        )
    return _REGISTRY[method].hyperparameter_names()


def available_methods():
    """Returns the sorted names of all registered methods."""
    return sorted(_REGISTRY)


class Method:
    """A training objective: an optional inner maximisation and an outer loss.

    A `RobustModel` runs the same train step for every method:

    1. `x_adv = method.perturb(model, x, y, seed)` with the model in inference
       mode and no tape on the weights;
    2. `logits, loss, terms = method.loss_at_step(model, x, y, x_adv,
       sample_weight, step)` (for most methods `loss`) under a
       `tf.GradientTape` on the trainable weights;
    3. the optimizer applies the gradients of `loss`.

    Subclasses set `terms` (the names of the scalars `loss` reports; they are
    shown in the progress bar and `History`), validate their hyperparameters in
    `__init__`, and return those hyperparameters from `get_config`.
    """

    name = None
    terms = ()
    # What each of the method's own logged terms is, for messages such as
    # NaNGuard's (terms every method shares are in `COMMON_TERMS`).
    term_descriptions = {}
    # Hyperparameters to lower when training collapses to a constant classifier.
    penalty_hyperparameters = ()
    # The logged penalty whose steady rise at full epsilon means the model is
    # drifting to small margins (`keras_lfr.callbacks.DriftWarning`), and what
    # to change then; `None` for methods without such a failure.
    drift_term = None
    drift_advice = None

    @classmethod
    def hyperparameter_names(cls):
        """The keyword arguments the constructor takes."""
        parameters = inspect.signature(cls.__init__).parameters.values()
        return tuple(
            p.name for p in parameters if p.name != "self" and p.kind == p.POSITIONAL_OR_KEYWORD
        )

    def perturb(self, model, x, y, seed, scale=1.0):
        """Returns the perturbed inputs the loss needs, or `None`.

        Args:
            model: The inner Keras model (returns logits).
            x: Clean inputs of the local batch.
            y: Integer labels, shape `(batch,)`.
            seed: A shape-`[2]` int tensor for stateless randomness.
            scale: Factor in [0, 1] on the radius and the step of the inner
                maximisation (a float or a scalar tensor, e.g. an ε ramp).
                Defaults to `1.0`.

        Returns:
            A tensor like `x`, or `None` for methods without an inner max.
        """
        del model, x, y, seed, scale
        return None

    def loss(self, model, x, y, x_adv, sample_weight=None):
        """Returns `(clean_logits, loss, terms)` for the local batch.

        `loss` is the batch mean of the objective (a float32 scalar), `terms`
        maps every name in `self.terms` to a float32 scalar, and
        `clean_logits` are the logits on `x` for the compiled metrics.
        """
        raise NotImplementedError

    def loss_at_step(self, model, x, y, x_adv, sample_weight, step):
        """The loss the train step minimises at optimizer step `step`.

        `loss`, unless the objective changes during training (AWP's warm-up
        overrides this). `step` is `optimizer.iterations`, a scalar tensor.
        """
        del step
        return self.loss(model, x, y, x_adv, sample_weight)

    def get_config(self):
        """Returns the constructor arguments of this method."""
        raise NotImplementedError

    def penalty_values(self):
        """`{name: value}` of the hyperparameters to lower when training collapses."""
        config = self.get_config()
        return {name: config[name] for name in self.penalty_hyperparameters}

    def describe(self, term):
        """A short description of a logged term, e.g. `"the LFR penalty ‖∇ₓ CE(x')‖₁"`."""
        return self.term_descriptions.get(term) or COMMON_TERMS.get(term, "a logged term")

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


class BallMethod(Method):
    """A `Method` whose inner maximisation lives in an l-inf ball within the pixel range.

    Validates and serialises the shared hyperparameters (`epsilon`,
    `step_size`, `steps`, `clip_min`, `clip_max`) and runs projected sign
    ascent on a per-batch objective.
    """

    def _set_ball(self, epsilon, step_size, steps, clip_min, clip_max):
        self.clip_min, self.clip_max = _validation.clip_range(clip_min, clip_max)
        self.epsilon = _validation.epsilon_in_range(epsilon, self.clip_min, self.clip_max)
        self.step_size = _validation.non_negative_float("step_size", step_size)
        self.steps = _validation.positive_int("steps", steps)

    def ball_config(self):
        """The shared hyperparameters, for `get_config`."""
        return {
            "epsilon": self.epsilon,
            "step_size": self.step_size,
            "steps": self.steps,
            "clip_min": self.clip_min,
            "clip_max": self.clip_max,
        }

    def ball(self, scale=1.0):
        """`(epsilon, step_size)` of the inner maximisation, both times `scale`."""
        return self.epsilon * scale, self.step_size * scale

    def ascend(self, objective, x, start, seed, scale=1.0):
        """Sign ascent on the per-example `objective(x_adv)` from a `random_start` kind.

        Runs `ops.ascend` for `steps` steps; the radius and the step are
        `ball(scale)`.
        """
        epsilon, step_size = self.ball(scale)
        x_start = ops.random_start(x, start, epsilon, seed, self.clip_min, self.clip_max)
        return ops.ascend(
            objective,
            x,
            x_start,
            epsilon=epsilon,
            step_size=step_size,
            steps=self.steps,
            clip_min=self.clip_min,
            clip_max=self.clip_max,
        )
