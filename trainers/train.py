r"""Trains a classifier with a keras_lfr method, checkpointing and exporting it.

    python -m trainers.train --method=lfr --dataset=mnist --epochs=100

Every epoch is checkpointed to `<model_dir>/backup` and a restarted run with
the same command resumes from the last one; TensorBoard logs go to
`<model_dir>/tensorboard`; the final model is saved as
`<model_dir>/model.keras` and exported as a SavedModel to `--export_dir`
(default `<model_dir>/export`).
"""

import dataclasses
import functools
import json
import os
import sys

import keras
import tensorflow as tf
from absl import app, flags, logging

import keras_lfr

FLAGS = flags.FLAGS


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run depends on; the flags map onto it one to one."""

    method: str = "lfr"
    dataset: str = "mnist"
    epochs: int = 100
    batch_size: int = 128
    lr: float = 0.01
    lr_decay_epochs: tuple = (90,)
    lr_decay_factor: float = 0.1
    momentum: float = 0.9
    # None: the method's default.
    epsilon: float = None
    step_size: float = None
    steps: int = None
    lam: float = None
    beta: float = None
    mu: float = None
    awp_gamma: float = 0.0
    awp_warmup: int = 0
    jit_compile: object = "auto"
    distribute: str = "none"
    mixed_precision: str = "none"
    export_dir: str = None
    train_examples: int = None
    test_examples: int = None
    seed: int = 0
    deterministic: bool = False
    data_dir: str = None
    download: bool = True
    verbose: object = "auto"


def method_hyperparameters(config):
    """The hyperparameters set in the config that the chosen method takes."""
    accepted = keras_lfr.methods.hyperparameter_names(config.method)
    return {k: v for k, v in dataclasses.asdict(config).items() if k in accepted and v is not None}


def learning_rate(config, steps_per_epoch):
    """SGD learning rate: piecewise constant, ×`lr_decay_factor` at each decay epoch."""
    boundaries = [int(e) * steps_per_epoch for e in sorted(config.lr_decay_epochs)]
    if not boundaries:
        return config.lr
    values = [config.lr * config.lr_decay_factor**i for i in range(len(boundaries) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(boundaries, values)


def resume_epoch(backup_dir):
    """The epoch `keras.callbacks.BackupAndRestore` will resume at (0 for a fresh run)."""
    path = os.path.join(backup_dir, "training_metadata.json")
    if not os.path.exists(path):
        return 0
    with open(path) as f:
        return int(json.load(f)["epoch"])


def train_and_evaluate(config, workdir, callbacks=()):
    """Trains, evaluates on the clean test split, saves and exports a model.

    Args:
        config: A `TrainConfig`.
        workdir: Directory for checkpoints (`backup/`), TensorBoard logs
            (`tensorboard/`), `model.keras` and `metrics.json`.
        callbacks: Extra Keras callbacks, e.g.
            `keras_lfr.callbacks.AttackEvaluation`. Defaults to `()`.

    Returns:
        A dict with the `History` of the run (`history`), the clean test
        metrics (`test`) and the paths written (`model_path`, `export_dir`).
    """
    keras.utils.set_random_seed(config.seed)
    if config.deterministic:
        tf.config.experimental.enable_op_determinism()
    os.makedirs(workdir, exist_ok=True)
    backup_dir = os.path.join(workdir, "backup")
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
        initial_epoch=resume_epoch(backup_dir),
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
            dtype="mixed_bfloat16" if config.mixed_precision == "bfloat16" else None,
        )
        model = keras_lfr.wrap(
            cnn,
            method=config.method,
            seed=config.seed,
            awp_gamma=config.awp_gamma,
            awp_warmup=config.awp_warmup,
            **method_hyperparameters(config),
        )
        model.compile(
            optimizer=keras.optimizers.SGD(
                learning_rate(config, steps_per_epoch), momentum=config.momentum
            ),
            metrics=["accuracy"],
            jit_compile=config.jit_compile,
        )
    callbacks = [
        *callbacks,
        keras.callbacks.BackupAndRestore(backup_dir),
        keras.callbacks.TensorBoard(os.path.join(workdir, "tensorboard")),
    ]
    history = model.fit(
        train,
        epochs=config.epochs,
        steps_per_epoch=steps_per_epoch,
        validation_data=test,
        callbacks=callbacks,
        shuffle=False,
        verbose=config.verbose,
    )
    test_metrics = model.evaluate(test, return_dict=True, verbose=0)
    model_path = os.path.join(workdir, "model.keras")
    model.save(model_path)
    export_dir = config.export_dir or os.path.join(workdir, "export")
    keras_lfr.export(model, export_dir)
    result = {
        "config": dataclasses.asdict(config),
        "history": history.history,
        "test": test_metrics,
        "model_path": model_path,
        "export_dir": export_dir,
    }
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(result, f, indent=2, default=float)
    return result


def config_from_flags():
    """Builds a `TrainConfig` from the parsed absl flags."""
    jit = {"auto": "auto", "true": True, "false": False}[FLAGS.jit_compile]
    return TrainConfig(
        method=FLAGS.method,
        dataset=FLAGS.dataset,
        epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size,
        lr=FLAGS.lr,
        lr_decay_epochs=tuple(int(e) for e in FLAGS.lr_decay_epochs),
        lr_decay_factor=FLAGS.lr_decay_factor,
        momentum=FLAGS.momentum,
        epsilon=FLAGS.epsilon,
        step_size=FLAGS.step_size,
        steps=FLAGS.steps,
        lam=FLAGS.lam,
        beta=FLAGS.beta,
        mu=FLAGS.mu,
        awp_gamma=FLAGS.awp_gamma,
        awp_warmup=FLAGS.awp_warmup,
        jit_compile=jit,
        distribute=FLAGS.distribute,
        mixed_precision=FLAGS.mixed_precision,
        export_dir=FLAGS.export_dir,
        train_examples=FLAGS.train_examples,
        test_examples=FLAGS.test_examples,
        seed=FLAGS.seed,
        deterministic=FLAGS.deterministic,
        data_dir=FLAGS.data_dir,
        download=FLAGS.download,
    )


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep the progress bar readable
    try:
        result = train_and_evaluate(config_from_flags(), FLAGS.model_dir)
    except (ValueError, FloatingPointError) as error:
        sys.exit(f"error: {error}")
    print(f"Clean test metrics: {result['test']}")
    print(f"Saved {result['model_path']}; exported SavedModel to {result['export_dir']}")


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_string("method", "lfr", "Training objective (see keras_lfr.available_methods()).")
    flags.DEFINE_string("dataset", "mnist", "tfds dataset: mnist, fashion_mnist or cifar10.")
    flags.DEFINE_integer("epochs", 100, "Training epochs.")
    flags.DEFINE_integer("batch_size", 128, "Global batch size.")
    flags.DEFINE_float("lr", 0.01, "Initial SGD learning rate.")
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
    flags.DEFINE_float("lam", None, "Penalty weight λ (LFR: 0.02, LLR: 4).")
    flags.DEFINE_float("beta", None, "TRADES KL weight β (default 1).")
    flags.DEFINE_float("mu", None, "LLR gradient-alignment weight μ (default 3).")
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
    flags.DEFINE_integer("seed", 0, "Seed of weights, shuffling and random starts.")
    flags.DEFINE_bool(
        "deterministic", False, "Deterministic TensorFlow ops (bitwise-repeatable runs)."
    )
    flags.DEFINE_string("data_dir", None, "tfds data directory (default: $TFDS_DATA_DIR).")
    flags.DEFINE_bool("download", True, "Let tfds download the dataset if it is missing.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
