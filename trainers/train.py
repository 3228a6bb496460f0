r"""Trains a classifier with a keras_lfr method, checkpointing and exporting it.

    python -m trainers.train --method=lfr --dataset=mnist --epochs=100

Every epoch is checkpointed to `<model_dir>/checkpoints` and a restarted run
with the same command resumes from the last one (also a finished run given
more `--epochs`); a model_dir holding a different run is refused unless
`--fresh`. TensorBoard logs go to
`<model_dir>/tensorboard`; the final model is saved as
`<model_dir>/model.keras` and exported as a SavedModel to `--export_dir`
(default `<model_dir>/export`).
"""

import dataclasses
import functools
import os
import sys

import keras
import tensorflow as tf
from absl import app, flags, logging

import keras_lfr
from keras_lfr import _validation
from trainers import config as trainer_config
from trainers import runs
from trainers.config import option

FLAGS = flags.FLAGS


def parse_hparams(pairs):
    """Parses `["name=value", ...]` into a dict, values as int, float, bool or string.

    Raises:
        ValueError: If an entry has no `=`.
    """
    parsed = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(
                f"Invalid value for argument `hparams`. Received: {pair!r}. "
                "Expected entries like local_weight=0.1."
            )
        for convert in (int, float):
            try:
                parsed[name] = convert(text)
                break
            except ValueError:
                continue
        else:
            parsed[name] = {"true": True, "false": False}.get(text.lower(), text)
    return parsed


LR_SCHEDULES = ("piecewise", "cosine")
OPTIMIZERS = ("sgd", "adam")


def _parse_jit(value):
    return {"auto": "auto", "true": True, "false": False}[str(value).lower()]


def _parse_verbose(value):
    return value if value == "auto" else int(value)


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on; each field is also a flag (`trainers.config`)."""

    method: str = option(
        "lfr", "Training objective (docs/methods.md).", choices=keras_lfr.available_methods()
    )
    dataset: str = option("mnist", "tfds dataset: mnist, fashion_mnist or cifar10.")
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
        choices=list(keras_lfr.model.WARMUP_SHAPES),
    )
    # Method hyperparameters: None means the method's own default (for LFR the
    # paper's MNIST setting: epsilon 0.3, step 0.01, 40 steps, lam 0.02).
    epsilon: float = option(None, "Radius of the l-inf ball.")
    step_size: float = option(None, "Inner-maximisation step size.")
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
        "trades, lfr: random_start; awp: base, gamma, warmup_steps (or --awp_gamma with "
        "any method).",
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
    test_examples: int = option(None, "Evaluate on the first N test examples only.")
    attack_eval_examples: int = option(
        0,
        "If > 0, PGD-40 accuracy on the last N test images after every epoch "
        "(val_adv_pgd40_accuracy).",
    )
    seed: int = option(0, "Seed of weights, shuffling and random starts.")
    deterministic: bool = option(False, "Deterministic TensorFlow ops (bitwise-repeatable runs).")
    data_dir: str = option(None, "tfds data directory (default: $TFDS_DATA_DIR).")
    download: bool = option(True, "Let tfds download the dataset if it is missing.")
    verbose: object = option(
        "auto",
        "Keras fit verbosity (2: one line per epoch).",
        choices=["auto", "0", "1", "2"],
        parse=_parse_verbose,
    )


def method_hyperparameters(config):
    """The hyperparameters set in the config that the chosen method takes.

    The named fields (`epsilon`, `steps`, `lam`, …) are passed when the method
    takes them; `hparams` entries are always passed (the method rejects
    names it does not take, naming them).
    """
    accepted = keras_lfr.methods.hyperparameter_names(config.method)
    named = {k: v for k, v in dataclasses.asdict(config).items() if k in accepted and v is not None}
    return {**named, **config.hparams}


# Named training recipes: `--recipe=NAME` sets these fields (flags given
# explicitly still win). One recipe serves every method, so that comparisons
# are like for like; docs/RESULTS.md says how each value was chosen.
RECIPES = {
    # Robust MNIST models in under an hour on 2 CPU cores: 20 epochs on all
    # 60,000 images, K = 5 sign steps of 0.1 (path 0.5 > ε = 0.3), ε and the
    # step ramped from 0 over the first 5 epochs, Adam with 1 epoch of
    # warm-up then cosine decay, bfloat16 layers (float32 losses), no dropout.
    "fast": {
        "epochs": 20,
        "optimizer": "adam",
        "lr": 1e-3,
        "lr_schedule": "cosine",
        "lr_warmup_epochs": 1.0,
        "steps": 5,
        "step_size": 0.1,
        "epsilon_warmup_epochs": 5.0,
        "mixed_precision": "bfloat16",
        "dropout": 0.0,
    },
}


def learning_rate(config, steps_per_epoch):
    """The learning rate or `keras.optimizers.schedules` schedule of a config.

    `"piecewise"`: constant `lr`, ×`lr_decay_factor` after each of
    `lr_decay_epochs`. `"cosine"`: linear warm-up from 0 to `lr` over
    `lr_warmup_epochs`, then cosine decay to 0 at the end of training.
    """
    _validation.one_of("lr_schedule", config.lr_schedule, LR_SCHEDULES)
    if config.lr_schedule == "cosine":
        total = config.epochs * steps_per_epoch
        warmup = min(int(round(config.lr_warmup_epochs * steps_per_epoch)), total - 1)
        return keras.optimizers.schedules.CosineDecay(
            0.0 if warmup else config.lr,
            decay_steps=total - warmup,
            warmup_target=config.lr if warmup else None,
            warmup_steps=warmup,
        )
    boundaries = [int(e) * steps_per_epoch for e in sorted(config.lr_decay_epochs)]
    if not boundaries:
        return config.lr
    values = [config.lr * config.lr_decay_factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def make_optimizer(config, steps_per_epoch):
    """SGD with momentum or Adam, with the config's learning-rate schedule."""
    _validation.one_of("optimizer", config.optimizer, OPTIMIZERS)
    rate = learning_rate(config, steps_per_epoch)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    return keras.optimizers.SGD(rate, momentum=config.momentum)


def attack_evaluation(config):
    """PGD-40 (the paper's attack) after every epoch on the last test images.

    Uses the last `attack_eval_examples` images of the test split, so that a
    final evaluation on the first test images stays on data the curve never
    looked at. Logged as `val_adv_pgd40_accuracy`.
    """
    epsilon = config.epsilon if config.epsilon is not None else 0.3
    x, y = next(
        iter(
            keras_lfr.data.load(
                config.dataset,
                f"test[-{config.attack_eval_examples}:]",
                batch_size=config.attack_eval_examples,
                data_dir=config.data_dir,
                download=config.download,
            )
        )
    )
    pgd40 = functools.partial(
        keras_lfr.attacks.pgd, epsilon=epsilon, step_size=0.01, steps=40, random_start=True
    )
    return keras_lfr.callbacks.AttackEvaluation(x, y, {"pgd40": pgd40}, batch_size=500)


def train_and_evaluate(config, workdir, callbacks=(), fresh=False):
    """Trains, evaluates on the clean test split, saves and exports a model.

    The workdir holds one run (`trainers.runs`): rerunning the same config
    continues from the latest checkpoint, also after the run finished (with
    more `epochs` it trains the extra epochs); a different config is refused
    unless `fresh`.

    Args:
        config: A `TrainConfig`.
        workdir: Directory for `run.json`, checkpoints (`checkpoints/`),
            TensorBoard logs (`tensorboard/`), `model.keras` and
            `metrics.json`.
        callbacks: Extra Keras callbacks, e.g.
            `keras_lfr.callbacks.AttackEvaluation`. Defaults to `()`.
        fresh: Delete the workdir's checkpoints and outputs and start over.
            Defaults to `False`.

    Returns:
        A dict with the `History` of the whole run, resumed parts included
        (`history`), the clean test metrics (`test`) and the paths written
        (`model_path`, `export_dir`).

    Raises:
        ValueError: If the workdir holds a different run and `fresh` is
            `False`, or the config is invalid.
    """
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    runs.claim(workdir, config, fresh=fresh)
    initial_epoch, state = runs.latest(workdir)
    if initial_epoch > config.epochs:
        raise ValueError(
            f"The model_dir {workdir!r} holds this run trained for {initial_epoch} epochs, "
            f"more than epochs={config.epochs}. Ask for at least {initial_epoch} epochs, or "
            "pass --fresh (fresh=True) to start over."
        )
    info = keras_lfr.data.dataset_info(config.dataset)
    load = functools.partial(
        keras_lfr.data.load,
        config.dataset,
        batch_size=config.batch_size,
        data_dir=config.data_dir,
        download=config.download,
    )
    test = load("test", num_examples=config.test_examples)
    steps_per_epoch = int(load("train", num_examples=config.train_examples).cardinality())
    # Epoch e is shuffled from (seed, e), so a resumed run sees the same data order.
    train = load(
        "train",
        num_examples=config.train_examples,
        seed=config.seed,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
    )

    strategy = (
        tf.distribute.MirroredStrategy()
        if config.distribute == "mirrored"
        else tf.distribute.get_strategy()
    )
    with strategy.scope():
        cnn = keras_lfr.models.small_cnn(
            info.image_shape,
            info.num_classes,
            dropout=config.dropout,
            dtype="mixed_bfloat16" if config.mixed_precision == "bfloat16" else None,
        )
        model = keras_lfr.wrap(
            cnn,
            method=config.method,
            seed=config.seed,
            awp_gamma=config.awp_gamma,
            awp_warmup_steps=config.awp_warmup * steps_per_epoch,
            epsilon_warmup=int(round(config.epsilon_warmup_epochs * steps_per_epoch)),
            epsilon_warmup_shape=config.epsilon_warmup_shape,
            **method_hyperparameters(config),
        )
        model.compile(
            optimizer=make_optimizer(config, steps_per_epoch),
            metrics=["accuracy"],
            jit_compile=config.jit_compile,
        )
    if config.attack_eval_examples:
        callbacks = [*callbacks, attack_evaluation(config)]
    if state is not None:
        runs.restore(model, state)
    checkpoint = runs.Checkpoint(workdir, history=state and state["history"])
    spent = checkpoint.history.get("wall_time", [0.0])[-1]
    callbacks = [
        keras_lfr.callbacks.WallClock(offset=spent),
        *callbacks,
        checkpoint,
        keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")),
    ]
    if initial_epoch < config.epochs:  # else the run is complete: evaluate and save it
        model.fit(
            train,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_data=test,
            callbacks=callbacks,
            shuffle=False,
            verbose=config.verbose,
        )
    test_metrics = model.evaluate(test, return_dict=True, verbose=0)
    model_path = os.path.join(workdir, "model.keras")
    runs.save_model(model, model_path)
    export_dir = config.export_dir or os.path.join(workdir, "export")
    runs.export(functools.partial(keras_lfr.export, model), export_dir)
    result = {
        "config": dataclasses.asdict(config),
        "history": checkpoint.history,
        "test": test_metrics,
        "model_path": model_path,
        "export_dir": export_dir,
    }
    runs.write_json(os.path.join(workdir, "metrics.json"), result)
    return result


def config_from_flags():
    """Builds a `TrainConfig` from the parsed absl flags.

    With `--recipe`, the recipe's values replace the defaults of the flags
    that were not given on the command line.
    """
    config = trainer_config.from_flags(TrainConfig)
    if FLAGS.recipe:
        recipe = {k: v for k, v in RECIPES[FLAGS.recipe].items() if not FLAGS[k].present}
        config = dataclasses.replace(config, **recipe)
    return config


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep the progress bar readable
    try:
        result = train_and_evaluate(config_from_flags(), FLAGS.model_dir, fresh=FLAGS.fresh)
    except (ValueError, FloatingPointError) as error:
        sys.exit(f"error: {error}")
    print(f"Clean test metrics: {result['test']}")
    print(f"Saved {result['model_path']}; exported SavedModel to {result['export_dir']}")


def define_flags():
    """Defines the command-line flags (only when run as a script): `TrainConfig`'s and the run's."""
    trainer_config.define_flags(TrainConfig)
    flags.adopt_module_key_flags(trainer_config)  # listed by --helpshort with this module's
    flags.DEFINE_enum(
        "recipe",
        None,
        list(RECIPES),
        "A named recipe (e.g. fast: a robust MNIST model in under an hour on 2 CPU "
        "cores); flags given explicitly override its values.",
    )
    flags.DEFINE_string(
        "model_dir", "/tmp/keras_lfr", "Checkpoints, TensorBoard logs and the final model."
    )
    flags.DEFINE_bool(
        "fresh",
        False,
        "Delete the model_dir's checkpoints and outputs and start over (needed to reuse a "
        "model_dir that holds a different run).",
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
