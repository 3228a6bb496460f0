"""Signs of gradient masking: sanity checks (Carlini et al., 2019) and clean-input confidence."""

import dataclasses
import functools
import numbers

import keras
import numpy as np

from keras_lfr import attacks, defaults, ops
from keras_lfr.evaluation.protocols import BLACK_BOX_ATTACKS, strong_protocol
from keras_lfr.evaluation.reports import format_checks
from keras_lfr.evaluation.running import _as_logits_fn, correct_under, robust_accuracy


def confidence(model, x, y):
    """How confident a classifier is on clean images: its cross-entropy and logit margins.

    A penalty on the input gradient (LFR's ‖∇ₓ CE‖₁) can be lowered two ways:
    by making the loss saturate over the whole ε-ball (p_y → 1, as adversarial
    training does), or by shrinking the logits, which leaves the model
    unconfident and no more robust. The margin tells the two apart: it grows
    in the first case and shrinks in the second.

    Args:
        model: A Keras model or any callable returning logits.
        x: Test images.
        y: Their labels (integer or one-hot).

    Returns:
        A dict: `"clean_ce"`, the mean cross-entropy; `"margin_median"`, the
        median over images of z_y − max_{j≠y} z_j (negative where the image
        is misclassified); `"logit_std"`, the mean over images of the logits'
        standard deviation.

    Example:

    >>> keras_lfr.evaluation.confidence(cnn, x_test[:200], y_test[:200])
    {'clean_ce': 0.0195, 'margin_median': 10.87, 'logit_std': 5.23}  # the authors' LFR model
    """
    labels = ops.sparse_labels(y)
    logits = keras.ops.cast(_as_logits_fn(model)(x), "float32")
    return {
        "clean_ce": float(keras.ops.mean(ops.cross_entropy(labels, logits))),
        "margin_median": float(np.median(keras.ops.convert_to_numpy(ops.margin(logits, labels)))),
        "logit_std": float(keras.ops.mean(keras.ops.std(logits, axis=1))),
    }


@dataclasses.dataclass
class Check:
    """One sanity check: what was compared, the numbers, and whether it passed."""

    name: str
    """What the check compares, e.g. `"black-box not stronger than white-box"`."""
    passed: bool
    """Whether the model passed it."""
    detail: str
    """The accuracies compared, e.g. `"PGD-40: 97.2%, Square (1000 queries): 94.8%"`."""


BLACK_BOX_CHECK = "black-box not stronger than white-box"
"""The name of the check that `black_box_check` makes."""


def black_box_check(accuracies, *, cascade, tolerance=0.02):
    """Whether a protocol's black-box attack finds much that its white-box attacks miss.

    Gradient masking fools the attacks that follow gradients (APGD-CE,
    APGD-T, FAB-T), not the black-box Square attack. So Square, run after
    them in a cascade, should break few of the images they leave, and run on
    its own, should not beat the strongest of them by much. This reads the
    protocol's own results, so it compares Square with attacks at least as
    strong as the protocol's verdict, not with a weaker reference.

    Args:
        accuracies: Each attack's accuracy by name, in the order the protocol
            ran them: a `robust_accuracy` result, or a zoo record's
            `evaluation["per_attack"]`. It must hold a black-box attack
            (`BLACK_BOX_ATTACKS`) and a white-box one.
        cascade: Whether the accuracies are a cascade's (each after the
            attacks before it, `robust_accuracy(..., cascade=True)`), else
            each attack's own.
        tolerance: The largest accuracy drop allowed from the white-box
            attacks to the black-box one. Defaults to `0.02`.

    Returns:
        A `Check` named `BLACK_BOX_CHECK`.

    Raises:
        ValueError: If `accuracies` lacks a black-box or a white-box attack,
            or, for a cascade, a white-box attack runs after a black-box one.

    Example:

    >>> keras_lfr.evaluation.black_box_check(
    ...     keras_lfr.zoo.info("mnist/linf-0.3/lfr-fast")["evaluation"]["per_attack"], cascade=True)
    Check(name='black-box not stronger than white-box', passed=True,
          detail='after apgd_ce, apgd_t, fab_t: 89.44%, then square: 89.36%')
    """
    # The attacks' accuracies: not the clean one, the worst case or the count.
    names = [
        name
        for name, value in accuracies.items()
        if isinstance(value, numbers.Real) and name not in ("clean", "worst_case", "examples")
    ]
    black = [name for name in names if name in BLACK_BOX_ATTACKS]
    white = [name for name in names if name not in BLACK_BOX_ATTACKS]
    if not black or not white:
        raise ValueError(
            "Invalid value for argument `accuracies`: it needs a black-box attack (one of "
            f"{list(BLACK_BOX_ATTACKS)}) and a white-box one. Received attacks: {names}."
        )
    if cascade:
        if names != white + black:
            raise ValueError(
                "Invalid value for argument `accuracies`: in a cascade the black-box attacks "
                f"must run last. Received the order: {names}."
            )
        white_box, black_box = accuracies[white[-1]], accuracies[black[-1]]
        detail = (
            f"after {', '.join(white)}: {white_box:.2%}, then {', '.join(black)}: {black_box:.2%}"
        )
    else:
        strongest = min(white, key=lambda name: accuracies[name])
        white_box, black_box = accuracies[strongest], min(accuracies[name] for name in black)
        detail = (
            f"strongest white-box, {strongest}: {white_box:.2%}, "
            f"{', '.join(black)}: {black_box:.2%}"
        )
    return Check(BLACK_BOX_CHECK, _at_most(white_box - black_box, tolerance), detail)


def sanity_checks(
    model,
    x,
    y,
    *,
    epsilon=defaults.PAPER_EPSILON,
    step_size=defaults.PAPER_STEP_SIZE,
    steps=defaults.PAPER_STEPS,
    tolerance=0.02,
    queries=1000,
    black_box=None,
    verbose=True,
):
    """Checks for signs of gradient masking (Carlini et al., 2019).

    After "On Evaluating Adversarial Robustness" (Carlini et al., 2019):

    1. accuracy under PGD falls to about 0 (≤ 5%) at ε = the whole pixel
       range, where any image can be reached;
    2. doubling PGD's steps and using 2 restarts lowers accuracy by at most
       `tolerance` (else the attack had not converged);
    3. the black-box Square attack is not stronger than the protocol's
       white-box attacks by more than `tolerance` (else gradients mislead
       them; `black_box_check`);
    4. FGSM (one step) is not stronger than PGD by more than `tolerance`.

    A failed check is printed loudly: it is a likely sign of gradient
    masking, and robustness numbers from gradient attacks alone are then not
    to be trusted.

    Args:
        model: A Keras model or any callable returning logits.
        x: A few hundred test images.
        y: Their labels.
        epsilon: The evaluation radius. Defaults to `0.3`.
        step_size: PGD step. Defaults to `0.01`.
        steps: PGD steps. Defaults to `40`.
        tolerance: Allowed accuracy gap. Defaults to `0.02`.
        queries: Square attack queries. Defaults to `1000`.
        black_box: Check 3, made by `black_box_check` from a protocol
            already run on these images (or on more), e.g. a zoo record's
            evaluation. Defaults to `None`: the strong protocol (APGD-CE,
            APGD-T, then Square with `queries`) runs on `x` as a cascade.
        verbose: Print the report. Defaults to `True`.

    Returns:
        A list of `Check`.
    """
    labels = ops.sparse_labels(y)

    def accuracy(attack, **kwargs):
        return float(np.mean(correct_under(model, functools.partial(attack, **kwargs))(x, labels)))

    pgd = functools.partial(attacks.pgd, epsilon=epsilon, step_size=step_size)
    full = accuracy(attacks.pgd, epsilon=1.0, step_size=0.1, steps=steps)
    base = accuracy(pgd, steps=steps)
    longer = accuracy(pgd, steps=2 * steps, restarts=2)
    one_step = accuracy(attacks.fgsm, epsilon=epsilon)
    if black_box is None:
        strong = strong_protocol(epsilon, queries=queries)
        evaluated = robust_accuracy(model, [(x, labels)], strong, cascade=True, verbose=0)
        black_box = black_box_check(evaluated, cascade=True, tolerance=tolerance)
    results = [
        Check(
            "unbounded attack reaches ~0%",
            _at_most(full, 0.05),
            f"PGD at eps=1.0: {full:.1%} (expected <= 5%)",
        ),
        Check(
            "more steps and restarts add little",
            _at_most(base - longer, tolerance),
            f"PGD-{steps}: {base:.1%}, PGD-{2 * steps} x2 restarts: {longer:.1%}",
        ),
        black_box,
        Check(
            "FGSM not stronger than PGD",
            _at_most(base - one_step, tolerance),
            f"PGD-{steps}: {base:.1%}, FGSM: {one_step:.1%}",
        ),
    ]
    if verbose:
        print(format_checks(results))
    return results


def _at_most(value, limit):
    """`value <= limit` for accuracy differences, free of float round-off.

    0.96 − 0.94 is 0.020000000000000018 in floating point: a gap of exactly
    the tolerance (2 of 100 images at 2%) must pass.
    """
    return value <= limit + 1e-9
