r"""Reproduces the LFR paper's MNIST experiments: Table 1, Figures 1–2, γ per method.

    python -m trainers.studies.reproduce --budget=paper     # the paper's setting (GPU work)
    python -m trainers.studies.reproduce --budget=fast      # each model in < 1 hour on 2 CPU cores
    python -m trainers.studies.reproduce --budget=fast --dataset=fashion_mnist   # at ε = 0.1
    python -m trainers.studies.reproduce --budget=reduced   # labelled reduced budget, 2 CPU cores

Trains Standard, PGD-AT, TRADES, LLR, LFR, ADR, LSP and the variants
TRADES-AWP, LFR-AWP, PGD-AT, TRADES and LFR with a 10-epoch ε ramp, and LFR
with that ramp, linear or cosine, for 24 epochs (`budgets.VARIANTS`; `--methods` picks some, or
adds the exploratory variants of `budgets.EXPLORATORY` such as
`lfr_lam005`, LFR at λ = 0.05) with the same model, data and train step
(only the objective differs, and the ε ramp and epochs of the ramp
variants), evaluates each under the `"paper"` and `"strong"`
protocols with the gradient-masking sanity checks, estimates the local
flatness γ(x, 0.3) and the clean confidence, and writes a report (between
markers in `docs/RESULTS.md` by default) and the figures (PNG in `docs/images/`).
"""

import dataclasses
import json
import os
import sys
import time

import numpy as np
from absl import flags, logging

import keras_lfr

from .. import evaluating, options, record, runs, training
from . import figures, report
from .budgets import BUDGETS, EXPLORATORY, VARIANTS, Budget

FLAGS = flags.FLAGS
METHODS = ("standard", "pgd_at", "trades", "llr", "lfr", "adr", "lsp", *VARIANTS)
# The rows of the published tables: what `--methods` defaults to.
TABLE_METHODS = tuple(method for method in METHODS if method not in EXPLORATORY)

# The parts' versions: a part made by an older version is evaluated again.
EVALUATION_VERSIONS = {
    "paper": keras_lfr.evaluation.PROTOCOLS["paper"].version,
    "strong": keras_lfr.evaluation.PROTOCOLS["strong"].version,
    "checks": 4,
    "confidence": 1,
}


def evaluate_method(model, budget, dataset="mnist", parts=tuple(EVALUATION_VERSIONS)):
    """Paper and strong protocols, sanity checks, γ(x, ε) and confidence of one model.

    The model is evaluated in float32 (`keras_lfr.models.to_float32`),
    whatever precision it was trained in.

    Args:
        model: The classifier.
        budget: A `Budget` (sample sizes, queries, cascade).
        dataset: `"mnist"` or `"fashion_mnist"`. Defaults to `"mnist"`.
        parts: Which of `"paper"` (with γ), `"strong"`, `"checks"` and
            `"confidence"` (clean CE and logit margins) to run. Defaults to all.

    Returns:
        A dict with the requested parts' results.
    """
    model = keras_lfr.models.to_float32(model)
    epsilon = keras_lfr.ThreatModel.of_dataset(dataset).epsilon

    def test(count):
        return keras_lfr.data.load(dataset, "test", batch_size=500, num_examples=count)

    x, y = evaluating.test_batch(dataset, max(budget.check_examples, budget.gamma_examples))
    result = {}
    if "paper" in parts:
        result["paper"] = keras_lfr.evaluation.robust_accuracy(
            model,
            test(budget.eval_examples),
            keras_lfr.evaluation.protocol("paper", epsilon=epsilon),
            verbose=0,
        )
        gamma = keras_lfr.local_flatness(
            model,
            x[: budget.gamma_examples],
            y[: budget.gamma_examples],
            epsilon,
            budget.step_size(dataset),
            budget.steps,
        )
        result["gamma"] = float(np.mean(gamma))
        result["gamma_median"] = float(np.median(gamma))
    if "confidence" in parts:
        # On γ's images: tells a flat loss (saturated) from shrunk logits.
        result["confidence"] = keras_lfr.evaluation.confidence(
            model, x[: budget.gamma_examples], y[: budget.gamma_examples]
        )
    if "strong" in parts:
        result["strong"] = keras_lfr.evaluation.robust_accuracy(
            model,
            test(budget.strong_examples),
            keras_lfr.evaluation.protocol("strong", epsilon=epsilon, queries=budget.square_queries),
            cascade=budget.cascade,
            verbose=0,
        )
    if "checks" in parts:
        # The black-box check reads the strong protocol when it ran here (else
        # `sanity_checks` runs it on the check images).
        black_box = None
        if "strong" in result:
            black_box = keras_lfr.evaluation.black_box_check(
                result["strong"], cascade=budget.cascade
            )
        result["checks"] = keras_lfr.evaluation.sanity_checks(
            model,
            x[: budget.check_examples],
            y[: budget.check_examples],
            epsilon=epsilon,
            queries=budget.square_queries,
            black_box=black_box,
            verbose=False,
        )
    return result


def reproduce(
    budget_name,
    methods,
    workdir,
    figures_dir=None,
    verbose=0,
    dataset="mnist",
    evaluate_only=False,
    **budget_overrides,
):
    """Trains and evaluates each method; returns the per-method results.

    Args:
        budget_name: A key of `BUDGETS`.
        methods: Method names (a subset of `METHODS`).
        workdir: Directory for each method's checkpoints, model and logs.
        figures_dir: Where to write the PNG figures; `None` for none.
        verbose: Keras verbosity of training. Defaults to `0`.
        dataset: `"mnist"` or `"fashion_mnist"` (ε: `keras_lfr.defaults`).
            Defaults to `"mnist"`.
        evaluate_only: Evaluate the models already trained in `workdir`
            (by this function or by the `trainers.train` commands it
            prints) instead of training. Defaults to `False`.
        **budget_overrides: Fields of the `Budget` to change, e.g.
            `strong_examples` (the report says so).

    Returns:
        A dict: method -> results, plus `"budget"`, `"hardware"` and, with
        figures, `"figures"` (the PNG paths).
    """
    budget = dataclasses.replace(BUDGETS[budget_name], **budget_overrides)
    results = {}
    for method in methods:
        directory = method_dir(workdir, method, dataset)
        if not evaluate_only:
            config = budget.train_config(method, dataset, verbose=verbose)
            command = budget.train_command(method, dataset, directory)
            training.train_and_evaluate(config, directory, command=command)
        results[method] = evaluate_saved(directory, budget, dataset, reuse=evaluate_only)
    output = {
        "methods": results,
        "budget": budget_name,
        "budget_fields": dataclasses.asdict(budget),
        "overrides": budget_overrides,
        "dataset": dataset,
        "hardware": record.hardware(),
    }
    if figures_dir is not None:
        output["figures"] = redraw_figures(budget_name, methods, workdir, figures_dir, dataset)
    return output


def method_dir(workdir, method, dataset="mnist"):
    """Where one method's model lives: `workdir/method` (MNIST) or `workdir/dataset/method`."""
    return (
        os.path.join(workdir, method)
        if dataset == "mnist"
        else os.path.join(workdir, dataset, method)
    )


def evaluate_saved(directory, budget, dataset="mnist", reuse=False):
    """Evaluates the model a training run saved in `directory`; caches the results.

    The results are written to the run's `RunDir.evaluation`. With `reuse`, a
    cached evaluation made under the same budget is returned instead of
    evaluating again (so methods can be evaluated in separate processes and
    reported together).
    """
    run = runs.RunDir(directory)
    cache = run.evaluation
    fields = json.loads(json.dumps(dataclasses.asdict(budget)))
    cached = {}
    if reuse and os.path.exists(cache):
        stored = runs.read_json(cache)
        if stored["budget_fields"] == fields and stored["dataset"] == dataset:
            cached = stored
            cached["checks"] = [keras_lfr.evaluation.Check(**c) for c in cached["checks"]]
    # A cache written before parts had versions holds version 1 of each.
    versions = cached.get("versions", dict.fromkeys(EVALUATION_VERSIONS, 1)) if cached else {}
    stale = tuple(p for p, v in EVALUATION_VERSIONS.items() if versions.get(p) != v)
    if not stale:
        return cached
    history = run.history()
    model = evaluating.load_classifier(run.model)
    start = time.perf_counter()
    result = {
        **{k: v for k, v in cached.items() if k not in ("budget_fields", "dataset", "versions")},
        **evaluate_method(model, budget, dataset, parts=stale),
        "train_seconds": history["wall_time"][-1],
        "history": history,
    }
    # The time of this evaluation: of the stale parts only, when others were reused.
    result["eval_seconds"] = time.perf_counter() - start
    result["evaluated_parts"] = list(stale)
    stored = {**result, "budget_fields": fields, "dataset": dataset}
    runs.write_json(cache, {**stored, "versions": EVALUATION_VERSIONS}, default=_json_default)
    return result


def redraw_figures(budget_name, methods, workdir, figures_dir, dataset="mnist"):
    """Draws the figures from the models a `reproduce` run saved in `workdir`."""
    models, histories = {}, {}
    for m in methods:
        run = runs.RunDir(method_dir(workdir, m, dataset))
        models[m] = evaluating.load_classifier(run.model)
        histories[m] = run.history()
    budget = BUDGETS[budget_name]
    os.makedirs(figures_dir, exist_ok=True)
    # The reduced MNIST run keeps the figure names of the first reports.
    prefix = "" if (budget_name, dataset) == ("reduced", "mnist") else f"{dataset}_{budget_name}_"
    paths = {}
    if budget.curve_examples:
        curve = figures.curve_figure(
            histories, os.path.join(figures_dir, f"{prefix}accuracy_vs_time.png")
        )
        if curve:
            paths["curve"] = curve
    paths.update(
        figures.write_figures(
            models,
            figures_dir,
            budget.figure_resolution,
            budget.figure_candidates,
            dataset,
            prefix,
        )
    )
    return paths


def _json_default(value):
    if dataclasses.is_dataclass(value):
        return dataclasses.asdict(value)
    return float(value)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    methods = tuple(FLAGS.methods)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        sys.exit(
            f"error: Invalid value for argument `methods`. Received: {unknown}. "
            f"Expected some of {list(METHODS)}."
        )
    figures_dir = os.path.join(os.path.dirname(FLAGS.report), report.FIGURES_DIR)
    if FLAGS.print_commands:
        for method in methods:
            directory = method_dir(FLAGS.model_dir, method, FLAGS.dataset)
            print(BUDGETS[FLAGS.budget].train_command(method, FLAGS.dataset, directory))
        return
    if FLAGS.figures_only:
        paths = redraw_figures(FLAGS.budget, methods, FLAGS.model_dir, figures_dir, FLAGS.dataset)
        for path in paths.values():
            print(f"Figure: {path}")
        return
    try:
        overrides = options.parse_hparams(FLAGS.override)
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(Budget)})
        if unknown:
            raise ValueError(
                f"Invalid value for argument `override`. Received: {unknown}. Expected "
                f"fields of the budget: {[f.name for f in dataclasses.fields(Budget)]}."
            )
    except ValueError as error:
        sys.exit(f"error: {options.one_line(error)}")
    output = reproduce(
        FLAGS.budget,
        methods,
        FLAGS.model_dir,
        figures_dir,
        verbose=2,
        dataset=FLAGS.dataset,
        evaluate_only=FLAGS.evaluate_only,
        **overrides,
    )
    command = "python -m trainers.studies.reproduce " + " ".join(sys.argv[1:])
    text = report.report(output, command.strip())
    report.write_report(text, FLAGS.report, *report.markers(FLAGS.budget, FLAGS.dataset))
    results_path = os.path.join(FLAGS.model_dir, f"results_{FLAGS.budget}_{FLAGS.dataset}.json")
    with open(results_path, "w") as f:
        json.dump(output, f, indent=2, default=_json_default)
    print(text)


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_enum("budget", "reduced", list(BUDGETS), "Training and evaluation budget.")
    flags.DEFINE_list(
        "methods",
        list(TABLE_METHODS),
        f"Methods to train; also {', '.join(EXPLORATORY)} (exploratory variants).",
    )
    flags.DEFINE_string("model_dir", "/tmp/keras_lfr_reproduce", "Checkpoints and models.")
    flags.DEFINE_string("report", "docs/RESULTS.md", "Markdown file for the report section.")
    flags.DEFINE_enum(
        "dataset", "mnist", ["mnist", "fashion_mnist"], "Dataset (ε 0.3 MNIST, 0.1 Fashion)."
    )
    flags.DEFINE_bool(
        "evaluate_only",
        False,
        "Evaluate the models already trained in --model_dir (e.g. by the commands "
        "--print_commands prints) instead of training them.",
    )
    flags.DEFINE_bool(
        "print_commands",
        False,
        "Print the trainers.train command of each method under this budget and exit.",
    )
    flags.DEFINE_list(
        "override",
        [],
        "Budget fields to change for this run as name=value, e.g. strong_examples=500 "
        "(the report says so).",
    )
    flags.DEFINE_bool(
        "figures_only",
        False,
        "Only redraw the figures (in images/ beside --report) from the models already trained "
        "in --model_dir.",
    )


def run():
    """The console script `keras-lfr-reproduce`."""
    define_flags()
    options.run_program(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
