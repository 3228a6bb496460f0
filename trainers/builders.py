"""What a `TrainConfig` builds: the classifier, the optimizer and its schedule, the callbacks."""

import contextlib
import functools

import keras

import keras_lfr
from keras_lfr import _optional, _validation, defaults

from . import config as config_lib


def architecture(config):
    """The classifier of a config as `{"name", "kwargs"}`: a `keras_lfr.models` function and
    its arguments (float32), as the zoo's records store it."""
    _validation.one_of("architecture", config.architecture, config_lib.ARCHITECTURES)
    info = keras_lfr.data.dataset_info(config.dataset)
    shape = {
        "input_shape": list(info.image_shape),
        "num_classes": info.num_classes,
        "activation": config.activation,
    }
    if config.architecture == "resnet18":
        return {"name": "preact_resnet18", "kwargs": shape}
    return {"name": "small_cnn", "kwargs": {**shape, "dropout": config.dropout}}


def make_classifier(config):
    """The architecture of a config, for its dataset's image shape and classes.

    `"small_cnn"`: the LFR paper's SmallCNN (with the config's dropout);
    `"resnet18"`: a pre-activation ResNet-18. Layers compute in bfloat16
    under `mixed_precision="bfloat16"` (logits in float32).
    """
    spec = architecture(config)
    kwargs = {**spec["kwargs"], "input_shape": tuple(spec["kwargs"]["input_shape"])}
    dtype = "mixed_bfloat16" if config.mixed_precision == "bfloat16" else None
    return getattr(keras_lfr.models, spec["name"])(**kwargs, dtype=dtype)


def learning_rate(config, steps_per_epoch):
    """The learning rate or `keras.optimizers.schedules` schedule of a config.

    `"piecewise"`: constant `lr`, ×`lr_decay_factor` after each of
    `lr_decay_epochs`. `"cosine"`: linear warm-up from 0 to `lr` over
    `lr_warmup_epochs`, then cosine decay to 0 at the end of training.
    """
    _validation.one_of("lr_schedule", config.lr_schedule, config_lib.LR_SCHEDULES)
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
    _validation.one_of("optimizer", config.optimizer, config_lib.OPTIMIZERS)
    rate = learning_rate(config, steps_per_epoch)
    if config.optimizer == "adam":
        return keras.optimizers.Adam(rate)
    return keras.optimizers.SGD(rate, momentum=config.momentum)


def scope(config):
    """The scope to build the model in: `tf.distribute.MirroredStrategy`'s, or none.

    Raises:
        ImportError: If `distribute="mirrored"` and TensorFlow is not installed.
    """
    if config.distribute == "mirrored":
        tf = _optional.tensorflow_module("tensorflow", "--distribute=mirrored")
        return tf.distribute.MirroredStrategy().scope()
    return contextlib.nullcontext()


def make_model(config, steps_per_epoch):
    """The config's classifier wrapped with its method, compiled.

    Call it inside the distribution strategy's scope.
    """
    model = keras_lfr.wrap(
        make_classifier(config),
        method=config.method,
        seed=config.seed,
        awp_gamma=config.awp_gamma,
        awp_warmup_steps=config.awp_warmup * steps_per_epoch,
        epsilon_warmup=int(round(config.epsilon_warmup_epochs * steps_per_epoch)),
        epsilon_warmup_shape=config.epsilon_warmup_shape,
        **config_lib.method_hyperparameters(config),
    )
    model.compile(
        optimizer=make_optimizer(config, steps_per_epoch),
        metrics=["accuracy"],
        jit_compile=config.jit_compile,
    )
    return model


def attack_evaluation(config):
    """PGD-40 (the paper's attack) at the config's ε after every epoch.

    Uses the last `attack_eval_examples` images of the test split, so that a
    final evaluation on the first test images stays on data the curve never
    looked at, or held-out training images with `validation_examples`
    (`config.splits`). Logged as `val_adv_pgd40_accuracy`.
    """
    epsilon = config_lib.threat_model(config).epsilon
    x, y = next(
        iter(
            keras_lfr.data.load(
                config.dataset,
                config_lib.splits(config)["curve"],
                shuffle=False,
                batch_size=config.attack_eval_examples,
                data_dir=config.data_dir,
                download=config.download,
                data_npz=config.data_npz,
            )
        )
    )
    pgd40 = functools.partial(
        keras_lfr.attacks.pgd,
        epsilon=epsilon,
        step_size=defaults.PAPER_STEP_SIZE,
        steps=defaults.PAPER_STEPS,
        random_start=True,
    )
    return keras_lfr.callbacks.AttackEvaluation(x, y, {"pgd40": pgd40}, batch_size=500)
