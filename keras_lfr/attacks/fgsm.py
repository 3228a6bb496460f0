"""Fast Gradient Sign Method (Goodfellow, Shlens, Szegedy, ICLR 2015)."""

from keras_lfr.attacks.pgd import pgd


def fgsm(
    model, x, y, *, epsilon, random_start=False, targets=None, clip_min=0.0, clip_max=1.0, seed=0
):
    """One signed-gradient step of size `epsilon` on the cross-entropy.

    x' = clip(x₀ + ε · sign(∇ₓ CE(f(x₀), y)), B∞(x, ε) ∩ [clip_min, clip_max]),
    with x₀ = x (Goodfellow et al., "Explaining and Harnessing Adversarial
    Examples", ICLR 2015) or, with `random_start=True`, x₀ uniform in the
    ball: the variant the LFR authors evaluated with (one PGD step of size ε
    from a random start). Targeted with `targets`: a step down CE(f(x₀), t).

    Args:
        model: A callable returning logits.
        x: Clean inputs.
        y: Integer or one-hot labels.
        epsilon: l-inf radius and step length.
        random_start: Start uniformly in the ball. Defaults to `False`.
        targets: Integer target labels, or `None`. Defaults to `None`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.
        seed: Int or shape-`[2]` int tensor for the random start. Defaults
            to `0`.

    Returns:
        Adversarial inputs with the shape of `x`.

    Raises:
        ValueError: If an argument is out of range.
    """
    return pgd(
        model,
        x,
        y,
        epsilon=epsilon,
        step_size=epsilon,
        steps=1,
        random_start=random_start,
        targets=targets,
        clip_min=clip_min,
        clip_max=clip_max,
        seed=seed,
    )
