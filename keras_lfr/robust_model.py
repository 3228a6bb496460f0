"""The wrapper model that turns any Keras classifier into a robust trainer."""

import math
import types
import warnings

import keras

from keras_lfr import _guards, _seed_state, _validation, backend, checks, ops
from keras_lfr.methods import AWP, deserialize, get_method, serialize
from keras_lfr.methods.base import CLEAN_TERMS

# How the ε ramp rises from 0 to 1 (`RobustModel.epsilon_scale`).
WARMUP_SHAPES = ("linear", "cosine")


@keras.saving.register_keras_serializable(package="keras_lfr")
class RobustModel(keras.Model):
    """Wraps a classifier so that `fit` trains it with a robust objective.

    The wrapper holds the user's model (Sequential, functional or subclassed;
    it must output logits), delegates `call` to it, and replaces `train_step`
    with one shared step for every method: the method's inner maximisation
    (model in inference mode), then the gradient of the method's loss with
    respect to the weights (model in training mode; a gradient of a gradient
    for LFR: nested tapes on TensorFlow, nested `jax.grad` on JAX), then the
    optimizer update. The same step runs on Keras' TensorFlow and JAX
    backends (`keras_lfr.backend`).

    The progress bar and `History` show `loss` (the objective minimised), the
    method's own terms (for LFR: `clean_ce` and `local_flatness`) and the
    compiled metrics on clean inputs. `evaluate` and validation measure clean
    inputs: `loss` and `clean_ce` are then the clean cross-entropy.

    Hand-computed losses are batch means scaled by 1/replicas before the
    optimizer sums gradients over replicas, so a step over a global batch is
    the same on 1 or N devices. Randomness is stateless and derived from
    `seed`, the optimizer's step counter and the replica id, so it works under
    XLA and `tf.distribute`.

    Args:
        model: The Keras model to train; it must return logits.
        method: A registered method name (see
            `keras_lfr.methods.available_methods()`) or a `Method` instance.
            Defaults to `"lfr"`.
        seed: Integer seed of the inner maximisation's random starts.
            Defaults to `0`.
        awp_gamma: Adversarial Weight Perturbation (Wu et al., NeurIPS 2020)
            on top of the method: the relative size γ of the per-layer weight
            perturbation (about 0.005–0.01 in the AWP paper); `0` disables it.
            A shorthand for `method=keras_lfr.methods.AWP(base=method, ...)`.
            Defaults to `0.0`.
        awp_warmup_steps: Optimizer steps trained without AWP before it
            starts (e.g. epochs × steps per epoch). Defaults to `0`.
        epsilon_warmup: Optimizer steps over which the radius and the step
            of the inner maximisation ramp from 0 to the method's `epsilon`
            and `step_size` (with the linear shape, step t trains at the
            fraction min(1, t / `epsilon_warmup`)); `0` trains at the full
            radius from the first step. The ramp is computed from
            `optimizer.iterations` inside the compiled step, so it needs no
            callback, never retraces and resumes with the optimizer. Ramping ε is the usual cure for
            adversarial training that stalls at ε = 0.3 from scratch.
            Defaults to `0`.
        epsilon_warmup_shape: How the ramp rises: `"linear"`, or
            `"cosine"` ((1 − cos(π t / `epsilon_warmup`)) / 2, slow at
            both ends: it approaches the full radius gently). Defaults to
            `"linear"`.
        name: Name of the wrapper. Defaults to `None` (derived from `model`).
        **hyperparameters: Keyword arguments of the method, e.g. `epsilon`,
            `step_size`, `steps`, `lam`.

    Raises:
        ValueError: If `model` is not a Keras model, the method is unknown, or
            a hyperparameter is invalid.

    Example:

    >>> robust = keras_lfr.RobustModel(cnn, method="pgd_at", epsilon=0.3)
    >>> robust.compile(optimizer="sgd", metrics=["accuracy"])
    >>> robust.fit(train_ds, epochs=10)
    """

    def __init__(
        self,
        model,
        method="lfr",
        seed=0,
        awp_gamma=0.0,
        awp_warmup_steps=0,
        epsilon_warmup=0,
        epsilon_warmup_shape="linear",
        name=None,
        **hyperparameters,
    ):
        if "awp_warmup" in hyperparameters:
            raise ValueError(
                "The argument `awp_warmup` (epochs) was replaced by `awp_warmup_steps` "
                "(optimizer steps, e.g. epochs × steps per epoch). Received: "
                f"awp_warmup={hyperparameters['awp_warmup']!r}."
            )
        if not isinstance(model, keras.Model):
            raise ValueError(
                "Invalid value for argument `model`. Received: "
                f"model={model!r}. Expected a `keras.Model` that returns logits."
            )
        _check_precision(model)
        seed = _validation.integer("seed", seed)
        awp_gamma = _validation.non_negative_float("awp_gamma", awp_gamma)
        awp_warmup_steps = _validation.non_negative_int("awp_warmup_steps", awp_warmup_steps)
        epsilon_warmup = _validation.non_negative_int("epsilon_warmup", epsilon_warmup)
        epsilon_warmup_shape = _validation.one_of(
            "epsilon_warmup_shape", epsilon_warmup_shape, WARMUP_SHAPES
        )
        method = get_method(method, **hyperparameters)
        if awp_gamma:
            method = AWP(base=method, gamma=awp_gamma, warmup_steps=awp_warmup_steps)
        super().__init__(name=name or f"{method.name}_{model.name}")
        self.inner_model = model
        self.method = method
        self.seed = seed
        self.epsilon_warmup = epsilon_warmup
        self.epsilon_warmup_shape = epsilon_warmup_shape
        self.term_trackers = [keras.metrics.Mean(name=term) for term in method.terms]
        self._gradient_fn = self.compute_gradients
        checks.warn_if_not_logits(model)
        shape = checks.input_shape_of(model)
        if shape is not None:
            self.build((None, *shape))

    def build(self, input_shape):
        if not self.inner_model.built:
            # A symbolic call creates the weights of subclassed models too.
            self.inner_model(keras.KerasTensor(input_shape))
        super().build(input_shape)

    def call(self, inputs, training=None):
        return self.inner_model(inputs, training=training)

    def unwrap(self):
        """Returns the wrapped model, e.g. for serving or for another wrapper."""
        return self.inner_model

    def threat_model(self):
        """The l-inf ball the model is trained against, for evaluating it at the same radius.

        `keras_lfr.ThreatModel.of_model(model)` reads it.

        Returns:
            A dict with `epsilon` (the method's full radius, after any ramp)
            and the pixel range `clip_min`, `clip_max`; `None` values for a
            method without a ball (`"standard"`).
        """
        return {
            name: getattr(self.method, name, None) for name in ("epsilon", "clip_min", "clip_max")
        }

    def compile(self, optimizer="rmsprop", loss=None, metrics=None, jit_compile="auto", **kwargs):
        """Configures the model for training; like `keras.Model.compile`.

        The loss is defined by the method, so `loss` must be left out. With
        `jit_compile=True` under a `tf.distribute` strategy with several
        replicas, Keras cannot compile the whole step; the per-replica gradient
        computation is then compiled with XLA and the optimizer update runs
        outside it.

        Args:
            optimizer: Optimizer name or instance. Defaults to `"rmsprop"`.
            loss: Must be `None`. Defaults to `None`.
            metrics: Metrics computed on clean inputs. Defaults to `None`.
            jit_compile: `True`, `False` or `"auto"` (XLA on GPU without a
                distribution strategy). Defaults to `"auto"`.
            **kwargs: Other arguments of `keras.Model.compile`.

        Raises:
            ValueError: If `loss` is given.
        """
        if loss is not None:
            raise ValueError(
                f"Invalid value for argument `loss`. Received: loss={loss!r}. "
                f"Expected None: the {self.method.name!r} method defines the loss "
                "(cross-entropy on logits)."
            )
        super().compile(optimizer=optimizer, metrics=metrics, jit_compile=jit_compile, **kwargs)
        self._gradient_fn = backend.gradient_function(self, self.compute_gradients)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def fit(self, x=None, y=None, *args, **kwargs):
        """Trains the model; like `keras.Model.fit`.

        Before training, the first batch is checked (floating-point images of
        the model's input rank, labels in range, pixels within the method's
        clip range, logits rather than probabilities) so that mistakes fail
        with a clear message instead of deep inside TensorFlow; during
        training, `keras_lfr.callbacks.NaNGuard` stops a diverging run and names
        the term that blew up. A `tf.data.Dataset` or a generator is taken in
        its own order (`shuffle` defaults to `False` for them: Keras ignores
        it there, with a warning).
        """
        if "shuffle" not in kwargs and len(args) < 7 and _orders_itself(x):
            kwargs["shuffle"] = False
        x, own_callbacks = self.prepare_fit(x, y)
        kwargs["callbacks"] = [*(kwargs.get("callbacks") or []), *own_callbacks]
        return super().fit(x, y, *args, **kwargs)

    def prepare_fit(self, x, y=None):
        """The checks and callbacks every training loop runs (`fit`, `distributed_fit`).

        Checks the first batch of `x` (see `fit`), builds the model if needed,
        and returns the data to train on (a generator's first batch is put
        back) and the callbacks the loop must run: `NaNGuard`,
        `CollapseWarning` and, for methods that can drift (LFR),
        `DriftWarning`.

        Returns:
            A tuple `(data, callbacks)`.
        """
        sample_x, x = checks.check_fit_data(self, x, y)
        own = [_guards.NaNGuard()]
        if sample_x is not None:
            own.append(_guards.CollapseWarning(sample_x, self.method))
        if self.method.drift_term is not None:
            own.append(_guards.DriftWarning(self.method))
        return x, own

    def step_seed(self):
        """The stateless seed of the current step on the current replica."""
        replica, replicas = backend.replica()
        step = keras.ops.convert_to_tensor(self.optimizer.iterations)
        return ops.make_seed(self.seed, step * replicas + keras.ops.cast(replica, step.dtype))

    def epsilon_scale(self):
        """The fraction of the inner radius and step used at the current step.

        With t = min(1, `optimizer.iterations` / `epsilon_warmup`): t for the
        linear shape, (1 − cos(π t)) / 2 for the cosine one; a float32
        scalar, exactly `1.0` (a Python float) without a warm-up.
        """
        if not self.epsilon_warmup:
            return 1.0
        step = keras.ops.cast(self.optimizer.iterations, "float32")
        t = keras.ops.minimum(1.0, step / float(self.epsilon_warmup))
        if self.epsilon_warmup_shape == "cosine":
            return 0.5 * (1.0 - keras.ops.cos(math.pi * t))
        return t

    def compute_gradients(self, x, labels, sample_weight, seed, scale=1.0):
        """Runs the method on the local batch and returns gradients and logs.

        `scale` multiplies the radius and the step of the inner maximisation
        (see `epsilon_scale`).

        Returns:
            A tuple `(gradients, clean_logits, loss, terms)`; the gradients
            are of `loss / replicas` (summed over replicas by the optimizer).
        """
        x_adv = self.method.perturb(self.inner_model, x, labels, seed, scale)
        replicas = backend.replica()[1]

        def scaled_loss():
            logits, loss, terms = self.method.loss_at_step(
                self.inner_model, x, labels, x_adv, sample_weight, self.optimizer.iterations
            )
            return self.optimizer.scale_loss(loss / replicas), (logits, loss, terms)

        gradients, (logits, loss, terms) = backend.value_and_weight_gradients(
            scaled_loss, self.trainable_variables
        )
        return gradients, logits, loss, terms

    def train_step(self, *args):
        # TensorFlow calls it with `(data)`, JAX with `(state, data)`.
        return backend.run_step(self, self._train_step, *args)

    def test_step(self, *args):
        return backend.run_step(self, self._test_step, *args)

    def _train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        scale = self.epsilon_scale()
        gradients, logits, loss, terms = self._gradient_fn(
            x, ops.sparse_labels(y), sample_weight, self.step_seed(), scale
        )
        self.optimizer.apply(gradients, self.trainable_variables)
        self._track(x, loss, terms)
        logs = self.compute_metrics(x, y, logits, sample_weight)
        if self.epsilon_warmup:
            logs["epsilon_scale"] = scale
        return logs

    def _test_step(self, data):
        # Clean inputs only: `loss` is the clean cross-entropy, and so is each
        # of the method's terms that measures the clean inputs.
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logits = self(x, training=False)
        ce = ops.weighted_mean(ops.cross_entropy(ops.sparse_labels(y), logits), sample_weight)
        clean = {term: ce for term in self.method.terms if term in CLEAN_TERMS}
        self._track(x, ce, clean)
        logs = self.compute_metrics(x, y, logits, sample_weight)
        return {k: v for k, v in logs.items() if k not in self.method.terms or k in clean}

    def _track(self, x, loss, terms):
        """Adds a batch's loss and terms to their running means (weighted by batch size)."""
        batch = keras.ops.shape(x)[0]
        self._loss_tracker.update_state(loss, sample_weight=batch)
        for tracker in self.term_trackers:
            if tracker.name in terms:
                tracker.update_state(terms[tracker.name], sample_weight=batch)

    def save_own_variables(self, store):
        super().save_own_variables(store)
        _seed_state.save(self.inner_model, store)

    def load_own_variables(self, store):
        super().load_own_variables(_seed_state.load(self.inner_model, store))

    def get_config(self):
        return {
            "name": self.name,
            "model": keras.saving.serialize_keras_object(self.inner_model),
            "method": serialize(self.method),
            "seed": self.seed,
            "epsilon_warmup": self.epsilon_warmup,
            "epsilon_warmup_shape": self.epsilon_warmup_shape,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        model = keras.saving.deserialize_keras_object(
            config.pop("model"), custom_objects=custom_objects
        )
        if isinstance(config.get("method"), dict):
            config["method"] = deserialize(config["method"])
        elif epochs := config.pop("awp_warmup", 0):
            # A file from before AWP became a method (flat hyperparameters, AWP
            # warm-up in epochs): epochs cannot be converted to steps here.
            warnings.warn(
                f"This file's AWP warm-up of {epochs} epochs cannot be "
                "converted to optimizer steps; it is loaded with awp_warmup_steps=0, "
                "which matters only if you train it further (then pass awp_warmup_steps).",
                stacklevel=2,
            )
        return cls(model, **config)


@keras.saving.register_keras_serializable(package="keras_lfr")
class LFRModel(RobustModel):
    """A `RobustModel` trained with Local Flatness Regularization.

    Minimises CE(x, y) + `lam` · meanᵢ max_{x'ᵢ ∈ B∞(xᵢ, ε)} ‖∇ₓ CE(x'ᵢ, yᵢ)‖₁
    (Xu, Li, Jiang, Xia, ICIP 2020); see `keras_lfr.methods.LFR`. Defaults are
    the paper's MNIST settings. The same as `RobustModel(model, method="lfr")`,
    kept under its own name for the paper's readers and for `.keras` files
    saved as `LFRModel`.

    Args:
        model: The Keras model to train; it must return logits.
        seed: Integer seed of the random starts. Defaults to `0`.
        name: Name of the wrapper. Defaults to `None`.
        **hyperparameters: Those of `keras_lfr.methods.LFR`:
            `epsilon` (radius of the l-inf ball, default `0.3`),
            `step_size` (inner sign-ascent step, default `0.01`),
            `steps` (inner steps K, default `40`),
            `lam` (weight λ of the flatness penalty, default `0.02`),
            `clip_min`, `clip_max` (pixel range, default `0.0`, `1.0`) and
            `random_start` (`"normal"` for x + 0.001·N(0, 1), `"uniform"` or
            `"none"`; default `"normal"`); and the wrapper's `awp_gamma`,
            `awp_warmup_steps`, `epsilon_warmup` and `epsilon_warmup_shape`.

    Raises:
        ValueError: If a hyperparameter is invalid.

    Example:

    >>> model = keras_lfr.LFRModel(cnn, epsilon=0.3, steps=40, lam=0.02)
    >>> model.compile(keras.optimizers.SGD(0.01, momentum=0.9), metrics=["accuracy"])
    >>> model.fit(train_ds, epochs=100)
    """

    def __init__(self, model, seed=0, name=None, **hyperparameters):
        # `method` is passed only by `from_config` (an LFR method).
        hyperparameters.setdefault("method", "lfr")
        super().__init__(model, seed=seed, name=name, **hyperparameters)


def _orders_itself(x):
    """Whether `fit` data is a `tf.data.Dataset` or a generator: Keras cannot shuffle it."""
    if isinstance(x, types.GeneratorType):
        return True
    return any(
        kind.__module__.startswith("tensorflow.") and "Dataset" in kind.__name__
        for kind in type(x).__mro__
    )


def wrap(model, method="lfr", **hyperparameters):
    """Wraps a Keras classifier for robust training with `fit`.

    Args:
        model: A Keras model (Sequential, functional or subclassed) that
            returns logits.
        method: Name of the training objective: one of
            `keras_lfr.methods.available_methods()`. Defaults to `"lfr"`.
        **hyperparameters: The method's hyperparameters (for `"lfr"`:
            `epsilon`, `step_size`, `steps`, `lam`, `clip_min`, `clip_max`,
            `random_start`) and the wrapper's (`RobustModel`'s) `seed`,
            `awp_gamma`, `awp_warmup_steps`, `epsilon_warmup`,
            `epsilon_warmup_shape` and `name`.

    Returns:
        A `RobustModel`.

    Raises:
        ValueError: If the method is unknown or a hyperparameter is invalid.

    Example:

    >>> model = keras_lfr.wrap(cnn, method="lfr", epsilon=0.3, steps=40, lam=0.02)
    >>> model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
    ...               metrics=["accuracy"])
    >>> model.fit(train_ds, epochs=100)
    """
    return RobustModel(model, method=method, **hyperparameters)


def _check_precision(model):
    """Refuses float64: the methods and attacks compute in float32 (or mixed precision)."""
    policies = {layer.dtype_policy.name for layer in [model, *model.layers]}
    if keras.config.floatx() == "float64" or "float64" in policies:
        raise ValueError(
            "keras_lfr computes in float32 (or with the mixed_bfloat16 / mixed_float16 "
            f"policies), not float64. Received: keras.config.floatx()={keras.config.floatx()!r}, "
            f"dtype policies {sorted(policies)}. Call `keras.config.set_floatx('float32')` "
            "before building the model, and build it without dtype='float64'."
        )
