"""Evaluation as functions: what `trainers.evaluate` runs, and what the studies call.

`EvalConfig` holds what an evaluation depends on (each field is also a
`trainers.evaluate` flag); `evaluate` runs one, resumable in chunks
(`chunk_cache`), and `describe` says in one line what it evaluates. The
model loaders (`load_model`, `load_classifier`) and `test_batch` serve the
study programs too (`trainers.studies`).
"""

import dataclasses
import os
import time

import keras
import numpy as np

import keras_lfr
from keras_lfr import _optional, _validation, defaults

from . import runs
from .options import data_option, option


@dataclasses.dataclass
class EvalConfig:
    """What an evaluation depends on; each field is also a flag (`trainers.options`)."""

    model: str = option(None, "A .keras file or a SavedModel directory.")
    weights: str = option(None, "An .npz of SmallCNN weights (alternative to --model).")
    zoo: str = option(
        None,
        "A keras_lfr.zoo entry (alternative to --model), evaluated on its own dataset, ε and "
        "pixel range.",
        choices=keras_lfr.zoo.available(),
    )
    protocol: str = option(
        keras_lfr.evaluation.DEFAULT_PROTOCOL,
        "Attack protocol: "
        + "; ".join(f"{p.name} ({p.summary})" for p in keras_lfr.evaluation.PROTOCOLS.values())
        + ".",
        choices=list(keras_lfr.evaluation.PROTOCOLS),
    )
    attacks: tuple = option(
        None,
        "Run only these attacks of the protocol (default: all). "
        + "; ".join(
            f"{p.name}: {', '.join(p.attack_names)}"
            for p in keras_lfr.evaluation.PROTOCOLS.values()
        )
        + ".",
    )
    dataset: str = option(
        None,
        "tfds dataset (default: the model's: its run's or its zoo entry's, else mnist).",
        choices=sorted(defaults.EPSILON),
    )
    examples: int = option(None, "Evaluate on the first N images only (of the split evaluated).")
    validation_examples: int = option(
        0,
        "If > 0, evaluate on the last N images of the training split (those trainers.train "
        "--validation_examples=N holds out) instead of the test split.",
    )
    batch_size: int = option(500, "Examples per attack batch.")
    epsilon: float = option(
        None,
        "l-inf radius of the attacks (default: the model's training radius, else the "
        "dataset's standard one).",
    )
    queries: int = option(
        5000,
        "Square attack queries (protocols "
        + ", ".join(keras_lfr.evaluation.QUERY_PROTOCOLS)
        + ").",
    )
    data_dir: str = data_option("data_dir")
    data_npz: str = data_option("data_npz")
    download: bool = data_option("download")
    cascade: bool = option(
        True,
        "Run each attack only on the examples still robust (AutoAttack's cascade): the "
        "worst case is the same, faster; per-attack columns are cumulative. --nocascade runs "
        "every attack on every image.",
    )
    precision: str = option(
        "float32",
        "float32, or mixed: every attack but Square searches on a bfloat16 copy of the model "
        "(faster where bfloat16 is), Square in float32, and every point they return is judged "
        "in float32, so an image counts as broken only if float32 confirms it. Mixed can miss "
        "an adversarial example float32 would find: use it for screens, float32 for numbers "
        "you report.",
        choices=list(keras_lfr.evaluation.PRECISIONS),
    )
    sanity_checks: bool = option(False, "Also run the gradient-masking sanity checks.")
    check_examples: int = option(500, "Sanity checks on the first N images (of the split).")
    check_queries: int = option(
        1000, "Square attack queries of the sanity checks (reproduce's budgets: 5000)."
    )
    flatness: bool = option(
        False,
        "Also report the local flatness γ(x, ε) (5 steps of ε/3, best iterate: the fast "
        "budget's setting in reproduce's γ table), evaluation.confidence (clean CE, logit "
        "margins) and keras_lfr.logit_scale_pressure at the flattest points, on the first "
        "min(examples, 1000) images (of the split).",
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


def sources(config):
    """Checks that exactly one of `model`, `weights` and `zoo` is given.

    Raises:
        ValueError: Naming the three and what was received.
    """
    given = [config.model, config.weights, config.zoo]
    if sum(source is not None for source in given) != 1:
        raise ValueError(
            "Invalid arguments: pass exactly one of `model` (a .keras file or SavedModel "
            "directory), `weights` (an .npz) and `zoo` (a keras_lfr.zoo entry's name). "
            f"Received: model={config.model!r}, weights={config.weights!r}, zoo={config.zoo!r}."
        )


def source_name(config):
    """A short name of the model evaluated: its file's, or its zoo entry's."""
    if config.zoo is not None:
        return config.zoo
    return os.path.basename(os.path.normpath(config.model or config.weights))


def _keras_model(config):
    """The model of `--zoo` or of a `.keras` `--model`, as loaded (`None` for other sources)."""
    if config.zoo is not None:
        return keras_lfr.zoo.load(config.zoo)
    if config.model is not None and config.model.endswith(".keras"):
        if os.path.isfile(config.model):
            return keras.models.load_model(config.model)
    return None


def threat_model(config, model=None):
    """The dataset, ε and pixel range to evaluate at, and where each came from.

    Flags win; then, for a keras_lfr `.keras` file, the ε and pixel range of
    its method and the dataset of its run directory; for a zoo entry (or a
    model saved from `keras_lfr.zoo.load`), the entry's dataset, ε and pixel
    range (`keras_lfr.ThreatModel.of_model`); then MNIST and the dataset's
    standard ε on [0, 1] (`keras_lfr.ThreatModel.of_dataset`).

    Args:
        config: An `EvalConfig`.
        model: The model of `--zoo` or of a `.keras` `--model`, when the
            caller has loaded it already. Defaults to `None`: loaded here.

    Returns:
        A dict with `dataset`, `epsilon`, `clip_min`, `clip_max`,
        `trained_epsilon` (the model's training radius, or `None` when
        unknown), `source` (a short phrase per value, for the output) and
        `dataset_known` (`False` when neither the model nor `--dataset`
        named the dataset).

    Raises:
        ValueError: If `--epsilon` or the pixel range is invalid.
    """
    if model is None:
        model = _keras_model(config)
    trained = keras_lfr.ThreatModel.of_model(model)
    dataset = dataset_source = None
    if isinstance(model, keras_lfr.zoo.ZooModel):
        if config.zoo is not None:
            dataset_source, epsilon_origin = "the zoo entry", "the zoo entry's radius"
        else:
            dataset_source = f"the model's zoo entry, {model.entry.get('name')}"
            epsilon_origin = "its zoo entry's radius"
        dataset = model.dataset
    elif isinstance(model, keras_lfr.RobustModel):
        epsilon_origin = "the model's training radius"
    if config.model is not None and config.model.endswith(".keras"):
        run = runs.RunDir.of_model(config.model)
        if run is not None and dataset is None:
            dataset = run.stored_config().get("dataset")
            dataset_source = "the model's run directory"
    if config.dataset is not None:
        dataset, dataset_source = config.dataset, "--dataset"
    elif dataset is None:
        dataset, dataset_source = defaults.DATASET, "default"
    if config.epsilon is not None:
        epsilon, epsilon_source = config.epsilon, "--epsilon"
    elif trained is not None:
        epsilon, epsilon_source = trained.epsilon, epsilon_origin
    else:
        epsilon, epsilon_source = None, f"{dataset}'s standard radius"
    pixels = {} if trained is None else {"clip_min": trained.clip_min, "clip_max": trained.clip_max}
    threat = keras_lfr.ThreatModel.of_dataset(dataset, epsilon, **pixels)
    return {
        "dataset": dataset,
        **threat.as_ball(),
        "trained_epsilon": None if trained is None else trained.epsilon,
        "source": {"dataset": dataset_source, "epsilon": epsilon_source},
        "dataset_known": dataset_source != "default",
    }


def evaluated_images(config, dataset):
    """Which images are evaluated: the test split, or the held-out training images.

    With `validation_examples` = N, the last N images of the training split
    (`train[size - N:]`, `keras_lfr.data.DatasetInfo.train_size`): those that
    `trainers.train --validation_examples=N` never trains on.

    Returns:
        A dict with the tfds split `base` (`"test"` or `"train"`), the
        `offset` of the first image in it, `count` (the images available
        there, `None` for the whole test split) and `split`, the tfds split
        string of the images (e.g. `"test"`, `"train[59000:]"`), as
        `trainers.config.splits` names them.

    Raises:
        ValueError: If `validation_examples` is negative or larger than the
            training split.
    """
    held_out = _validation.non_negative_int("validation_examples", config.validation_examples or 0)
    if not held_out:
        return {"base": "test", "offset": 0, "count": None, "split": "test"}
    size = keras_lfr.data.dataset_info(dataset).train_size
    if held_out >= size:
        raise ValueError(
            "Invalid value for argument `validation_examples`. Received: "
            f"validation_examples={held_out}. Expected fewer than the {size} training images "
            f"of {dataset!r}."
        )
    first = size - held_out
    return {"base": "train", "offset": first, "count": held_out, "split": f"train[{first}:]"}


def validate(config, threat):
    """Checks every argument of an evaluation before anything runs or is written.

    ε and the pixel range were checked when `threat_model` resolved them
    (`keras_lfr.ThreatModel`).

    Raises:
        ValueError: Naming the first invalid argument, the value received and
            what was expected.
    """
    sources(config)
    _validation.one_of("precision", config.precision, keras_lfr.evaluation.PRECISIONS)
    if config.precision != "float32" and config.model and os.path.isdir(config.model):
        raise ValueError(
            f"Invalid value for argument `precision`. Received: precision={config.precision!r} "
            f"with the SavedModel model={config.model!r}. Expected precision='float32': a "
            "SavedModel cannot be copied in bfloat16; evaluate its .keras file instead."
        )
    for name in ("batch_size", "queries", "check_examples", "check_queries"):
        _validation.positive_int(name, getattr(config, name))
    if config.examples is not None:
        _validation.positive_int("examples", config.examples)
    images = evaluated_images(config, threat["dataset"])
    if images["count"] is not None and (config.examples or 0) > images["count"]:
        raise ValueError(
            f"Invalid value for argument `examples`. Received: examples={config.examples}. "
            f"Expected at most validation_examples={images['count']}: the held-out images."
        )
    return images


def chosen_attacks(config, threat):
    """The attacks an evaluation runs: `--protocol`'s, only `--attacks` if given.

    Args:
        config: An `EvalConfig`.
        threat: `threat_model(config, ...)`: the radius and pixel range.

    Returns:
        A dict of name -> attack, in the protocol's order.

    Raises:
        ValueError: If `--attacks` names an attack outside `--protocol`.
    """
    kwargs = {k: threat[k] for k in ("epsilon", "clip_min", "clip_max")}
    if keras_lfr.evaluation.PROTOCOLS[config.protocol].takes_queries:
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
    return chosen


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
    if config.validation_examples:  # other images than the test split's
        settings["validation_examples"] = config.validation_examples
    if config.precision != "float32":  # never mixed with float32's chunks (nor these with it)
        settings["precision"] = config.precision
        settings["search"] = keras_lfr.evaluation.search_plan(
            chosen_attacks(config, threat), config.precision
        )
    if config.data_npz:  # other images, or in another order, than tfds'
        settings["data_npz"] = os.path.abspath(config.data_npz)
    root = os.environ.get("KERAS_LFR_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "keras_lfr"
    )
    name = source_name(config).replace("/", "-")
    label = f"{name}-{config.protocol}"
    return keras_lfr.evaluation.cache_path(
        os.path.join(root, "evaluations"), label, model, settings
    )


def load_model(config, dataset=defaults.DATASET):
    """A callable `(x, training=False) -> logits` from a .keras, SavedModel, .npz or zoo entry.

    A `.keras` model is evaluated in float32 (`keras_lfr.models.to_float32`).
    """
    sources(config)
    if config.zoo is not None:
        return keras_lfr.models.to_float32(keras_lfr.zoo.load(config.zoo))
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
        _optional.tensorflow_module("tensorflow", "Evaluating a SavedModel")
        self.layer = keras.layers.TFSMLayer(path, call_endpoint="serving_default")
        self.weights = self.layer.weights

    def __call__(self, x, training=False):
        return self.layer(keras.ops.cast(x, "float32"))["logits"]


def test_batch(dataset, count, data_dir=None, images=None, data_npz=None):
    """The first `count` test images and labels of a dataset, as one batch.

    With `images` (`evaluated_images`), the first `count` of those instead;
    with `data_npz`, read from that `.npz` (`keras_lfr.data.load`).
    """
    base, first = ("test", 0) if images is None else (images["base"], images["offset"])
    if images is not None and images["count"] is not None:
        count = min(count, images["count"])
    batches = keras_lfr.data.load(
        dataset,
        f"{base}[{first}:{first + count}]",
        batch_size=count,
        shuffle=False,
        data_dir=data_dir,
        data_npz=data_npz,
    )
    return next(iter(batches))


def load_classifier(path):
    """The classifier of a `.keras` file, unwrapped and computing in float32.

    Attacks then run in float32 even on a model trained with mixed precision.
    """
    return as_classifier(keras.models.load_model(path))


def as_classifier(model):
    """A loaded Keras model as the classifier to attack: unwrapped, computing in float32."""
    if isinstance(model, keras_lfr.RobustModel):
        model = model.unwrap()
    return keras_lfr.models.to_float32(model)


# Clean accuracy at most this many times chance (1 / classes) is "near chance".
NEAR_CHANCE = 2.0


def near_chance(accuracy, num_classes):
    """Whether a clean accuracy is near chance: at most `NEAR_CHANCE` / `num_classes`."""
    return accuracy <= NEAR_CHANCE / num_classes


def evaluate(config, log=None):
    """Runs the protocol (and optionally the sanity checks) and returns the results.

    Every argument is checked first (`validate`), the model loaded and the
    dataset found, before any attack runs or any cache folder is made.

    Args:
        config: An `EvalConfig`.
        log: A function called with each line to show before the attacks
            run: what is evaluated (`describe`) and, if the first chunk's
            clean accuracy is near chance, a warning. Defaults to `None`
            (none shown).

    Returns:
        A dict with the `config`, the resolved `protocol`, `precision`, `dataset`,
        `epsilon`, `split` (the tfds split of the images evaluated) and
        `threat_model` (pixel range and where each value came from), the
        `results`, the timing, the `warnings`, for a model in a training
        run's directory that run's configuration (`run`, its `run.json`)
        and, if asked for, the `sanity_checks` and `flatness`.

    Raises:
        ValueError: If an argument is invalid, the model cannot be loaded or
            the dataset is neither prepared nor downloadable.
    """
    log = log or (lambda line: None)
    sources(config)
    loaded = _keras_model(config)  # loaded once: for its threat model, then attacked
    threat = threat_model(config, loaded)
    dataset, epsilon = threat["dataset"], threat["epsilon"]
    images = validate(config, threat)
    chosen = chosen_attacks(config, threat)
    model = load_model(config, dataset) if loaded is None else as_classifier(loaded)
    source = {"data_dir": config.data_dir, "download": config.download, "data_npz": config.data_npz}
    keras_lfr.data.require(dataset, **source)
    if images["count"] is not None:
        total = config.examples or images["count"]
    else:
        total = config.examples or len(keras_lfr.data.load(dataset, "test", batch_size=1, **source))
    header = {
        "protocol": config.protocol,
        "cascade": config.cascade,
        "precision": config.precision,
        **(
            {"search": keras_lfr.evaluation.search_plan(chosen, config.precision)}
            if config.precision != "float32"
            else {}
        ),
        "dataset": dataset,
        "epsilon": epsilon,
        "threat_model": threat,
        "split": images["split"],
        "examples": total,
    }
    log(describe(header))

    def load_chunk(first, stop):
        offset = images["offset"]
        return keras_lfr.data.load(
            dataset,
            f"{images['base']}[{offset + first}:{offset + stop}]",
            batch_size=stop - first,
            shuffle=False,
            **source,
        )

    # Before the attacks: a clean accuracy near chance on the first chunk
    # means the wrong dataset or preprocessing, not a weak model.
    warnings = []
    probe = min(total, config.batch_size)
    x, y = next(iter(load_chunk(0, probe)))
    predicted = np.argmax(np.asarray(model(x, training=False)), axis=-1)
    clean = float(np.mean(predicted == np.asarray(y)))
    classes = keras_lfr.data.dataset_info(dataset).num_classes
    if near_chance(clean, classes):
        warnings.append(
            f"Warning: clean accuracy {clean:.1%} on the first {probe} images is near chance "
            f"({1 / classes:.0%}): the dataset or the preprocessing is probably wrong (is the "
            f"model for another dataset than {dataset}? pass --dataset; are its inputs pixels "
            f"in [{threat['clip_min']:g}, {threat['clip_max']:g}]?)."
        )
        log(warnings[-1])
    cache_dir = chunk_cache(config, threat, model) if config.cache else None
    made = cache_dir is not None and not os.path.exists(cache_dir)
    start, cpu_start = time.perf_counter(), time.process_time()
    try:
        results = keras_lfr.evaluation.resumable_robust_accuracy(
            model,
            load_chunk,
            chosen,
            total,
            chunk_size=config.batch_size,
            cache_dir=cache_dir,
            cascade=config.cascade,
            verbose=config.verbose,
            precision=config.precision,
        )
    except BaseException:
        if made and os.path.isdir(cache_dir) and not os.listdir(cache_dir):
            os.rmdir(cache_dir)  # nothing finished: leave no empty folder behind
        raise
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
    output = {
        "config": dataclasses.asdict(config),
        **header,
        "cache_dir": cache_dir,
        "results": results,
        "warnings": warnings,
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "examples_per_second": results["examples"] / seconds,
    }
    del output["examples"]  # `results["examples"]`
    run = runs.RunDir.of_model(config.model) if config.model else None
    if run is not None:
        # The training run's configuration, so the evaluation alone says what
        # it evaluated (`trainers.studies.compare` groups by it once the run is gone).
        output["run"] = run.stored_config()
    if config.sanity_checks:
        x, y = test_batch(dataset, config.check_examples, config.data_dir, images, config.data_npz)
        # With both kinds of attack, the black-box check reads the protocol just run.
        black_box = None
        black = set(chosen) & set(keras_lfr.evaluation.BLACK_BOX_ATTACKS)
        if black and black != set(chosen):
            black_box = keras_lfr.evaluation.black_box_check(results, cascade=config.cascade)
        checks = keras_lfr.evaluation.sanity_checks(
            model, x, y, epsilon=epsilon, queries=config.check_queries, black_box=black_box
        )
        output["sanity_checks"] = [dataclasses.asdict(c) for c in checks]
    if config.flatness:
        count = min(config.examples or 1000, 1000)
        x, y = test_batch(dataset, count, config.data_dir, images, config.data_npz)
        gamma, points = keras_lfr.local_flatness(
            model, x, y, epsilon, epsilon / 3, 5, return_points=True
        )
        gamma = keras.ops.convert_to_numpy(gamma)
        output["flatness"] = {
            "gamma_mean": float(gamma.mean()),
            "gamma_median": float(np.median(gamma)),
            **keras_lfr.evaluation.confidence(model, x, y),
            "logit_scale_pressure": keras_lfr.logit_scale_pressure(model, x, y, points),
            "examples": len(gamma),
        }
    return output


def describe(output):
    """One line: the protocol, dataset, ε and images used, where they came from, any mismatch.

    Args:
        output: `evaluate`'s output, or the part of it known before the
            attacks run (`protocol`, `cascade`, `dataset`, `epsilon`,
            `threat_model`, optionally `precision`, `search`, `split` and
            `examples`).
    """
    threat = output["threat_model"]
    source = threat["source"]
    line = (
        f"Protocol {output['protocol']}{' (cascade)' if output['cascade'] else ''} on "
        f"{output['dataset']} ({source['dataset']}) at ε = {output['epsilon']:g} "
        f"({source['epsilon']}), pixels in [{threat['clip_min']:g}, {threat['clip_max']:g}]"
    )
    split = output.get("split", "test")
    examples = output.get("examples") or output.get("results", {}).get("examples")
    first = f"the first {examples} " if examples else ""
    if split == "test":
        line += f", on {first}test images."
    else:
        line += (
            f", on {first}held-out training images ({split}: what trainers.train "
            "--validation_examples holds out), not the test split."
        )
    if output.get("precision", "float32") != "float32":
        by_search = {}
        for name, search in output.get("search", {}).items():
            by_search.setdefault(search, []).append(name)
        searches = "; ".join(
            f"{', '.join(names)} in {search}" for search, names in sorted(by_search.items())
        )
        line += f" Mixed precision: the attacks search {searches}; every verdict is float32's."
    trained = threat["trained_epsilon"]
    if trained is not None and abs(trained - output["epsilon"]) > 1e-9:
        line += f" Note: the model was trained at ε = {trained:g}, not {output['epsilon']:g}."
    if not threat.get("dataset_known", True):
        line += (
            f" Note: neither the model nor --dataset names a dataset, so this is "
            f"{output['dataset']}; pass --dataset if the model is for another."
        )
    return line
