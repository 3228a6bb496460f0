r"""Sweeps a method's hyperparameters: clean and PGD-40 accuracy per value.

    python -m trainers.studies.sweep --budget=reduced --values=0,0.02,0.05,0.2     # Fig. 3: LFR's λ
    python -m trainers.studies.sweep --method=adr --budget=slice --relative --values=1,0.1,0.01 \
        --params=local_weight,global_weight,entropy_weight,smoothness_weight

Trains one model per value with a budget of `trainers.studies.reproduce`, evaluates
clean and PGD-40 accuracy (and reports the final clean cross-entropy, ln 10 =
2.30 for a collapsed model), prints a markdown table and writes the figure.
Each value is given to every parameter of `--params`; with `--relative` it
multiplies each parameter's default instead (to scale several weights of one
method together).
"""

import os
import sys

from absl import flags, logging

import keras_lfr

from .. import evaluating, options, training
from . import budgets, figures

FLAGS = flags.FLAGS


def hyperparameters(method, params, value, relative=False):
    """One sweep point: `value` (or `value` × the default) for each of `params`.

    Raises:
        ValueError: If a param is not a hyperparameter of the method.
    """
    defaults = keras_lfr.methods.get_method(method).get_config()
    unknown = sorted(set(params) - set(defaults))
    if unknown:
        raise ValueError(
            f"Invalid value for argument `params`. Received: params={list(params)}. "
            f"Expected hyperparameters of method={method!r}: {sorted(defaults)}."
        )
    return {p: value * defaults[p] if relative else value for p in params}


def sweep(values, budget_name, workdir, method="lfr", params=("lam",), relative=False, verbose=0):
    """Returns `{value: {"clean", "pgd40", "clean_ce"}}`, one model trained per value."""
    budget = budgets.BUDGETS[budget_name]
    test = keras_lfr.data.load("mnist", "test", batch_size=500, num_examples=budget.eval_examples)
    pgd40 = {"pgd40": keras_lfr.evaluation.protocol("paper")["pgd40"]}
    results = {}
    for value in values:
        hparams = hyperparameters(method, params, value, relative)
        config = budget.train_config(method, verbose=verbose, hparams=hparams)
        directory = os.path.join(workdir, method, f"value_{value:g}")
        trained = training.train_and_evaluate(config, directory)
        model = evaluating.load_classifier(trained["model_path"])
        accuracy = keras_lfr.evaluation.robust_accuracy(model, test, pgd40, verbose=0)
        results[value] = {
            "clean": accuracy["clean"],
            "pgd40": accuracy["pgd40"],
            "clean_ce": trained["history"]["clean_ce"][-1],
        }
    return results


def plot(results, path, label="λ", title="Fig. 3: LFR accuracy vs λ"):
    """Writes the accuracy-vs-value figure to `path`."""
    plt = figures.pyplot()
    values = sorted(results)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, name in (("clean", "clean"), ("pgd40", "PGD-40")):
        ax.plot(values, [100 * results[v][key] for v in values], marker="o", label=name)
    ax.set_xlabel(label)
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        values = [float(v) for v in FLAGS.values]
    except ValueError:
        sys.exit(
            f"error: Invalid value for argument `values`. Received: {FLAGS.values}. "
            "Expected a comma-separated list of floats."
        )
    params = tuple(FLAGS.params)
    try:
        results = sweep(
            values,
            FLAGS.budget,
            FLAGS.model_dir,
            method=FLAGS.method,
            params=params,
            relative=FLAGS.relative,
            verbose=2,
        )
    except ValueError as error:
        sys.exit(f"error: {options.one_line(error)}")
    what = ("× default of " if FLAGS.relative else "") + ", ".join(params)
    print(f"{FLAGS.method}, budget {FLAGS.budget}\n")
    print(f"| {what} | clean | PGD-40 | final clean CE |\n|---|---|---|---|")
    for value, r in sorted(results.items()):
        print(
            f"| {value:g} | {100 * r['clean']:.2f} | {100 * r['pgd40']:.2f} | {r['clean_ce']:.3f} |"
        )
    figure = FLAGS.figure
    if figure == "auto":
        lam_sweep = FLAGS.method == "lfr" and params == ("lam",) and not FLAGS.relative
        figure = "docs/images/fig3_lambda_sweep.png" if lam_sweep else None
    if figure:
        title = f"{FLAGS.method}: accuracy vs {what}"
        print(f"Figure: {plot(results, figure, label=what, title=title)}")


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_string("method", "lfr", "The method to sweep.")
    flags.DEFINE_list("params", ["lam"], "The hyperparameters that take each value.")
    flags.DEFINE_list("values", ["0", "0.005", "0.01", "0.02", "0.05"], "The values.")
    flags.DEFINE_alias("lams", "values")
    flags.DEFINE_bool("relative", False, "Values multiply each parameter's default.")
    flags.DEFINE_enum("budget", "reduced", list(budgets.BUDGETS), "Budget per model.")
    flags.DEFINE_string("model_dir", "/tmp/keras_lfr_sweep", "Checkpoints and models.")
    flags.DEFINE_string(
        "figure",
        "auto",
        "Output PNG; auto: docs/images/fig3_lambda_sweep.png for LFR's λ, else none.",
    )


def run():
    """The console script `keras-lfr-sweep`."""
    define_flags()
    options.run_program(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
