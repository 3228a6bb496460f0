r"""Releases a trained model into the zoo: weights and record under `keras_lfr/zoo/`.

    python -m trainers.release --model_dir=runs/fast/lfr --name=mnist/linf-0.3/lfr-fast \
        --examples=10000
    keras-lfr-release --model_dir=... --name=... --examples=1000   # a smaller sample
    python -m trainers.release --name=mnist/linf-0.3/lfr-fast --examples=10000  # from the entry

Reads the run directory that `trainers.train` wrote (`trainers.runs.RunDir`:
its configuration, the training part of its record with the command and
time, its model), or, without `--model_dir`, the existing entry's weights
and training record; evaluates the model with `keras_lfr.zoo.benchmark` and
runs the sanity checks, and writes the float32 weights and the record
(validated against `keras_lfr.zoo.SCHEMA`) to the entry's folder. The
evaluation is resumable: its results per chunk of images and the checks'
are kept outside the package, in `results/zoo/<name>/` of the repository
(`evaluation_dir`), so rerunning the same command after a kill continues,
and a release with fewer `--examples` writes the record of what is done. An
evaluation that outlasts a machine is committed that way (weights, partial
record, its results folder) and continued from the entry on the next one.
"""

import dataclasses
import datetime
import os
import pathlib
import re
import subprocess
import sys

from absl import flags, logging

import keras_lfr
from keras_lfr import evaluation, zoo

from . import config as config_lib
from . import evaluate, options, runs

FLAGS = flags.FLAGS
# The repository this module runs from (for its git provenance).
_CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The zoo entries' evaluation results, per chunk of test images and for the
# sanity checks: in the repository, not in the package (`evaluation_dir`).
EVALUATIONS = pathlib.Path(_CHECKOUT) / "results" / "zoo"


def evaluation_dir(name):
    """The folder of zoo entry `name`'s evaluation results: `results/zoo/<name>/`."""
    return EVALUATIONS.joinpath(*name.split("/"))


def _git(*args, root=_CHECKOUT):
    """The output of `git ARGS` in `root` (raises `OSError` or `CalledProcessError`)."""
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout


def commit():
    """The git commit of this checkout (with `+dirty` if it has changes), or `"unknown"`."""
    try:
        head = _git("rev-parse", "HEAD").strip()
        dirty = _git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def version_at(revision, root=None):
    """keras_lfr's version at a git `revision`, or `"unknown"` if git cannot say.

    Args:
        revision: A commit (or any git revision).
        root: The repository. Defaults to `None`: this checkout.

    Returns:
        The `__version__` that `keras_lfr/_version.py` held at `revision`
        (`keras_lfr/__init__.py` at revisions before that file).
    """
    for path in ("keras_lfr/_version.py", "keras_lfr/__init__.py"):
        try:
            source = _git("show", f"{revision}:{path}", root=root or _CHECKOUT)
        except (OSError, subprocess.CalledProcessError):
            continue
        found = re.search(r"^__version__ = [\"']([^\"']+)[\"']", source, re.MULTILINE)
        if found:
            return found.group(1)
    return "unknown"


def hardware():
    """A one-line description of the machine: CPU cores and architecture, GPUs, the framework.

    The framework is the Keras backend's: TensorFlow, or JAX (which needs no
    TensorFlow installed).
    """
    import platform

    if keras_lfr.backend.NAME == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        names = [
            tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus
        ]
        framework = f"TensorFlow {tf.__version__}"
    else:
        import jax

        names = [device.device_kind for device in jax.devices() if device.platform == "gpu"]
        framework = f"JAX {jax.__version__}"
    devices = ", ".join(names) if names else "no GPU"
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), {devices}, {framework}"


def hyperparameters(config):
    """Every hyperparameter of a run's training objective, the method's defaults included.

    The method's full configuration (e.g. TRADES' `beta` when the run left it
    at its default), then AWP's and the ε ramp's settings.
    """
    method = keras_lfr.methods.get_method(
        config.method, **config_lib.method_hyperparameters(config)
    )
    return {
        **method.get_config(),
        "awp_gamma": config.awp_gamma,
        "awp_warmup": config.awp_warmup,
        "epsilon_warmup_epochs": config.epsilon_warmup_epochs,
        "epsilon_warmup_shape": config.epsilon_warmup_shape,
    }


def training_record(config, history, command):
    """What a zoo record says of a training run; `trainers.train` writes it beside the model.

    Args:
        config: The run's `TrainConfig`.
        history: Its cumulative Keras history (with `wall_time`).
        command: The command that trained it.

    Returns:
        A dict with the zoo record's `dataset`, `threat_model`, `method`,
        `hyperparameters`, `architecture` and `training` fields.
    """
    from . import builders

    epsilon, _ = config_lib.threat_model(config)
    return {
        "dataset": config.dataset,
        "threat_model": {"norm": "linf", "epsilon": float(epsilon)},
        "method": config.method,
        "hyperparameters": hyperparameters(config),
        "architecture": builders.architecture(config),
        "training": {
            "command": command,
            "seed": config.seed,
            "epochs": config.epochs,
            "wall_time_minutes": round(history.get("wall_time", [0.0])[-1] / 60, 1),
            "hardware": hardware(),
            "keras_lfr_version": keras_lfr.__version__,
            "commit": commit(),
        },
    }


# The record's fields that describe the training: kept when an entry is evaluated again.
TRAINING_FIELDS = (
    "dataset",
    "threat_model",
    "method",
    "hyperparameters",
    "architecture",
    "training",
)


def _sanity_checks(classifier, dataset, epsilon, examples, queries, cache_dir):
    """The sanity checks' results as dicts, computed once per model and setting (cached)."""
    settings = (dataset, examples, epsilon, queries)
    path = evaluation.cache_path(cache_dir, "sanity-checks", classifier, *settings) + ".json"
    if os.path.exists(path):
        return runs.read_json(path)
    x, y = evaluate.test_batch(dataset, examples)
    checks = evaluation.sanity_checks(
        classifier, x, y, epsilon=epsilon, queries=queries, verbose=False
    )
    results = [dataclasses.asdict(check) for check in checks]
    runs.write_json(path, results)
    return results


def release(
    model_dir,
    name,
    examples=10000,
    command=None,
    check_examples=500,
    queries=5000,
    protocol=evaluation.RELEASE_PROTOCOL,
    training_commit=None,
    verbose=1,
):
    """Evaluates a run's model, or an entry's, and writes it into the zoo as `name`.

    The evaluation's results, per chunk of test images and for the sanity
    checks, are kept in the entry's `evaluation_dir`, so the same command
    resumes after a kill; and releasing with fewer `examples` than planned
    writes a valid record of the images evaluated so far. Committed with the
    entry, that folder lets a later machine continue the evaluation from the
    entry alone (`model_dir=None`).

    Args:
        model_dir: The run directory `trainers.train` wrote; `None` to
            evaluate the model and keep the training record of the existing
            entry `name` (e.g. on more images).
        name: The zoo name, `<dataset>/linf-<ε>/<name>`.
        examples: Test images of the evaluation. Defaults to `10000`.
        command: The training command, when the run directory has no
            training record (runs of older versions). Defaults to `None`.
        check_examples: Images of the sanity checks. Defaults to `500`.
        queries: Square attack queries of the evaluation and the checks.
            Defaults to `5000`.
        protocol: A protocol of `keras_lfr.evaluation.QUERY_PROTOCOLS`
            (`keras_lfr.zoo.benchmark`). Defaults to
            `keras_lfr.evaluation.RELEASE_PROTOCOL`.
        training_commit: The commit that trained the run, when the run
            directory has no training record. Defaults to `None`: this
            checkout's.
        verbose: 1 to print the evaluation's progress. Defaults to `1`.

    Returns:
        The record written.

    Raises:
        ValueError: If the run is incomplete, the name does not match the
            run's dataset and ε, there is no entry `name` to evaluate again,
            or the record is invalid.
    """
    if model_dir is None:
        previous = zoo.info(name)
        record = {field: previous[field] for field in TRAINING_FIELDS}
        classifier = zoo.load(name)
    else:
        record = _training_part(model_dir, command, training_commit)
        classifier = evaluate.load_classifier(runs.RunDir(model_dir).model)
    dataset, epsilon = record["dataset"], record["threat_model"]["epsilon"]
    entry = zoo.entry_dir(name)
    entry.mkdir(parents=True, exist_ok=True)
    cache_dir = evaluation_dir(name)
    cache_dir.mkdir(parents=True, exist_ok=True)
    evaluated = zoo.benchmark(
        classifier,
        dataset,
        epsilon,
        examples,
        protocol=protocol,
        cache_dir=cache_dir,
        queries=queries,
        verbose=verbose,
    )
    evaluated.update(
        sanity_checks=_sanity_checks(
            classifier, dataset, epsilon, check_examples, queries, str(cache_dir)
        ),
        command=" ".join(
            ["python -m trainers.release"]
            + ([f"--model_dir={model_dir}"] if model_dir is not None else [])
            + [f"--name={name}", f"--examples={examples}", f"--check_examples={check_examples}"]
            + [f"--queries={queries}", f"--protocol={protocol}"]
        ),
        hardware=hardware(),
    )
    weights = entry / zoo.WEIGHTS
    if model_dir is not None:
        classifier.save_weights(weights)
    record = {
        "name": name,
        **record,
        "weights": {"file": zoo.WEIGHTS, "sha256": zoo.sha256(weights)},
        "evaluation": evaluated,
        "clean_first_1000": zoo.clean_accuracy(classifier, dataset, 1000),
        "date": datetime.date.today().isoformat(),
    }
    zoo.validate(record)
    runs.write_json(str(entry / zoo.RECORD), record)
    return record


def _training_part(model_dir, command, training_commit):
    """The training fields of a run's zoo record (`TRAINING_FIELDS`), from its directory."""
    run = runs.RunDir(model_dir)
    if not os.path.exists(run.model):
        raise ValueError(
            f"Invalid value for argument `model_dir`. Received: model_dir={model_dir!r}, "
            f"which holds no finished run (no {runs.RunDir.MODEL})."
        )
    if os.path.exists(run.record):
        return runs.read_json(run.record)
    if not command:
        raise ValueError(
            f"The run {model_dir!r} has no {runs.RunDir.RECORD}; pass the command that "
            "trained it (`command`, `--command`)."
        )
    config = config_lib.TrainConfig(**run.stored_config())
    history = run.history()
    # `epochs` may grow between a run's invocations, so run.json omits it.
    config = dataclasses.replace(config, epochs=len(history["loss"]))
    record = training_record(config, history, command)
    if training_commit:
        record["training"].update(
            commit=training_commit, keras_lfr_version=version_at(training_commit)
        )
    return record


# Published AutoAttack accuracies on MNIST at ε = 0.3, the whole test set
# (clean, AutoAttack `standard`), from the AutoAttack leaderboard (Croce &
# Hein, ICML 2020), with the training as published.
PUBLISHED_MNIST = (
    ("Gowal et al. 2020", 99.26, 96.34, "published"),
    ("Zhang et al. 2020a", 98.38, 93.96, "published"),
    ("Gowal et al. 2019", 98.34, 92.83, "published"),
    ("TRADES (Zhang et al. 2019), SmallCNN", 99.48, 92.81, "100 epochs on a GPU"),
    ("Ding et al. 2020", 98.95, 91.40, "published"),
    ("Atzmon et al. 2019", 99.35, 90.85, "published"),
    ("Madry et al. 2018", 98.53, 88.50, "published"),
    ("Jang et al. 2019", 98.47, 87.99, "published"),
    ("Wong et al. 2020 (fast FGSM)", 98.50, 82.93, "published"),
)


def _sample(evaluation):
    """'autoattack, 1000 images (s.e. 0.84 pp)': the protocol, the sample and its standard error."""
    n, robust = evaluation["examples"], evaluation["robust"]
    error = 100 * (robust * (1 - robust) / n) ** 0.5
    return f"{evaluation['protocol']}, {n} images (s.e. {error:.2f} pp)"


def _method(record):
    """'trades + AWP': the record's method, and AWP when it trained with it."""
    awp = record["hyperparameters"].get("awp_gamma", 0.0) > 0
    return record["method"] + (" + AWP" if awp else "")


# `--leaderboard` rewrites the text between these lines of each markdown file.
LEADERBOARD_MARKERS = ("<!-- leaderboard:begin -->", "<!-- leaderboard:end -->")


def leaderboard(records):
    """The zoo's leaderboard in markdown: per dataset and threat model, sorted by robust accuracy.

    On MNIST at ε = 0.3 the published AutoAttack rows stand beside ours;
    each of ours names its protocol and sample, with the standard error of
    its robust accuracy as an estimate from that sample, since a smaller
    sample or a weaker protocol is not directly comparable with AutoAttack
    on all 10,000 images.

    Args:
        records: Zoo records (`keras_lfr.zoo.info`).

    Returns:
        Markdown text.
    """
    groups = {}
    for record in records:
        key = (record["dataset"], zoo.threat_model_name(record["threat_model"]))
        groups.setdefault(key, []).append(record)
    if not groups:
        groups[("mnist", "linf-0.3")] = []
    lines = []
    for (dataset, threat), group in sorted(groups.items()):
        rows = [
            (
                record["evaluation"]["robust"] * 100,
                f"| `{record['name']}` (keras_lfr, {_method(record)}) | "
                f"{record['evaluation']['clean'] * 100:.2f} | "
                f"{record['evaluation']['robust'] * 100:.2f} | "
                f"{_sample(record['evaluation'])} | "
                f"{record['training']['wall_time_minutes']:g} min, "
                f"{record['training']['hardware']} |",
            )
            for record in group
        ]
        if (dataset, threat) == ("mnist", "linf-0.3"):
            rows += [
                (
                    robust,
                    f"| {name} | {clean:.2f} | {robust:.2f} | AutoAttack, 10000 images | "
                    f"{compute} |",
                )
                for name, clean, robust, compute in PUBLISHED_MNIST
            ]
        lines += [
            f"### {dataset}, {threat}",
            "",
            "| model | clean | robust | evaluation | training |",
            "|---|---|---|---|---|",
            *(row for _, row in sorted(rows, key=lambda r: -r[0])),
            "",
        ]
    return "\n".join(lines)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.leaderboard:
        text = leaderboard([zoo.info(name) for name in zoo.available()])
        begin, end = LEADERBOARD_MARKERS
        for path in FLAGS.leaderboard:
            with open(path) as f:
                head, _, rest = f.read().partition(begin)
            with open(path, "w") as f:
                f.write(f"{head}{begin}\n{text}{end}{rest.partition(end)[2]}")
        print(text)
        return
    if not FLAGS.name:
        sys.exit("error: pass --name, with --model_dir for a new entry (or --leaderboard).")
    try:
        record = release(
            FLAGS.model_dir,
            FLAGS.name,
            FLAGS.examples,
            FLAGS.command,
            FLAGS.check_examples,
            FLAGS.queries,
            FLAGS.protocol,
            FLAGS.training_commit,
        )
    except ValueError as error:
        sys.exit(f"error: {options.one_line(error)}")
    evaluated = record["evaluation"]
    print(
        f"Released {record['name']}: clean {evaluated['clean']:.4f}, robust "
        f"{evaluated['robust']:.4f} on {evaluated['examples']} test images "
        f"({evaluated['protocol']} protocol)."
    )


def define_flags():
    """Defines the command-line flags."""
    flags.DEFINE_string(
        "model_dir",
        None,
        "The run directory trainers.train wrote; omit it to evaluate the entry --name again "
        "(e.g. on more images, resuming from its results in results/zoo/).",
    )
    flags.DEFINE_string("name", None, "Zoo name, e.g. mnist/linf-0.3/lfr-fast.")
    flags.DEFINE_integer("examples", 10000, "Test images of the evaluation.")
    flags.DEFINE_integer("check_examples", 500, "Test images of the sanity checks.")
    flags.DEFINE_integer("queries", 5000, "Square attack queries (evaluation and checks).")
    flags.DEFINE_string(
        "training_commit", None, "The commit that trained a run without a training record."
    )
    flags.DEFINE_enum(
        "protocol",
        evaluation.RELEASE_PROTOCOL,
        list(evaluation.QUERY_PROTOCOLS),
        "; ".join(
            f"{name} ({evaluation.PROTOCOLS[name].summary})" for name in evaluation.QUERY_PROTOCOLS
        )
        + ".",
    )
    flags.DEFINE_string(
        "command", None, "The training command, for a run directory without a training record."
    )
    flags.DEFINE_list(
        "leaderboard",
        None,
        "Only rewrite the leaderboard between its markers in these markdown files "
        "(docs/ZOO.md,docs/RESULTS.md) from the zoo's records.",
    )


def run():
    """The console script `keras-lfr-release`."""
    define_flags()
    options.run_program(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
