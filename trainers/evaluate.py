r"""Evaluates a model's robustness under a named attack protocol.

    python -m trainers.evaluate --weights=../shared/reference/lfr_official_mnist_smallcnn.npz \
        --protocol=paper
    python -m trainers.evaluate --model=/tmp/keras_lfr/model.keras --protocol=strong \
        --examples=1000 --sanity_checks
    python -m trainers.evaluate --weights=... --attacks=pgd40   # one attack, timed

`--model` is a `.keras` file or a SavedModel directory (as written by
`keras_lfr.export`); `--weights` is an `.npz` of SmallCNN weights by layer name.
Prints a markdown table and writes the results as JSON to `--output`.
"""

import dataclasses
import json
import os
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import keras_lfr
from trainers import config as trainer_config
from trainers.config import option

FLAGS = flags.FLAGS


@dataclasses.dataclass
class EvalConfig:
    """What an evaluation depends on; each field is also a flag (`trainers.config`)."""

    model: str = option(None, "A .keras file or a SavedModel directory.")
    weights: str = option(None, "An .npz of SmallCNN weights (alternative to --model).")
    protocol: str = option(
        "paper", "Attack protocol.", choices=list(keras_lfr.evaluation.PROTOCOLS)
    )
    attacks: tuple = option(
        None,
        "Run only these attacks of the protocol (default: all). Paper: fgsm, pgd40, "
        "mi_fgsm, ddn; strong: apgd_ce, apgd_t, square.",
    )
    dataset: str = option("mnist", "tfds dataset.")
    examples: int = option(None, "Evaluate on the first N test examples only.")
    batch_size: int = option(500, "Examples per attack batch.")
    epsilon: float = option(0.3, "l-inf radius of the attacks.")
    queries: int = option(5000, "Square attack queries (strong protocol).")
    data_dir: str = option(
        None, "tfds data directory (default: TFDS_DATA_DIR or ~/tensorflow_datasets)."
    )
    cascade: bool = option(
        False,
        "Run each attack only on the examples still robust (AutoAttack's cascade): the "
        "worst case is the same, faster; per-attack columns become cumulative.",
    )
    sanity_checks: bool = option(False, "Also run the gradient-masking sanity checks.")
    check_examples: int = option(500, "Sanity checks on the first N test images.")
    check_queries: int = option(
        1000, "Square attack queries of the sanity checks (reproduce's budgets: 5000)."
    )
    flatness: bool = option(
        False,
        "Also report the local flatness γ(x, ε) (5 steps of ε/3, best iterate: the fast "
        "budget's setting in reproduce's γ table) and evaluation.confidence (clean CE, logit "
        "margins) on the first min(examples, 1000) test images.",
    )
    verbose: int = option(1, "1 for a progress bar, 0 for none.")


def load_model(config):
    """A callable `(x, training=False) -> logits` from a .keras, SavedModel or .npz.

    A `.keras` model is evaluated in float32 (`keras_lfr.models.to_float32`).
    """
    if (config.model is None) == (config.weights is None):
        raise ValueError(
            "Invalid arguments: pass exactly one of `model` (a .keras file or SavedModel "
            f"directory) and `weights` (an .npz). Received: model={config.model!r}, "
            f"weights={config.weights!r}."
        )
    if config.weights is not None:
        info = keras_lfr.data.dataset_info(config.dataset)
        cnn = keras_lfr.models.small_cnn(info.image_shape, info.num_classes)
        return keras_lfr.models.load_weights_npz(cnn, config.weights)
    if os.path.isdir(config.model):
        served = keras.layers.TFSMLayer(config.model, call_endpoint="serving_default")
        return lambda x, training=False: served(tf.cast(x, tf.float32))["logits"]
    if not os.path.isfile(config.model):
        raise ValueError(
            f"Invalid value for argument `model`. Received: model={config.model!r}. "
            "Expected an existing .keras file or SavedModel directory."
        )
    return load_classifier(config.model)


def test_batch(dataset, count, data_dir=None):
    """The first `count` test images and labels of a dataset, as one batch."""
    test = keras_lfr.data.load(
        dataset, "test", batch_size=count, num_examples=count, data_dir=data_dir
    )
    return next(iter(test))


def load_classifier(path):
    """The classifier of a `.keras` file, unwrapped and computing in float32.

    Attacks then run in float32 even on a model trained with mixed precision.
    """
    model = keras.models.load_model(path)
    if isinstance(model, keras_lfr.RobustModel):
        model = model.unwrap()
    return keras_lfr.models.to_float32(model)


def evaluate(config):
    """Runs the protocol (and optionally the sanity checks) and returns the results."""
    model = load_model(config)
    test = keras_lfr.data.load(
        config.dataset,
        "test",
        batch_size=config.batch_size,
        num_examples=config.examples,
        data_dir=config.data_dir,
    )
    kwargs = {"epsilon": config.epsilon}
    if config.protocol == "strong":
        kwargs["queries"] = config.queries
    start = time.perf_counter()
    chosen = keras_lfr.evaluation.protocol(config.protocol, **kwargs)
    if config.attacks:
        unknown = sorted(set(config.attacks) - set(chosen))
        if unknown:
            raise ValueError(
                f"Invalid value for argument `attacks`. Received: attacks={list(config.attacks)}. "
                f"Expected names from the {config.protocol!r} protocol: {sorted(chosen)}."
            )
        chosen = {name: chosen[name] for name in config.attacks}
    results = keras_lfr.evaluation.robust_accuracy(
        model, test, chosen, cascade=config.cascade, verbose=config.verbose
    )
    seconds = time.perf_counter() - start
    output = {
        "config": dataclasses.asdict(config),
        "results": results,
        "seconds": seconds,
        "examples_per_second": results["examples"] / seconds,
    }
    if config.sanity_checks:
        x, y = test_batch(config.dataset, config.check_examples, config.data_dir)
        checks = keras_lfr.evaluation.sanity_checks(
            model, x, y, epsilon=config.epsilon, queries=config.check_queries
        )
        output["sanity_checks"] = [dataclasses.asdict(c) for c in checks]
    if config.flatness:
        x, y = test_batch(config.dataset, min(config.examples or 1000, 1000), config.data_dir)
        epsilon = config.epsilon
        gamma = keras_lfr.local_flatness(model, x, y, epsilon, epsilon / 3, 5).numpy()
        output["flatness"] = {
            "gamma_mean": float(gamma.mean()),
            "gamma_median": float(np.median(gamma)),
            **keras_lfr.evaluation.confidence(model, x, y),
            "examples": len(gamma),
        }
    return output


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep the progress bar readable
    config = trainer_config.from_flags(EvalConfig)
    try:
        output = evaluate(config)
    except ValueError as error:
        sys.exit(f"error: {error}")
    name = os.path.basename(config.model or config.weights)
    print(keras_lfr.evaluation.markdown_table({name: output["results"]}))
    print(
        f"{output['examples_per_second']:.1f} examples/s "
        f"({output['seconds']:.0f} s for {output['results']['examples']} examples)"
    )
    per_attack = output["results"]["seconds"]
    print("seconds: " + ", ".join(f"{name} {value:.0f}" for name, value in per_attack.items()))
    if "flatness" in output:
        flat = output["flatness"]
        print(
            f"γ(x, {config.epsilon:g}) mean {flat['gamma_mean']:.3f}, median "
            f"{flat['gamma_median']:.3f}; clean CE {flat['clean_ce']:.4f}, median margin "
            f"{flat['margin_median']:.2f}, logit std {flat['logit_std']:.2f} "
            f"({flat['examples']} images)"
        )
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(output, f, indent=2, default=float)


def define_flags():
    """Defines the command-line flags (only when run as a script): `EvalConfig`'s and --output."""
    trainer_config.define_flags(EvalConfig)
    flags.adopt_module_key_flags(trainer_config)  # listed by --helpshort with this module's
    flags.DEFINE_string("output", None, "JSON file for the results.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
