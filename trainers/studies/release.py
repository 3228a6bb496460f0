r"""Releases a trained model into the zoo: weights and record under `keras_lfr/zoo/`.

    python -m trainers.studies.release --model_dir=runs/fast/lfr --name=mnist/linf-0.3/lfr-fast \
        --examples=10000
    keras-lfr-release --model_dir=... --name=... --examples=1000   # a smaller sample
    python -m trainers.studies.release --name=mnist/linf-0.3/lfr-fast --examples=10000  # the entry

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
import sys

from absl import flags, logging

from keras_lfr import ThreatModel, evaluation, zoo

from .. import config as config_lib
from .. import evaluating, options, runs
from ..record import CHECKOUT, TRAINING_FIELDS, hardware, training_record, version_at
from . import leaderboard

FLAGS = flags.FLAGS
# The zoo entries' evaluation results, per chunk of test images and for the
# sanity checks: in the repository, not in the package (`evaluation_dir`).
EVALUATIONS = pathlib.Path(CHECKOUT) / "results" / "zoo"


def evaluation_dir(name):
    """The folder of zoo entry `name`'s evaluation results: `results/zoo/<name>/`."""
    return EVALUATIONS.joinpath(*name.split("/"))


def _sanity_checks(classifier, dataset, epsilon, examples, queries, cache_dir, evaluated):
    """The sanity checks' results as dicts.

    The black-box check is read from the entry's own evaluation
    (`evaluation.black_box_check`), so it follows the evaluation as it grows;
    the others run on the first `examples` test images once per model and
    setting (cached).
    """
    black_box = evaluation.black_box_check(evaluated["per_attack"], cascade=evaluated["cascade"])
    settings = (dataset, examples, epsilon, queries)
    path = evaluation.cache_path(cache_dir, "sanity-checks", classifier, *settings) + ".json"
    if os.path.exists(path):
        results = runs.read_json(path)
    else:
        x, y = evaluating.test_batch(dataset, examples)
        checks = evaluation.sanity_checks(
            classifier, x, y, epsilon=epsilon, queries=queries, black_box=black_box, verbose=False
        )
        results = [dataclasses.asdict(check) for check in checks]
        runs.write_json(path, results)
    fresh = dataclasses.asdict(black_box)
    return [fresh if check["name"] == black_box.name else check for check in results]


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
        classifier = evaluating.load_classifier(runs.RunDir(model_dir).model)
    threat = ThreatModel.of_record(record)
    dataset, epsilon = threat.dataset, threat.epsilon
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
            classifier, dataset, epsilon, check_examples, queries, str(cache_dir), evaluated
        ),
        command=" ".join(
            ["python -m trainers.studies.release"]
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


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    if FLAGS.leaderboard:
        text = leaderboard.markdown([zoo.info(name) for name in zoo.available()])
        begin, end = leaderboard.MARKERS
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
