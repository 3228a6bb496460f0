"""What a training run depends on: `TrainConfig`, the named recipes, and what derives from them.

Every setting is one `TrainConfig` field, which is also a `trainers.train`
flag (`trainers.options`). A recipe is a dict of field values; `make` builds a
config from a recipe and explicit fields, the way the command line does. The
radius defaults to the dataset's standard ε and the inner step may be given
as a fraction of ε (`step_fraction`), so a recipe keeps its meaning on every
dataset (`threat_model`, a `keras_lfr.ThreatModel`).

A config is built in one chain of layers, each winning over those before it:

1. the `TrainConfig` field defaults;
2. a recipe, `RECIPES[name]` (`--recipe`, or a study budget's `recipe`);
3. for the study programs only, a budget's fields for one method and dataset
   (`trainers.studies.budgets.Budget.train_fields`: its epochs, steps and
   step, then the changes of the method's variant, `VARIANTS`);
4. explicit fields: the flags given to `trainers.train`, the keywords of
   `make`, or a study's overrides (`Budget.train_config(**overrides)`: the
   seed, verbosity or swept hyperparameters).

`make` applies the layers 2 and 4 (`trainers.train` passes it the flags
given), `Budget.train_config` all four. docs/guide/command-line.md says the
same for the command line.
"""

import dataclasses

import keras_lfr

from .options import data_option, option, parse_hparams

LR_SCHEDULES = ("piecewise", "cosine")
OPTIMIZERS = ("sgd", "adam")
# The architectures `trainers.train` builds (`builders.make_classifier`).
ARCHITECTURES = ("small_cnn", "resnet18")


def _parse_jit(value):
    return {"auto": "auto", "true": True, "false": False}[str(value).lower()]


def _parse_verbose(value):
    return value if value == "auto" else int(value)


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on; each field is also a flag (`trainers.options`)."""

    method: str = option(
        "lfr", "Training objective (docs/methods.md).", choices=keras_lfr.available_methods()
    )
    dataset: str = option("mnist", "tfds dataset: mnist, fashion_mnist or cifar10.")
    architecture: str = option(
        "small_cnn",
        "small_cnn (the LFR paper's MNIST network) or resnet18 (pre-activation ResNet-18, "
        "for 32x32x3 images).",
        choices=list(ARCHITECTURES),
    )
    activation: str = option(
        "relu",
        "Nonlinearity of the hidden layers (relu: the paper's; smooth ones suit LFR's "
        "double backprop).",
        choices=list(keras_lfr.models.ACTIVATIONS),
    )
    epochs: int = option(100, "Training epochs.")
    batch_size: int = option(128, "Global batch size.")
    optimizer: str = option("sgd", "Optimizer (SGD with momentum, Adam).", choices=list(OPTIMIZERS))
    lr: float = option(0.01, "Initial (cosine: peak) learning rate.")
    lr_schedule: str = option(
        "piecewise",
        "piecewise: times --lr_decay_factor after each of --lr_decay_epochs; cosine: "
        "linear warm-up over --lr_warmup_epochs, then cosine decay to 0.",
        choices=list(LR_SCHEDULES),
    )
    lr_decay_epochs: tuple = option(
        (90,), "Epochs after which the learning rate is multiplied by --lr_decay_factor.", item=int
    )
    lr_decay_factor: float = option(0.1, "Learning-rate multiplier at each decay epoch.")
    lr_warmup_epochs: float = option(0.0, "Linear learning-rate warm-up (cosine schedule).")
    momentum: float = option(0.9, "SGD momentum.")
    # Dropout after fc1 of the SmallCNN, the same for every method (like for
    # like): 0, as in the LFR authors' training script (`--drop` defaults to
    # 0). TRADES' own MNIST script uses 0.5 (docs/methods.md, `trades`).
    dropout: float = option(
        0.0,
        "Dropout after fc1 of the SmallCNN, for every method (0: the LFR authors' setting; "
        "TRADES' MNIST script uses 0.5).",
    )
    epsilon_warmup_epochs: float = option(
        0.0, "Epochs over which epsilon and the inner step ramp from 0 to their targets."
    )
    epsilon_warmup_shape: str = option(
        "linear",
        "Shape of the epsilon ramp: linear, or cosine ((1 - cos(pi t)) / 2: slow at both ends).",
        choices=list(keras_lfr.robust_model.WARMUP_SHAPES),
    )
    # The threat model: None means the dataset's standard radius
    # (`keras_lfr.defaults.EPSILON`) and the method's own step (for LFR the
    # paper's MNIST setting: step 0.01, 40 steps, lam 0.02).
    epsilon: float = option(
        None, "Radius of the l-inf ball (default: the dataset's, 0.3 MNIST, 0.1 Fashion-MNIST)."
    )
    step_size: float = option(None, "Inner-maximisation step size (wins over --step_fraction).")
    step_fraction: float = option(
        None, "Inner-maximisation step as a fraction of epsilon (the recipes' way)."
    )
    steps: int = option(None, "Inner-maximisation steps K.")
    lam: float = option(None, "Penalty weight λ (LFR: 0.02, LLR: 0.4).")
    beta: float = option(None, "TRADES KL weight β (default 1).")
    mu: float = option(None, "LLR gradient-alignment weight μ (default 0.3).")
    # Any other hyperparameters of the method, e.g. {"local_weight": 0.1} for ADR.
    hparams: dict = option(
        {},
        "Other method hyperparameters as name=value pairs (see docs/methods.md), e.g. "
        "adr: local_weight, global_weight, entropy_weight, smoothness_weight, layer, base; "
        "lsp: weight, temperature, layer, base; pgd_at: clean_weight; "
        "trades: random_start; lfr: random_start, penalty (paper, scale_free); "
        "awp: base, gamma, warmup_steps (or --awp_gamma with any method).",
        parse=parse_hparams,
        flag_default=[],
    )
    awp_gamma: float = option(0.0, "Adversarial Weight Perturbation size γ; 0 disables it.")
    awp_warmup: int = option(0, "Epochs trained before AWP starts (counted in optimizer steps).")
    jit_compile: object = option(
        "auto", "XLA compilation.", choices=["auto", "true", "false"], parse=_parse_jit
    )
    distribute: str = option("none", "tf.distribute strategy.", choices=["none", "mirrored"])
    mixed_precision: str = option(
        "none",
        "bfloat16: layers compute in bfloat16; logits, losses and penalties stay float32.",
        choices=["none", "bfloat16"],
    )
    export_dir: str = option(None, "SavedModel directory; default <model_dir>/export.")
    train_examples: int = option(None, "Train on the first N training examples only.")
    validation_examples: int = option(
        0,
        "If > 0, hold out the last N training images: train on the others, and report clean "
        "accuracy and the PGD-40 curve on the held-out images instead of the test set.",
    )
    test_examples: int = option(None, "Evaluate on the first N test examples only.")
    attack_eval_examples: int = option(
        0,
        "If > 0, PGD-40 accuracy after every epoch (val_adv_pgd40_accuracy) on the last N "
        "test images, or on the first N held-out images with --validation_examples.",
    )
    seed: int = option(0, "Seed of weights, shuffling and random starts.")
    deterministic: bool = option(False, "Deterministic TensorFlow ops (bitwise-repeatable runs).")
    data_dir: str = data_option("data_dir")
    data_npz: str = data_option("data_npz")
    download: bool = data_option("download")
    verbose: object = option(
        "auto",
        "Keras fit verbosity (2: one line per epoch).",
        choices=["auto", "0", "1", "2"],
        parse=_parse_verbose,
    )


# Named training recipes: `--recipe=NAME` sets these fields (flags given
# explicitly still win). One recipe serves every method and dataset, so that
# comparisons are like for like; docs/RESULTS.md says how each value was chosen.
RECIPES = {
    # Robust MNIST models in under an hour on 2 CPU cores: 20 epochs on all
    # 60,000 images, K = 5 sign steps of ε/3 (0.1 at ε = 0.3; path 5ε/3 > ε),
    # ε and the step ramped from 0 over the first 5 epochs, Adam with 1 epoch
    # of warm-up then cosine decay, bfloat16 layers (float32 losses), no
    # dropout.
    "fast": {
        "epochs": 20,
        "optimizer": "adam",
        "lr": 1e-3,
        "lr_schedule": "cosine",
        "lr_warmup_epochs": 1.0,
        "steps": 5,
        "step_fraction": 1 / 3,
        "epsilon_warmup_epochs": 5.0,
        "mixed_precision": "bfloat16",
        "dropout": 0.0,
    },
}


def make(recipe=None, **fields):
    """A `TrainConfig` from a named recipe and fields that override it.

    Args:
        recipe: A key of `RECIPES`, or `None` for the plain defaults.
            Defaults to `None`.
        **fields: `TrainConfig` fields; they win over the recipe's.

    Returns:
        A `TrainConfig`.

    Raises:
        ValueError: If the recipe is unknown.
    """
    if recipe is not None and recipe not in RECIPES:
        raise ValueError(
            f"Invalid value for argument `recipe`. Received: recipe={recipe!r}. "
            f"Expected one of {sorted(RECIPES)}."
        )
    return TrainConfig(**{**RECIPES.get(recipe, {}), **fields})


def threat_model(config):
    """The `keras_lfr.ThreatModel` a config trains against, with the defaults resolved.

    ε is `config.epsilon`, else the dataset's standard radius; the step is
    `config.step_size`, else `step_fraction · ε`, else `None` (the method's
    own default): `keras_lfr.ThreatModel.of_dataset`.

    Args:
        config: A `TrainConfig`.

    Returns:
        A `keras_lfr.ThreatModel` on `config.dataset`, pixels in [0, 1].

    Raises:
        ValueError: If the dataset has no standard ε and none is given, or
            ε or the step is invalid.
    """
    return keras_lfr.ThreatModel.of_dataset(
        config.dataset,
        config.epsilon,
        step_fraction=config.step_fraction,
        step_size=config.step_size,
    )


def splits(config):
    """The tfds splits a config trains on, evaluates on, and draws the PGD-40 curve from.

    Without `validation_examples` these are the (first `train_examples`)
    training images, the (first `test_examples`) test images and the last
    `attack_eval_examples` test images. With it, the last
    `validation_examples` training images are held out: training uses the
    others, and evaluation and the curve use the held-out images only, so a
    recipe can be chosen without looking at the test set.

    Returns:
        A dict with tfds split strings `train`, `evaluation` and `curve`.

    Raises:
        ValueError: If the held-out images would overlap the training images.
    """
    held_out = config.validation_examples or 0
    if held_out < 0:
        raise ValueError(
            "Invalid value for argument `validation_examples`. Received: "
            f"validation_examples={held_out!r}. Expected an integer >= 0."
        )
    curve = config.attack_eval_examples
    if not held_out:
        train = f"train[:{config.train_examples}]" if config.train_examples else "train"
        test = f"test[:{config.test_examples}]" if config.test_examples else "test"
        return {"train": train, "evaluation": test, "curve": f"test[-{curve}:]"}
    size = keras_lfr.data.dataset_info(config.dataset).train_size
    available = size - held_out
    if config.train_examples and config.train_examples > available or available < 1:
        raise ValueError(
            f"Invalid value for argument `validation_examples`. Received: "
            f"validation_examples={held_out}, with train_examples={config.train_examples}. "
            f"Expected the held-out images and the training images to fit, disjoint, in the "
            f"{size} training images of {config.dataset!r}."
        )
    if curve > held_out:
        raise ValueError(
            f"Invalid value for argument `attack_eval_examples`. Received: "
            f"attack_eval_examples={curve}. Expected at most validation_examples={held_out}: "
            "with a validation split the curve is drawn on held-out images only."
        )
    return {
        "train": f"train[:{config.train_examples or available}]",
        "evaluation": f"train[{available}:]",
        "curve": f"train[{available}:{available + curve}]",
    }


def method_hyperparameters(config):
    """The hyperparameters of the config that the chosen method takes.

    The named fields (`epsilon`, `steps`, `lam`, …) are passed when the method
    takes them, ε and the step resolved by `threat_model`; `hparams` entries
    are always passed (the method rejects names it does not take, naming
    them).
    """
    accepted = keras_lfr.methods.hyperparameter_names(config.method)
    threat = threat_model(config)
    resolved = {"epsilon": threat.epsilon, "step_size": threat.step_size}
    values = {**dataclasses.asdict(config), **resolved}
    named = {k: v for k, v in values.items() if k in accepted and v is not None}
    return {**named, **config.hparams}
