r"""Figure 3 of the LFR paper: clean and PGD-40 accuracy of LFR models vs λ.

    python -m trainers.sweep --budget=reduced --lams=0,0.005,0.01,0.02,0.05

Trains one LFR model per λ with a budget of `trainers.reproduce`, evaluates
clean and PGD-40 accuracy, prints a markdown table and writes the figure.
"""

import os
import sys

import keras
from absl import app, flags, logging

import keras_lfr
from trainers import reproduce, train

FLAGS = flags.FLAGS


def sweep(lams, budget_name, workdir, verbose=0):
    """Returns `{λ: {"clean": …, "pgd40": …}}` for LFR models trained at each λ."""
    budget = reproduce.BUDGETS[budget_name]
    test = keras_lfr.data.load("mnist", "test", batch_size=500, num_examples=budget.eval_examples)
    pgd40 = {"pgd40": keras_lfr.evaluation.protocol("paper")["pgd40"]}
    results = {}
    for lam in lams:
        config = budget.train_config("lfr", lam=lam, verbose=verbose)
        trained = train.train_and_evaluate(config, os.path.join(workdir, f"lam_{lam:g}"))
        model = keras.models.load_model(trained["model_path"]).unwrap()
        accuracy = keras_lfr.evaluation.robust_accuracy(model, test, pgd40, verbose=0)
        results[lam] = {"clean": accuracy["clean"], "pgd40": accuracy["pgd40"]}
    return results


def plot(results, path):
    """Writes Figure 3 (accuracy vs λ) to `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lams = sorted(results)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for key, label in (("clean", "clean"), ("pgd40", "PGD-40")):
        ax.plot(lams, [100 * results[lam][key] for lam in lams], marker="o", label=label)
    ax.set_xlabel("λ")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Fig. 3: LFR accuracy vs λ")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    try:
        lams = [float(v) for v in FLAGS.lams]
    except ValueError:
        sys.exit(
            f"error: Invalid value for argument `lams`. Received: {FLAGS.lams}. "
            "Expected a comma-separated list of floats."
        )
    results = sweep(lams, FLAGS.budget, FLAGS.model_dir, verbose=1)
    print("| λ | clean | PGD-40 |\n|---|---|---|")
    for lam, r in sorted(results.items()):
        print(f"| {lam:g} | {100 * r['clean']:.2f} | {100 * r['pgd40']:.2f} |")
    print(f"Figure: {plot(results, FLAGS.figure)}")


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_enum("budget", "reduced", list(reproduce.BUDGETS), "Budget per model.")
    flags.DEFINE_list("lams", ["0", "0.005", "0.01", "0.02", "0.05"], "Values of λ.")
    flags.DEFINE_string("model_dir", "/tmp/keras_lfr_sweep", "Checkpoints and models.")
    flags.DEFINE_string("figure", "docs/fig3_lambda_sweep.png", "Output PNG.")


if __name__ == "__main__":
    define_flags()
    app.run(main)
