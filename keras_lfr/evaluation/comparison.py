"""Paired comparison of two models' per-example verdicts: an exact McNemar test and an interval."""

import math
import statistics

import numpy as np


def flags_to_string(robust):
    """Per-example verdicts (booleans) as a string of `"1"` (robust) and `"0"`."""
    return "".join(np.where(np.asarray(robust, bool), "1", "0"))


def paired_comparison(a, b, confidence=0.95):
    """Compares two models' per-example verdicts on the same images.

    The difference of two robust accuracies measured on the same images is
    decided by the images on which the two disagree: an exact two-sided
    McNemar (sign) test on those discordant images, and a normal confidence
    interval of the difference from the paired variance.

    Args:
        a: Model A's verdicts: booleans, or a string of `"1"`/`"0"` (as in
            `robust_accuracy(..., per_example=True)["per_example"]`).
        b: Model B's, on the same images in the same order.
        confidence: Level of the interval. Defaults to `0.95`.

    Returns:
        A dict with `accuracy_a`, `accuracy_b`, `difference` (A − B),
        `interval` (its confidence interval), `only_a` and `only_b` (images
        robust for one model only), `p_value` (exact McNemar) and `examples`.

    Raises:
        ValueError: If the two have different lengths or are empty.

    Example:

    >>> paired_comparison("1101", "1001")["difference"]
    0.25
    """
    a, b = (_as_verdicts(v) for v in (a, b))
    if len(a) != len(b) or not len(a):
        raise ValueError(
            "Invalid values for arguments `a` and `b`. Received: verdicts of "
            f"{len(a)} and {len(b)} examples. Expected the same, non-zero number of examples."
        )
    n = len(a)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    difference = (only_a - only_b) / n
    # Paired variance of the mean of d_i = a_i - b_i, each in {-1, 0, 1}.
    variance = ((only_a + only_b) / n - difference**2) / n
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * np.sqrt(max(variance, 0.0))
    discordant = only_a + only_b
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1))
    p_value = min(1.0, 2 * tail / 2**discordant) if discordant else 1.0
    return {
        "accuracy_a": float(np.mean(a)),
        "accuracy_b": float(np.mean(b)),
        "difference": float(difference),
        "interval": (float(difference - half), float(difference + half)),
        "only_a": only_a,
        "only_b": only_b,
        "p_value": float(p_value),
        "examples": n,
    }


def _as_verdicts(verdicts):
    if isinstance(verdicts, str):
        return np.frombuffer(verdicts.encode(), np.uint8) == ord("1")
    return np.asarray(verdicts, bool)
