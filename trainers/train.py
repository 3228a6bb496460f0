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
from trainers import runs

FLAGS = flags.FLAGS


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on; the flags map onto it one to one."""

    method: str = "lfr"
    dataset: str = "mnist"
    epochs: int = 100
    batch_size: int = 128
    optimizer: str = "sgd"
    lr: float = 0.01
    lr_schedule: str = "piecewise"
    lr_decay_epochs: tuple = (90,)
    lr_decay_factor: float = 0.1
    lr_warmup_epochs: float = 0.0
    momentum: float = 0.9
    # Dropout after fc1 of the SmallCNN, the same for every method (like for
    # like): 0, as in the LFR authors' training script (`--drop` defaults to
    # 0). TRADES' own MNIST script uses 0.5 (docs/methods.md, `trades`).
    dropout: float = 0.0
    epsilon_warmup_epochs: float = 0.0
    # None: the method's default.
    epsilon: float = None
    step_size: float = None
    steps: int = None
    lam: float = None
    beta: float = None
    mu: float = None
    # Any other hyperparameters of the method, e.g. {"local_weight": 0.1} for ADR.
    hparams: dict = dataclasses.field(default_factory=dict)
    awp_gamma: float = 0.0
    awp_warmup: int = 0
    jit_compile: object = "auto"
    distribute: str = "none"
    mixed_precision: str = "none"
    export_dir: str = None
    train_examples: int = None
    test_examples: int = None
    attack_eval_examples: int = 0
    seed: int = 0
    deterministic: bool = False
    data_dir: str = None
    download: bool = True
    verbose: object = "auto"


def method_hyperparameters(config):
    """The hyperparameters set in the config that the chosen method takes.

    The named fields (`epsilon`, `steps`, `lam`, …) are passed when the method
    takes them; `hparams` entries are always passed (the method rejects
    names it does not take, naming them).
    """
    accepted = keras_lfr.methods.hyperparameter_names(config.method)
    named = {k: v for k, v in dataclasses.asdict(config).items() if k in accepted and v is not None}
    return {**named, **config.hparams}


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
LR_SCHEDULES = ("piecewise", "cosine")
OPTIMIZERS = ("sgd", "adam")


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
            awp_warmup=config.awp_warmup,
            epsilon_warmup=int(round(config.epsilon_warmup_epochs * steps_per_epoch)),
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
    spent = state["history"].get("wall_time", [0.0])[-1] if state else 0.0
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
    jit = {"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile]
    config = TrainConfig(
        method=FLAGS.method,
        dataset=FLAGS.dataset,
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size,
        optimizer=FLAGS.optimizer,
        lr=FLAGS.lr,
        lr_schedule=FLAGS.lr_schedule,
        lr_decay_epochs=tuple(int(e) for e in FLAGS.lr_decay_epochs),
        lr_decay_factor=FLAGS.lr_decay_factor,
        lr_warmup_epochs=FLAGS.lr_warmup_epochs,
        momentum=FLAGS.momentum,
        dropout=FLAGS.dropout,
        epsilon_warmup_epochs=FLAGS.epsilon_warmup_epochs,
        epsilon=FLAGS.epsilon,
        step_size=FLAGS.step_size,
        steps=FLAGS.steps,
        lam=FLAGS.lam,
        beta=FLAGS.beta,
        mu=FLAGS.mu,
        hparams=parse_hparams(FLAGS.hparams),
        awp_gamma=FLAGS.awp_gamma,
        awp_warmup=FLAGS.awp_warmup,
        jit_compile=jit,
        distribute=FLAGS.distribute,
        mixed_precision=FLAGS.mixed_precision,
        export_dir=FLAGS.export_dir,
        train_examples=FLAGS.train_examples,
        test_examples=FLAGS.test_examples,
        attack_eval_examples=FLAGS.attack_eval_examples,
        seed=FLAGS.seed,
        deterministic=FLAGS.deterministic,
        data_dir=FLAGS.data_dir,
        download=FLAGS.download,
        verbose=FLAGS.verbose if FLAGS.verbose == "auto" else int(FLAGS.verbose),
    )
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
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_bool(
        "fresh",
        False,
        "Delete the model_dir's checkpoints and outputs and start over (needed to reuse a "
        "model_dir that holds a different run).",
    )
    flags.DEFINE_enum(
        "method", "lfr", keras_lfr.available_methods(), "Training objective (docs/methods.md)."
    )
    flags.DEFINE_string("dataset", "mnist", "tfds dataset: mnist, fashion_mnist or cifar10.")
    flags.DEFINE_integer("epochs", 100, "Training epochs.")
    flags.DEFINE_enum(
        "recipe",
        None,
        list(RECIPES),
        "A named recipe (e.g. fast: a robust MNIST model in under an hour on 2 CPU "
        "cores); flags given explicitly override its values.",
    )
    flags.DEFINE_integer("batch_size", 128, "Global batch size.")
    flags.DEFINE_enum("optimizer", "sgd", list(OPTIMIZERS), "Optimizer (SGD with momentum, Adam).")
    flags.DEFINE_float("lr", 0.01, "Initial (cosine: peak) learning rate.")
    flags.DEFINE_enum(
        "lr_schedule",
        "piecewise",
        list(LR_SCHEDULES),
        "piecewise: times --lr_decay_factor after each of --lr_decay_epochs; cosine: "
        "linear warm-up over --lr_warmup_epochs, then cosine decay to 0.",
    )
    flags.DEFINE_float("lr_warmup_epochs", 0.0, "Linear learning-rate warm-up (cosine schedule).")
    flags.DEFINE_float(
        "dropout",
        0.0,
        "Dropout after fc1 of the SmallCNN, for every method (0: the LFR authors' setting; "
        "TRADES' MNIST script uses 0.5).",
    )
    flags.DEFINE_float(
        "epsilon_warmup_epochs",
        0.0,
        "Epochs over which epsilon and the inner step ramp linearly from 0 to their targets.",
    )
    flags.DEFINE_list(
        "lr_decay_epochs",
        ["90"],
        "Epochs after which the learning rate is multiplied by --lr_decay_factor.",
    )
    flags.DEFINE_float("lr_decay_factor", 0.1, "Learning-rate multiplier at each decay epoch.")
    flags.DEFINE_float("momentum", 0.9, "SGD momentum.")
    # Method hyperparameters: unset means the method's own default (for LFR the
    # paper's MNIST setting: epsilon 0.3, step 0.01, 40 steps, lam 0.02).
    flags.DEFINE_float("epsilon", None, "Radius of the l-inf ball.")
    flags.DEFINE_float("step_size", None, "Inner-maximisation step size.")
    flags.DEFINE_integer("steps", None, "Inner-maximisation steps K.")
    flags.DEFINE_float("lam", None, "Penalty weight λ (LFR: 0.02, LLR: 0.4).")
    flags.DEFINE_float("beta", None, "TRADES KL weight β (default 1).")
    flags.DEFINE_float("mu", None, "LLR gradient-alignment weight μ (default 0.3).")
    flags.DEFINE_list(
        "hparams",
        [],
        "Other method hyperparameters as name=value pairs (see docs/methods.md), e.g. "
        "adr: local_weight, global_weight, entropy_weight, smoothness_weight, layer, base; "
        "lsp: weight, temperature, layer, base; pgd_at: clean_weight; "
        "trades, lfr: random_start.",
    )
    flags.DEFINE_float("awp_gamma", 0.0, "Adversarial Weight Perturbation size γ; 0 disables it.")
    flags.DEFINE_integer("awp_warmup", 0, "Epochs before AWP starts.")
    flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"], "XLA compilation.")
    flags.DEFINE_enum("distribute", "none", ["none", "mirrored"], "tf.distribute strategy.")
    flags.DEFINE_enum(
        "mixed_precision",
        "none",
        ["none", "bfloat16"],
        "bfloat16: layers compute in bfloat16; logits, losses and penalties stay float32.",
    )
    flags.DEFINE_string(
        "model_dir", "/tmp/keras_lfr", "Checkpoints, TensorBoard logs and the final model."
    )
    flags.DEFINE_string("export_dir", None, "SavedModel directory; default <model_dir>/export.")
    flags.DEFINE_integer("train_examples", None, "Train on the first N training examples only.")
    flags.DEFINE_integer("test_examples", None, "Evaluate on the first N test examples only.")
    flags.DEFINE_integer(
        "attack_eval_examples",
        0,
        "If > 0, PGD-40 accuracy on the last N test images after every epoch "
        "(val_adv_pgd40_accuracy).",
    )
    flags.DEFINE_integer("seed", 0, "Seed of weights, shuffling and random starts.")
    flags.DEFINE_bool(
        "deterministic", False, "Deterministic TensorFlow ops (bitwise-repeatable runs)."
    )
    flags.DEFINE_string("data_dir", None, "tfds data directory (default: $TFDS_DATA_DIR).")
    flags.DEFINE_bool("download", True, "Let tfds download the dataset if it is missing.")
    flags.DEFINE_enum(
        "verbose", "auto", ["auto", "0", "1", "2"], "Keras fit verbosity (2: one line per epoch)."
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
