"""`ThreatModel`: the l-inf ball a model is trained and attacked in, in one value.

Every part of keras_lfr that needs a radius gets it from a `ThreatModel`: a
dataset's standard one (`ThreatModel.of_dataset`, the one place where "no ε
given" becomes the dataset's radius of `keras_lfr.defaults.EPSILON`), the one
a model was trained at (`ThreatModel.of_model`), or a zoo entry's
(`ThreatModel.of_record`). `RobustModel.threat_model()` and
`keras_lfr.zoo.ZooModel.threat_model()` give the `as_ball()` dict that
`of_model` reads, and `keras_lfr.zoo.threat_model_name` is its `name`.
"""

import dataclasses

from keras_lfr import _validation, defaults

# The norms a threat model may have.
NORMS = ("linf",)


@dataclasses.dataclass(frozen=True)
class ThreatModel:
    """An l-inf ball of radius `epsilon` within the pixel range `[clip_min, clip_max]`.

    Frozen: two threat models are equal when their fields are. Build one
    directly, or from a dataset (`of_dataset`), a model (`of_model`) or a
    zoo record (`of_record`).

    Args:
        epsilon: The radius, no larger than the pixel range.
        norm: The norm of the ball. Defaults to `"linf"` (the only one).
        clip_min: The smallest pixel value. Defaults to `0.0`.
        clip_max: The largest pixel value. Defaults to `1.0`.
        dataset: The dataset the radius is for, e.g. `"mnist"`; `None` when
            unknown. Defaults to `None`.
        step_size: The step of a training method's inner maximisation;
            `None` for the method's own default. Defaults to `None`.

    Raises:
        ValueError: If `norm`, the pixel range, `epsilon` or `step_size` is
            invalid.

    Example:

    >>> threat = keras_lfr.ThreatModel.of_dataset("fashion_mnist")
    >>> threat.epsilon, threat.name
    (0.1, 'linf-0.1')
    >>> keras_lfr.attacks.pgd(model, x, y, step_size=0.01, steps=40, **threat.as_ball())
    """

    epsilon: float
    norm: str = "linf"
    clip_min: float = 0.0
    clip_max: float = 1.0
    dataset: str | None = None
    step_size: float | None = None

    def __post_init__(self):
        _validation.one_of("norm", self.norm, NORMS)
        clip_min, clip_max = _validation.clip_range(self.clip_min, self.clip_max)
        epsilon = _validation.epsilon_in_range(self.epsilon, clip_min, clip_max)
        step_size = self.step_size
        if step_size is not None:
            step_size = _validation.non_negative_float("step_size", step_size)
        for name, value in (
            ("epsilon", epsilon),
            ("clip_min", clip_min),
            ("clip_max", clip_max),
            ("step_size", step_size),
        ):
            object.__setattr__(self, name, value)

    @classmethod
    def of_dataset(
        cls, dataset, epsilon=None, step_fraction=None, step_size=None, clip_min=0.0, clip_max=1.0
    ):
        """The threat model on a dataset: its standard radius unless `epsilon` is given.

        Args:
            dataset: A key of `keras_lfr.defaults.EPSILON`, e.g. `"mnist"`;
                another name only with `epsilon` given.
            epsilon: The radius; `None` for the dataset's standard one
                (`keras_lfr.defaults.EPSILON`). Defaults to `None`.
            step_fraction: The inner step as a fraction of ε
                (`keras_lfr.defaults.step_size`), used when `step_size` is
                `None`. Defaults to `None`.
            step_size: The inner step; wins over `step_fraction`. Defaults
                to `None` (with no `step_fraction` either: the method's own).
            clip_min: The smallest pixel value. Defaults to `0.0`.
            clip_max: The largest pixel value. Defaults to `1.0`.

        Returns:
            A `ThreatModel` with `dataset` set.

        Raises:
            ValueError: If `epsilon` is `None` and the dataset has no
                standard radius, or a value is invalid.

        Example:

        >>> keras_lfr.ThreatModel.of_dataset("fashion_mnist", step_fraction=1 / 3).step_size
        0.033333
        >>> keras_lfr.ThreatModel.of_dataset("mnist", epsilon=0.2).epsilon
        0.2
        """
        if epsilon is None:
            if dataset not in defaults.EPSILON:
                raise ValueError(
                    f"Invalid value for argument `dataset`. Received: dataset={dataset!r}. "
                    f"Expected one of {sorted(defaults.EPSILON)} (or pass `epsilon` explicitly)."
                )
            epsilon = defaults.EPSILON[dataset]
        if step_size is None and step_fraction is not None:
            step_size = defaults.step_size(epsilon, step_fraction)
        return cls(
            epsilon, clip_min=clip_min, clip_max=clip_max, dataset=dataset, step_size=step_size
        )

    @classmethod
    def of_model(cls, model):
        """The threat model a model was trained at, or `None` when it has none.

        Read from the model's own `threat_model()`: a `keras_lfr.RobustModel`
        gives its method's ε and pixel range (its dataset is unknown); a
        `keras_lfr.zoo.ZooModel` its entry's ε, pixel range and `dataset`.
        The `step_size` is `None`: an attack chooses its own. A
        `RobustModel` trained without a ball (`method="standard"`), a
        `ZooModel` without an entry and any other model give `None`: the
        caller chooses the radius then (e.g. `of_dataset`).

        Args:
            model: A model, or any other object.

        Returns:
            A `ThreatModel`, or `None`.

        Example:

        >>> robust = keras_lfr.wrap(keras_lfr.models.small_cnn(), method="lfr", epsilon=0.2)
        >>> keras_lfr.ThreatModel.of_model(robust).epsilon
        0.2
        """
        threat_model = getattr(model, "threat_model", None)
        ball = threat_model() if callable(threat_model) else {}
        if not isinstance(ball, dict) or ball.get("epsilon") is None:
            return None
        dataset = getattr(model, "dataset", None)
        return cls(
            ball["epsilon"],
            clip_min=ball.get("clip_min", 0.0),
            clip_max=ball.get("clip_max", 1.0),
            dataset=dataset if isinstance(dataset, str) else None,
        )

    @classmethod
    def of_record(cls, record):
        """The threat model of a zoo record (`keras_lfr.zoo.info`).

        Args:
            record: A zoo record: its `dataset`, `threat_model` (`norm`,
                `epsilon`) and the pixel range of its `hyperparameters`
                (`[0, 1]` when they name none).

        Returns:
            A `ThreatModel` with `dataset` set.

        Raises:
            ValueError: If a value is invalid.

        Example:

        >>> threat = keras_lfr.ThreatModel.of_record(keras_lfr.zoo.info("mnist/linf-0.3/lfr-fast"))
        >>> threat.name
        'linf-0.3'
        """
        hyperparameters = record.get("hyperparameters", {})
        return cls(
            record["threat_model"]["epsilon"],
            norm=record["threat_model"]["norm"],
            clip_min=hyperparameters.get("clip_min", 0.0),
            clip_max=hyperparameters.get("clip_max", 1.0),
            dataset=record["dataset"],
        )

    @property
    def name(self):
        """The name in zoo entries' names, RobustBench's way: e.g. `"linf-0.3"`."""
        return f"{self.norm}-{self.epsilon:g}"

    def as_ball(self):
        """The keyword arguments of an attack: `epsilon`, `clip_min` and `clip_max`.

        Returns:
            A dict, e.g. `{"epsilon": 0.3, "clip_min": 0.0, "clip_max": 1.0}`.
        """
        return {"epsilon": self.epsilon, "clip_min": self.clip_min, "clip_max": self.clip_max}

    def as_record(self):
        """The `threat_model` field of a zoo record: `{"norm": ..., "epsilon": ...}`."""
        return {"norm": self.norm, "epsilon": self.epsilon}
