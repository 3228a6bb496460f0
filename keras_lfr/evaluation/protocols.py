"""The attack protocols: one registry of each protocol's attacks, version and query budget."""

import dataclasses
import functools
from collections.abc import Callable

from keras_lfr import _validation, attacks, defaults


def paper_protocol(epsilon=defaults.PAPER_EPSILON, clip_min=0.0, clip_max=1.0):
    """The LFR authors' evaluation (Xu et al., ICIP 2020, Table 1).

    FGSM: one step of size ε from a uniform random start; PGD-40: step 0.01,
    random start; MI-FGSM: 40 steps of 0.01, decay 0.1; DDN: l2, 20
    iterations, no ε (an example is robust when no adversarial is found).

    Args:
        epsilon: The l-inf radius. Defaults to `0.3` (the paper's MNIST).
        clip_min: Smallest pixel value. Defaults to `0.0`.
        clip_max: Largest pixel value. Defaults to `1.0`.

    Returns:
        A dict mapping attack names to functions `(model, x, y) -> x_adv`.
    """
    pixels = {"clip_min": clip_min, "clip_max": clip_max}
    paper_steps = {"step_size": defaults.PAPER_STEP_SIZE, "steps": defaults.PAPER_STEPS}
    return {
        "fgsm": functools.partial(attacks.fgsm, epsilon=epsilon, random_start=True, **pixels),
        "pgd40": functools.partial(
            attacks.pgd, epsilon=epsilon, random_start=True, **paper_steps, **pixels
        ),
        "mi_fgsm": functools.partial(
            attacks.mi_fgsm, epsilon=epsilon, decay=0.1, **paper_steps, **pixels
        ),
        "ddn": functools.partial(attacks.ddn, steps=20, **pixels),
    }


def strong_protocol(epsilon=defaults.PAPER_EPSILON, queries=5000, clip_min=0.0, clip_max=1.0):
    """APGD-CE, APGD-T (targeted DLR, 9 targets) and Square, worst case per example.

    The white-box attacks of AutoAttack (Croce & Hein, ICML 2020) with 100
    iterations each, plus the black-box Square attack with `queries` queries,
    which gradient masking cannot fool, on AutoAttack's fixed p schedule
    (`rescale_schedule=False`).

    Args:
        epsilon: The l-inf radius. Defaults to `0.3` (the paper's MNIST).
        queries: Square attack queries. Defaults to `5000`.
        clip_min: Smallest pixel value. Defaults to `0.0`.
        clip_max: Largest pixel value. Defaults to `1.0`.

    Returns:
        A dict mapping attack names to functions `(model, x, y) -> x_adv`.
    """
    ball = {"epsilon": epsilon, "clip_min": clip_min, "clip_max": clip_max}
    return {
        "apgd_ce": functools.partial(attacks.apgd, steps=100, loss="ce", **ball),
        "apgd_t": functools.partial(attacks.apgd, steps=100, loss="dlr", num_targets=9, **ball),
        "square": functools.partial(
            attacks.square, queries=queries, rescale_schedule=False, **ball
        ),
    }


def autoattack_protocol(epsilon=defaults.PAPER_EPSILON, queries=5000, clip_min=0.0, clip_max=1.0):
    """AutoAttack's `standard` version: APGD-CE, APGD-T, FAB-T and Square, in that order.

    The strong protocol with FAB-T (9 targets, 100 steps; `attacks.fab`)
    between APGD-T and Square, as in AutoAttack (Croce & Hein, ICML 2020).
    Meant to run as a cascade (`robust_accuracy(..., cascade=True)`), each
    attack on the points still robust, as AutoAttack does; its worst case is
    at most the strong protocol's on the same images.

    Args:
        epsilon: The l-inf radius. Defaults to `0.3` (the paper's MNIST).
        queries: Square attack queries. Defaults to `5000`.
        clip_min: Smallest pixel value. Defaults to `0.0`.
        clip_max: Largest pixel value. Defaults to `1.0`.

    Returns:
        A dict mapping attack names to functions `(model, x, y) -> x_adv`.
    """
    strong = strong_protocol(epsilon, queries, clip_min, clip_max)
    ball = {"epsilon": epsilon, "clip_min": clip_min, "clip_max": clip_max}
    return {
        "apgd_ce": strong["apgd_ce"],
        "apgd_t": strong["apgd_t"],
        "fab_t": functools.partial(attacks.fab, steps=100, num_targets=9, **ball),
        "square": strong["square"],
    }


@dataclasses.dataclass(frozen=True)
class Protocol:
    """One named attack protocol: what builds its attacks, its version, whether it takes queries.

    Calling it builds its attacks, like `protocol(name, **kwargs)`.

    Example:

    >>> keras_lfr.evaluation.PROTOCOLS["autoattack"].attack_names
    ('apgd_ce', 'apgd_t', 'fab_t', 'square')
    """

    name: str
    """The protocol's name, e.g. `"autoattack"`."""
    build: Callable[..., dict]
    """`fn(epsilon, ..., clip_min, clip_max) -> {attack name: fn(model, x, y) -> x_adv}`."""
    version: int
    """Recorded with its results (zoo records, `trainers.studies.reproduce`): bump it when its
    attacks change."""
    takes_queries: bool
    """Whether `build` takes `queries`, the Square attack's query budget."""
    summary: str
    """One line for help texts: the attacks, and what the protocol is for."""

    def __call__(self, **kwargs):
        """Builds the protocol's attacks: `build(**kwargs)`."""
        return self.build(**kwargs)

    @property
    def attack_names(self):
        """The names of the protocol's attacks, in the order they run."""
        return tuple(self.build())


PROTOCOLS = {
    p.name: p
    for p in (
        Protocol(
            "paper",
            paper_protocol,
            version=1,
            takes_queries=False,
            summary="the LFR paper's FGSM, PGD-40, MI-FGSM, DDN, which overstates robustness",
        ),
        Protocol(
            "strong",
            strong_protocol,
            version=2,
            takes_queries=True,
            summary="APGD-CE, APGD-T, Square; the honest number",
        ),
        Protocol(
            "autoattack",
            autoattack_protocol,
            version=1,
            takes_queries=True,
            summary="AutoAttack's standard: the strong protocol with FAB-T before Square",
        ),
    )
}
"""Every protocol by name: the one registry that programs, flags and the zoo read."""

DEFAULT_PROTOCOL = "strong"
"""The protocol `trainers.evaluate` runs unless told otherwise."""

RELEASE_PROTOCOL = "autoattack"
"""The protocol of the zoo's records (`keras_lfr.zoo.benchmark`, `trainers.studies.release`):
AutoAttack's standard cascade, the field's reference."""

QUERY_PROTOCOLS = tuple(name for name, p in PROTOCOLS.items() if p.takes_queries)
"""The protocols with a black-box part (Square): those the zoo's records may be evaluated under."""


BLACK_BOX_ATTACKS = ("square",)
"""The protocols' attacks that only query the model's outputs; the others follow its gradients.

Gradient masking can fool the gradient (white-box) attacks, never these, so
`black_box_check` compares the two groups of one protocol."""


def protocol(name, **kwargs):
    """Returns the attacks of a named protocol of `PROTOCOLS`.

    Args:
        name: A key of `PROTOCOLS`: `"paper"`, `"strong"` or `"autoattack"`.
        **kwargs: The protocol's settings: `epsilon`, `clip_min`, `clip_max`
            and, where it `takes_queries`, `queries`.

    Returns:
        A dict mapping attack names to functions `(model, x, y) -> x_adv`.

    Raises:
        ValueError: If `name` is unknown.

    Example:

    >>> sorted(keras_lfr.evaluation.protocol("strong", epsilon=0.1))
    ['apgd_ce', 'apgd_t', 'square']
    """
    _validation.one_of("protocol", name, tuple(PROTOCOLS))
    return PROTOCOLS[name](**kwargs)
