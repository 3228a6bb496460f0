"""Momentum Iterative FGSM (Dong et al., CVPR 2018)."""

from keras_lfr import _validation, ops


def mi_fgsm(
    model,
    x,
    y,
    *,
    epsilon,
    step_size,
    steps,
    decay=1.0,
    targets=None,
    clip_min=0.0,
    clip_max=1.0,
):
    """Iterative FGSM with a momentum of ℓ1-normalised gradients.

    g ← μ·g + ∇ₓ L(x') / ‖∇ₓ L(x')‖₁ and x' ← Π(x' + α·sign(g)) for `steps`
    steps from x, with L = CE(f(x'), y) (or −CE(f(x'), t) with `targets`), μ =
    `decay`, α = `step_size` and Π the projection onto B∞(x, ε) ∩ [clip_min,
    clip_max]. Reference: Dong et al., "Boosting Adversarial Attacks with
    Momentum", CVPR 2018 (μ = 1, α = ε/steps). The LFR authors evaluated with
    40 steps of 0.01 and μ = 0.1.

    Args:
        model: A callable returning logits.
        x: Clean inputs.
        y: Integer or one-hot labels.
        epsilon: l-inf radius.
        step_size: Step α.
        steps: Number of iterations (>= 1).
        decay: Momentum μ (>= 0). Defaults to `1.0`.
        targets: Integer target labels, or `None`. Defaults to `None`.
        clip_min: Smallest valid pixel value. Defaults to `0.0`.
        clip_max: Largest valid pixel value. Defaults to `1.0`.

    Returns:
        Adversarial inputs with the shape of `x`.

    Raises:
        ValueError: If an argument is out of range.
    """
    x, epsilon, clip_min, clip_max = _validation.attack_inputs(x, epsilon, clip_min, clip_max)
    step_size = _validation.non_negative_float("step_size", step_size)
    steps = _validation.positive_int("steps", steps)
    decay = _validation.non_negative_float("decay", decay)
    return ops.ascend(
        ops.attack_loss(model, y, targets),
        x,
        x,
        epsilon=epsilon,
        step_size=step_size,
        steps=steps,
        clip_min=clip_min,
        clip_max=clip_max,
        decay=decay,
    )
