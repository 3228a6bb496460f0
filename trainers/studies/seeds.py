r"""Trains the zoo's MNIST commands from several seeds and compares them.

    python -m trainers.studies.seeds                           # runs missing of seeds 0-2; tables
    python -m trainers.studies.seeds --seeds=1 --methods=lfr_cos10_e24
    python -m trainers.studies.seeds --print_commands        # the same runs as separate commands
    python -m trainers.studies.compare results/seeds/*.json  # the tables of the committed results

Each run is one of the zoo's MNIST commands (docs/ZOO.md; `METHODS`: the fast budget's
PGD-AT, TRADES, LFR with its 10-epoch cosine ε ramp over 24 epochs, and LFR +
AWP over 40 epochs, without `trainers.studies.reproduce`'s per-epoch PGD-40
curve) from one seed. It trains in
`--model_dir/<method>_s<seed>` (resuming from its checkpoints), is evaluated
under the zoo's protocol (`keras_lfr.evaluation.RELEASE_PROTOCOL`) on the first
`--examples` test images (resuming from its cached chunks) and its evaluation,
which holds the run's configuration, is written to
`--results_dir/<method>_s<seed>.json`. A run whose evaluation is there is
skipped, so the same command continues where a killed one stopped, and the
committed evaluations make the tables (`trainers.studies.compare`: mean ± std per
method, paired differences over the runs of equal seeds) after the models are
gone. Runs go seed by seed: every method of one seed before the next.
"""

import dataclasses
import glob
import os
import re
import sys

from absl import flags

from keras_lfr import evaluation

from .. import evaluating, options, runs, training
from . import budgets, comparing

FLAGS = flags.FLAGS

# The zoo's MNIST commands: the fast budget's rows without the curve.
BUDGET = dataclasses.replace(budgets.BUDGETS["fast"], curve_examples=0)
METHODS = ("pgd_at", "trades", "lfr_cos10_e24", "lfr_awp_cos10_e40")
DATASET = "mnist"


def _run_name(method, seed):
    """The name of a run's directory and of its evaluation's file: `<method>_s<seed>`."""
    return f"{method}_s{seed}"


def parse_result_path(path):
    """The method and seed of a run's evaluation `.../<method>_s<seed>.json`.

    Raises:
        ValueError: If the file is not named that way.
    """
    match = re.fullmatch(r"(.+)_s(\d+)\.json", os.path.basename(path))
    if match is None:
        raise ValueError(
            f"Invalid value for argument `path`. Received: path={path!r}. "
            "Expected a file named <method>_s<seed>.json."
        )
    return match[1], int(match[2])


def run_dir(model_dir, method, seed):
    """A run's directory: `model_dir/<method>_s<seed>`."""
    return os.path.join(model_dir, _run_name(method, seed))


def result_path(results_dir, method, seed):
    """A run's evaluation: `results_dir/<method>_s<seed>.json`."""
    return os.path.join(results_dir, _run_name(method, seed) + ".json")


def train_command(method, seed, model_dir):
    """The `trainers.train` command that trains one run by itself."""
    return BUDGET.train_command(method, DATASET, run_dir(model_dir, method, seed), seed=seed)


def evaluation_config(model_dir, method, seed, examples, verbose=1):
    """The `trainers.evaluating.EvalConfig` of one run: the zoo protocol on the first `examples`."""
    model = runs.RunDir(run_dir(model_dir, method, seed)).model
    return evaluating.EvalConfig(
        model=model, protocol=evaluation.RELEASE_PROTOCOL, examples=examples, verbose=verbose
    )


def evaluate_command(method, seed, model_dir, results_dir, examples):
    """The `trainers.evaluate` command that evaluates one run by itself."""
    config = evaluation_config(model_dir, method, seed, examples)
    output = result_path(results_dir, method, seed)
    return (
        f"python -m trainers.evaluate --model={config.model} --protocol={config.protocol} "
        f"--examples={examples} --output={output}"
    )


def run_seeds(methods, seeds, model_dir, results_dir, examples=1000, verbose=1):
    """Trains and evaluates every (method, seed) run whose evaluation is missing.

    Args:
        methods: Names from `METHODS`.
        seeds: The seeds, e.g. `(0, 1, 2)`.
        model_dir: Where each run's directory (`<method>_s<seed>`) is made.
        results_dir: Where each run's evaluation is written
            (`<method>_s<seed>.json`, the JSON of `trainers.evaluate --output`).
        examples: Test images of each evaluation, from the first. Defaults to `1000`.
        verbose: Keras verbosity of training, and the evaluation's progress
            bar (shown unless 0). Defaults to `1`.

    Returns:
        The paths of the evaluations of all the runs asked for.

    Raises:
        ValueError: If a method is not one of `METHODS`.
    """
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise ValueError(
            f"Invalid value for argument `methods`. Received: methods={list(methods)}. "
            f"Expected names from {list(METHODS)}."
        )
    os.makedirs(results_dir, exist_ok=True)
    paths = []
    for seed in seeds:
        for method in methods:
            path = result_path(results_dir, method, seed)
            paths.append(path)
            if os.path.exists(path):
                continue
            config = BUDGET.train_config(method, DATASET, seed=seed, verbose=verbose)
            command = train_command(method, seed, model_dir)
            training.train_and_evaluate(config, run_dir(model_dir, method, seed), command=command)
            config = evaluation_config(model_dir, method, seed, examples, verbose=int(verbose > 0))
            output = evaluating.evaluate(config)
            output["command"] = evaluate_command(method, seed, model_dir, results_dir, examples)
            output["train_command"] = command
            runs.write_json(path, output)
    return paths


def main(argv):
    del argv
    seeds = [int(seed) for seed in FLAGS.seeds]
    if FLAGS.print_commands:
        for seed in seeds:
            for method in FLAGS.methods:
                print(train_command(method, seed, FLAGS.model_dir))
                print(
                    evaluate_command(
                        method, seed, FLAGS.model_dir, FLAGS.results_dir, FLAGS.examples
                    )
                )
        return
    run_seeds(
        FLAGS.methods, seeds, FLAGS.model_dir, FLAGS.results_dir, FLAGS.examples, FLAGS.verbose
    )
    # The tables of every evaluation there, these runs' and earlier ones'.
    results = sorted(glob.glob(os.path.join(FLAGS.results_dir, "*.json")))
    print(comparing.tables(results))


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_list("methods", list(METHODS), f"Methods to train, from {', '.join(METHODS)}.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of each method.")
    flags.DEFINE_string("model_dir", "runs/seeds", "Where each run's directory is made.")
    flags.DEFINE_string(
        "results_dir", "results/seeds", "Where each run's evaluation is written (commit it)."
    )
    flags.DEFINE_integer("examples", 1000, "Test images of each evaluation, from the first.")
    flags.DEFINE_integer("verbose", 2, "Keras verbosity of training (0, 1 or 2).")
    flags.DEFINE_bool(
        "print_commands", False, "Print each run's train and evaluate commands and exit."
    )


def run():
    """The `keras-lfr-seeds` console script."""
    define_flags()
    options.run_program(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
