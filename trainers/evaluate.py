r"""Evaluates a model's robustness under a named attack protocol.

    python -m trainers.evaluate --model=/tmp/fast_pgd_at/model.keras --examples=1000
    keras-lfr-evaluate --model=/tmp/fast_pgd_at/model.keras --sanity_checks
    python -m trainers.evaluate --weights=lfr_official_mnist_smallcnn.npz --protocol=paper
    python -m trainers.evaluate --model=... --attacks=apgd_ce   # one attack, timed

By default it runs the strongest protocol (`strong`: APGD-CE, APGD-T and
Square, as a cascade) at the threat model the model was trained for: for a
keras_lfr `.keras` file, the method's ε and pixel range, and the dataset of
its run directory (`run.json` beside `model.keras`); otherwise the dataset's
standard ε (`keras_lfr.defaults`). `--epsilon` and `--dataset` override them,
and the output says which values were used and where they came from.

`--model` is a `.keras` file or a SavedModel directory (as written by
`keras_lfr.export`); `--weights` is an `.npz` of SmallCNN weights by layer name.
Evaluates in chunks of `--batch_size` images, each finished chunk cached
(`chunk_cache`: one folder per model and setting), so the same command
resumes a killed evaluation; prints a progress bar after each chunk, then a
markdown table, and writes the results as JSON to `--output`.
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
from keras_lfr import defaults

from . import options, runs
from .options import option

FLAGS = flags.FLAGS


@dataclasses.dataclass
class EvalConfig:
    """What an evaluation depends on; each field is also a flag (`trainers.options`)."""

    model: str = option(None, "A .keras file or a SavedModel directory.")
    weights: str = option(None, "An .npz of SmallCNN weights (alternative to --model).")
    protocol: str = option(
        "strong",
        "Attack protocol: strong (APGD-CE, APGD-T, Square; the honest number), autoattack "
        "(AutoAttack's standard: the strong protocol with FAB-T before Square) or paper (the "
        "LFR paper's FGSM, PGD-40, MI-FGSM, DDN, which overstates robustness).",
        choices=list(keras_lfr.evaluation.PROTOCOLS),
    )
    attacks: tuple = option(
        None,
        "Run only these attacks of the protocol (default: all). Paper: fgsm, pgd40, "
        "mi_fgsm, ddn; strong: apgd_ce, apgd_t, square; autoattack: apgd_ce, apgd_t, fab_t, "
        "square.",
    )
    dataset: str = option(
        None,
        "tfds dataset (default: the model's run's, else mnist).",
        choices=sorted(defaults.EPSILON),
    )
    examples: int = option(None, "Evaluate on the first N test examples only.")
    batch_size: int = option(500, "Examples per attack batch.")
    epsilon: float = option(
        None,
        "l-inf radius of the attacks (default: the model's training radius, else the "
        "dataset's standard one).",
    )
    queries: int = option(5000, "Square attack queries (strong and autoattack protocols).")
    data_dir: str = option(
        None, "tfds data directory (default: TFDS_DATA_DIR or ~/tensorflow_datasets)."
    )
    cascade: bool = option(
        True,
        "Run each attack only on the examples still robust (AutoAttack's cascade): the "
        "worst case is the same, faster; per-attack columns are cumulative. --nocascade runs "
        "every attack on every image.",
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
    cache_dir: str = option(
        None,
        "Where each finished chunk of --batch_size images saves its counts, so that rerunning "
        "the same command after a kill continues (default: a folder named after the model "
        "and a digest of its weights and these settings under $KERAS_LFR_CACHE_DIR, else "
        "~/.cache/keras_lfr/evaluations).",
    )
    cache: bool = option(True, "Cache finished chunks (--nocache: evaluate everything afresh).")
    verbose: int = option(1, "1 for a progress bar, 0 for none.")


def threat_model(config):
    """The dataset, ε and pixel range to evaluate at, and where each came from.

    Flags win; then, for a keras_lfr `.keras` file, the ε and pixel range of
    its method and the dataset of its run directory; then MNIST and the
    dataset's standard ε on [0, 1].

    Returns:
        A dict with `dataset`, `epsilon`, `clip_min`, `clip_max`,
        `trained_epsilon` (the model's training radius, or `None` when
        unknown) and `source` (a short phrase per value, for the output).
    """
    trained, dataset_source = {}, None
    dataset = config.dataset
    if config.model is not None and config.model.endswith(".keras"):
        if os.path.isfile(config.model):
            model = keras.models.load_model(config.model)
            if isinstance(model, keras_lfr.RobustModel):
                trained = {k: v for k, v in model.threat_model().items() if v is not None}
        run = runs.RunDir.of_model(config.model)
        if run is not None and dataset is None:
            dataset = run.stored_config().get("dataset")
            dataset_source = "the model's run directory"
    if config.dataset is not None:
        dataset_source = "--dataset"
    elif dataset is None:
        dataset, dataset_source = defaults.DATASET, "default"
    if config.epsilon is not None:
        epsilon, epsilon_source = config.epsilon, "--epsilon"
    elif "epsilon" in trained:
        epsilon, epsilon_source = trained["epsilon"], "the model's training radius"
    else:
        epsilon, epsilon_source = defaults.dataset_epsilon(dataset), f"{dataset}'s standard radius"
    return {
        "dataset": dataset,
        "epsilon": float(epsilon),
        "clip_min": float(trained.get("clip_min", 0.0)),
        "clip_max": float(trained.get("clip_max", 1.0)),
        "trained_epsilon": trained.get("epsilon"),
        "source": {"dataset": dataset_source, "epsilon": epsilon_source},
    }


def chunk_cache(config, threat, model):
    """The folder of an evaluation's chunk results: `--cache_dir`, else one per model and setting.

    The default folder is named after the model file and
    `keras_lfr.evaluation.cache_key` of the loaded model's weights and every
    setting the counts depend on, so a retrained model or a changed setting
    never reads another's counts.
    """
    if config.cache_dir:
        return config.cache_dir
    settings = {
        **{
            k: getattr(config, k)
            for k in ("protocol", "attacks", "batch_size", "queries", "cascade")
        },
        **{k: threat[k] for k in ("dataset", "epsilon", "clip_min", "clip_max")},
    }
    key = keras_lfr.evaluation.cache_key(model, settings)
    root = os.environ.get("KERAS_LFR_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_lfr"
    )
    name = os.path.basename(os.path.normpath(config.model or config.weights))
    return os.path.join(root, "evaluations", f"{name}-{config.protocol}-{key}")


def load_model(config, dataset=defaults.DATASET):
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
        info = keras_lfr.data.dataset_info(dataset)
        cnn = keras_lfr.models.small_cnn(info.image_shape, info.num_classes)
        return keras_lfr.models.load_weights_npz(cnn, config.weights)
    if os.path.isdir(config.model):
        return ServedLogits(config.model)
    if not os.path.isfile(config.model):
        raise ValueError(
            f"Invalid value for argument `model`. Received: model={config.model!r}. "
            "Expected an existing .keras file or SavedModel directory."
        )
    return load_classifier(config.model)


class ServedLogits:
    """A SavedModel's `serving_default` as a classifier: `(x, training=False) -> logits`.

    Its `weights` are the SavedModel's variables (which name its cached chunks).
    """

    def __init__(self, path):
        self.layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
        self.weights = self.layer.weights

    def __call__(self, x, training=False):
        return self.layer(tf.cast(x, tf.float32))["logits"]


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
    """Runs the protocol (and optionally the sanity checks) and returns the results.

    Returns:
        A dict with the `config`, the resolved `protocol`, `dataset`,
        `epsilon` and `threat_model` (pixel range and where each value came
        from), the `results`, the timing, for a model in a training run's
        directory that run's configuration (`run`, its `run.json`) and, if
        asked for, the `sanity_checks` and `flatness`.
    """
    threat = threat_model(config)
    dataset, epsilon = threat["dataset"], threat["epsilon"]
    pixels = {"clip_min": threat["clip_min"], "clip_max": threat["clip_max"]}
    kwargs = {"epsilon": epsilon, **pixels}
    if config.protocol in ("strong", "autoattack"):
        kwargs["queries"] = config.queries
    chosen = keras_lfr.evaluation.protocol(config.protocol, **kwargs)
    if config.attacks:
        unknown = sorted(set(config.attacks) - set(chosen))
        if unknown:
            raise ValueError(
                f"Invalid value for argument `attacks`. Received: attacks={list(config.attacks)}. "
                f"Expected names from the {config.protocol!r} protocol: {sorted(chosen)}."
            )
        chosen = {name: chosen[name] for name in config.attacks}
    model = load_model(config, dataset)
    total = config.examples or int(
        keras_lfr.data.load(dataset, "test", batch_size=1, data_dir=config.data_dir)
        .cardinality()
        .numpy()
    )
    cache_dir = chunk_cache(config, threat, model) if config.cache else None

    def load_chunk(first, stop):
        return keras_lfr.data.load(
            dataset, f"test[{first}:{stop}]", batch_size=stop - first, data_dir=config.data_dir
        )

    start, cpu_start = time.perf_counter(), time.process_time()
    results = keras_lfr.evaluation.resumable_robust_accuracy(
        model,
        load_chunk,
        chosen,
        total,
        chunk_size=config.batch_size,
        cache_dir=cache_dir,
        cascade=config.cascade,
        verbose=config.verbose,
    )
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    output = {
        "config": dataclasses.asdict(config),
        "protocol": config.protocol,
        "cascade": config.cascade,
        "dataset": dataset,
        "epsilon": epsilon,
        "threat_model": threat,
        "cache_dir": cache_dir,
        "results": results,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "examples_per_second": results["examples"] / seconds,
    }
    run = runs.RunDir.of_model(config.model) if config.model else None
    if run is not None:
        # The training run's configuration, so the evaluation alone says what
        # it evaluated (`trainers.compare` groups by it once the run is gone).
        output["run"] = run.stored_config()
    if config.sanity_checks:
        x, y = test_batch(dataset, config.check_examples, config.data_dir)
        checks = keras_lfr.evaluation.sanity_checks(
            model, x, y, epsilon=epsilon, queries=config.check_queries
        )
        output["sanity_checks"] = [dataclasses.asdict(c) for c in checks]
    if config.flatness:
        x, y = test_batch(dataset, min(config.examples or 1000, 1000), config.data_dir)
        gamma = keras_lfr.local_flatness(model, x, y, epsilon, epsilon / 3, 5).numpy()
        output["flatness"] = {
            "gamma_mean": float(gamma.mean()),
            "gamma_median": float(np.median(gamma)),
            **keras_lfr.evaluation.confidence(model, x, y),
            "examples": len(gamma),
        }
    return output


def describe(output):
    """One line: the protocol, dataset and ε used, where they came from, and any mismatch."""
    threat = output["threat_model"]
    source = threat["source"]
    line = (
        f"Protocol {output['protocol']}{' (cascade)' if output['cascade'] else ''} on "
        f"{output['dataset']} ({source['dataset']}) at ε = {output['epsilon']:g} "
        f"({source['epsilon']}), pixels in [{threat['clip_min']:g}, {threat['clip_max']:g}]."
    )
    trained = threat["trained_epsilon"]
    if trained is not None and abs(trained - output["epsilon"]) > 1e-9:
        line += f" Note: the model was trained at ε = {trained:g}, not {output['epsilon']:g}."
    return line


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep the progress bar readable
    config = options.from_flags(EvalConfig)
    try:
        output = evaluate(config)
    except ValueError as error:
        sys.exit(f"error: {error}")
    print(describe(output))
    if output["cache_dir"]:
        print(f"Finished chunks are in {output['cache_dir']}: the same command resumes there.")
    name = os.path.basename(config.model or config.weights)
    print(keras_lfr.evaluation.markdown_table({name: output["results"]}))
    print(
        f"{output['examples_per_second']:.1f} examples/s ({output['seconds']:.0f} s, "
        f"{output['cpu_seconds']:.0f} CPU-s for {output['results']['examples']} examples)"
    )
    for timer in ("seconds", "cpu_seconds"):  # summed over the chunks, cached ones included
        per_attack = output["results"].get(timer, {})
        if per_attack:
            print(f"{timer}: " + ", ".join(f"{n} {v:.0f}" for n, v in per_attack.items()))
    if "flatness" in output:
        flat = output["flatness"]
        print(
            f"γ(x, {output['epsilon']:g}) mean {flat['gamma_mean']:.3f}, median "
            f"{flat['gamma_median']:.3f}; clean CE {flat['clean_ce']:.4f}, median margin "
            f"{flat['margin_median']:.2f}, logit std {flat['logit_std']:.2f} "
            f"({flat['examples']} images)"
        )
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(output, f, indent=2, default=float)


def define_flags():
    """Defines the command-line flags (only when run as a script): `EvalConfig`'s and --output."""
    options.define_flags(EvalConfig)
    flags.adopt_module_key_flags(options)  # listed by --helpshort with this module's
    flags.DEFINE_string("output", None, "JSON file for the results.")


def run():
    """The console script `keras-lfr-evaluate`."""
    define_flags()
    app.run(main)


if __name__ == "__main__":
    run()
