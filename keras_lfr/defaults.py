"""The defaults of keras_lfr: one owner for each dataset's threat model and the paper's setting.

Every method, attack protocol, callback and trainer takes its default radius
and inner step from here, so that a default is changed in one place.

- `EPSILON`: the standard l-inf radius of each dataset in the literature
  (MNIST 0.3, Fashion-MNIST 0.1, CIFAR-10 8/255), on pixels in [0, 1].
  `keras_lfr.ThreatModel.of_dataset` is the one reader of it: a radius
  left out is the dataset's.
- The LFR paper's MNIST setting (Xu et al., ICIP 2020): ε = 0.3, K = 40
  inner steps of 0.01. The methods default to it.
- `step_size(epsilon, fraction)`: inner steps are given as a fraction of ε
  (the paper's 0.01 is ε/30), so that a recipe keeps its meaning when ε
  changes.
"""

EPSILON = {"mnist": 0.3, "fashion_mnist": 0.1, "cifar10": 8 / 255}

# The dataset the methods' defaults are for, and the paper's inner maximisation.
DATASET = "mnist"
PAPER_EPSILON = EPSILON[DATASET]
PAPER_STEP_FRACTION = 1 / 30
PAPER_STEPS = 40


def step_size(epsilon, fraction):
    """The inner step `fraction · epsilon`, rounded to 6 decimals (0.1 · 1/3 → 0.033333).

    Args:
        epsilon: The l-inf radius.
        fraction: The step as a fraction of ε, e.g. `1/30` for the paper's
            0.01 at ε = 0.3.

    Returns:
        A float.
    """
    return round(float(epsilon) * float(fraction), 6)


PAPER_STEP_SIZE = step_size(PAPER_EPSILON, PAPER_STEP_FRACTION)
