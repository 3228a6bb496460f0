r"""Reproduces the LFR paper's MNIST experiments: Table 1, Figures 1–2, γ per method.

    python -m trainers.reproduce --budget=paper     # the paper's setting (GPU work)
    python -m trainers.reproduce --budget=reduced   # labelled reduced budget, 2 CPU cores

Trains Standard, PGD-AT, TRADES, LLR and LFR with the same model, data and
train step (only the objective differs), evaluates each under the `"paper"`
and `"strong"` protocols with the gradient-masking sanity checks, estimates
the local flatness γ(x, 0.3), and writes a report (between markers in
`docs/RESULTS.md` by default) and the figures (PNG in `docs/`).
"""

import dataclasses
import os
import platform
import sys
import time

import keras
import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import keras_lfr
from trainers import train

FLAGS = flags.FLAGS
METHODS = ("standard", "pgd_at", "trades", "llr", "lfr")
BEGIN, END = "<!-- reproduce:begin -->", "<!-- reproduce:end -->"

# The paper's Table 1 (clean / FGSM / PGD-40 / MI-FGSM / DDN), in %.
PAPER_TABLE = {
    "standard": (99.30, 33.69, 2.04, 2.55, 14.16),
    "pgd_at": (99.52, 97.26, 95.37, 94.17, 94.05),
    "trades": (99.49, 97.54, 95.71, 94.79, 95.91),
    "llr": (99.62, 97.94, 95.63, 94.60, 93.95),
    "lfr": (99.47, 98.14, 96.82, 96.01, 96.89),
}
PAPER_COLUMNS = ("clean", "fgsm", "pgd40", "mi_fgsm", "ddn")
NAMES = {"standard": "Standard", "pgd_at": "AT", "trades": "TRADES", "llr": "LLR", "lfr": "LFR"}


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much training and evaluation a reproduction run does."""

    epochs: int
    train_examples: int | None
    steps: int
    step_size: float
    lr_decay_epochs: tuple
    eval_examples: int | None
    strong_examples: int | None
    square_queries: int
    check_examples: int
    gamma_examples: int
    figure_resolution: int
    figure_candidates: int

    def train_config(self, method, **overrides):
        """The `trainers.train.TrainConfig` of one model under this budget."""
        return train.TrainConfig(
            method=method,
            epochs=self.epochs,
            train_examples=self.train_examples,
            steps=self.steps,
            step_size=self.step_size,
            lr_decay_epochs=self.lr_decay_epochs,
            test_examples=self.eval_examples,
            **overrides,
        )


BUDGETS = {
    # The paper: 100 epochs on all 60k images, K = 40 steps of 0.01, ×0.1
    # after epoch 90; evaluation on the whole test set.
    "paper": Budget(100, None, 40, 0.01, (90,), None, None, 5000, 500, 1000, 41, 100),
    # Under an hour on 2 CPU cores: 3 epochs on 20k images, K = 10. The step
    # keeps the paper's path length K · step = 0.4 > ε, so the inner max can
    # still reach the boundary of the ε = 0.3 ball (10 steps of 0.01 cannot).
    "reduced": Budget(3, 20_000, 10, 0.04, (), 1000, 200, 1000, 200, 200, 31, 100),
    # Seconds: for the smoke test.
    "smoke": Budget(1, 256, 2, 0.2, (), 32, 16, 20, 16, 16, 5, 8),
}


def _test_batch(count):
    return next(iter(keras_lfr.data.load("mnist", "test", batch_size=count, num_examples=count)))


def evaluate_method(model, budget):
    """Paper and strong protocols, sanity checks and mean γ(x, 0.3) of one model."""
    test = keras_lfr.data.load("mnist", "test", batch_size=500, num_examples=budget.eval_examples)
    paper = keras_lfr.evaluation.robust_accuracy(
        model, test, keras_lfr.evaluation.protocol("paper"), verbose=0
    )
    strong_data = keras_lfr.data.load(
        "mnist", "test", batch_size=500, num_examples=budget.strong_examples
    )
    strong = keras_lfr.evaluation.robust_accuracy(
        model,
        strong_data,
        keras_lfr.evaluation.protocol("strong", queries=budget.square_queries),
        verbose=0,
    )
    x, y = _test_batch(budget.check_examples)
    checks = keras_lfr.evaluation.sanity_checks(
        model, x, y, queries=budget.square_queries, verbose=False
    )
    x, y = _test_batch(budget.gamma_examples)
    gamma = keras_lfr.local_flatness(model, x, y, 0.3, budget.step_size, budget.steps)
    return {
        "paper": paper,
        "strong": strong,
        "checks": checks,
        "gamma": float(np.mean(gamma)),
        "gamma_median": float(np.median(gamma)),
    }


def reproduce(budget_name, methods, workdir, figures_dir=None, verbose=0):
    """Trains and evaluates each method; returns the per-method results.

    Args:
        budget_name: A key of `BUDGETS`.
        methods: Method names (a subset of `METHODS`).
        workdir: Directory for each method's checkpoints, model and logs.
        figures_dir: Where to write the PNG figures; `None` for none.
        verbose: Keras verbosity of training. Defaults to `0`.

    Returns:
        A dict: method -> results, plus `"budget"`, `"hardware"` and, with
        figures, `"figures"` (the PNG paths).
    """
    budget = BUDGETS[budget_name]
    results = {}
    for method in methods:
        config = budget.train_config(method, verbose=verbose)
        start = time.perf_counter()
        trained = train.train_and_evaluate(config, os.path.join(workdir, method))
        train_seconds = time.perf_counter() - start
        model = keras.models.load_model(trained["model_path"]).unwrap()
        start = time.perf_counter()
        results[method] = {
            **evaluate_method(model, budget),
            "train_seconds": train_seconds,
            "eval_seconds": time.perf_counter() - start,
            "model_path": trained["model_path"],
        }
    output = {"methods": results, "budget": budget_name, "hardware": hardware()}
    if figures_dir is not None:
        output["figures"] = redraw_figures(budget_name, methods, workdir, figures_dir)
    return output


def hardware():
    """A one-line description of the machine the run used."""
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus]
    devices = ", ".join(names) if names else "no GPU"
    return (
        f"{os.cpu_count()} CPU cores ({platform.machine()}), {devices}, TensorFlow {tf.__version__}"
    )


def figure_point(models, candidates):
    """The test image the figures are drawn around, and its index.

    Random sign planes rarely reach the decision boundary, so the figures use,
    of the first `candidates` test images that the Standard model classifies
    correctly, the one where its decision value on the plane gets lowest
    (closest to, or across, the boundary); the first test image when there is
    no Standard model or it classifies none of them correctly.
    """
    x, y = _test_batch(candidates)
    index, lowest = 0, np.inf
    for i in range(candidates if "standard" in models else 0):
        values = keras_lfr.surfaces.surface(models["standard"], x[i], int(y[i]), resolution=9)[2]
        if values[9 // 2, 9 // 2] > 0 and values.min() < lowest:  # the centre is x itself
            index, lowest = i, values.min()
    return x[index], int(y[index]), index


def write_figures(models, directory, resolution, candidates):
    """Figures 1 and 2: decision surfaces (Standard vs LFR) and LFR's loss surface.

    Drawn on a `resolution`² grid around the test image `figure_point` picks
    among the first `candidates`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    x, y, index = figure_point(models, candidates)
    paths = {}
    panels = [m for m in ("standard", "lfr") if m in models]
    if panels:
        fig = plt.figure(figsize=(5 * len(panels), 8))
        for column, method in enumerate(panels):
            a, b, values = keras_lfr.surfaces.surface(
                models[method], x, y, kind="decision", resolution=resolution
            )
            grid_a, grid_b = np.meshgrid(a, b, indexing="ij")
            top = fig.add_subplot(2, len(panels), column + 1, projection="3d")
            top.plot_surface(grid_a, grid_b, values, cmap="coolwarm", vmin=-1, vmax=1)
            top.set_title(f"{NAMES[method]}: p_y − max p_other")
            top.set_zlim(-1, 1)
            bottom = fig.add_subplot(2, len(panels), len(panels) + column + 1)
            image = bottom.contourf(
                grid_a, grid_b, values, levels=20, cmap="coolwarm", vmin=-1, vmax=1
            )
            bottom.contour(grid_a, grid_b, values, levels=[0.0], colors="black")
            bottom.set_xlabel("d1")
            bottom.set_ylabel("d2")
            fig.colorbar(image, ax=bottom)
        fig.suptitle(
            f"Fig. 1: decision surface around test image #{index} (label {y}), "
            "±0.3 along two random sign directions"
        )
        paths["decision"] = os.path.join(directory, "fig1_decision_surfaces.png")
        fig.savefig(paths["decision"], dpi=80)
        plt.close(fig)
    if "lfr" in models:
        a, b, values = keras_lfr.surfaces.surface(
            models["lfr"], x, y, kind="loss", resolution=resolution
        )
        grid_a, grid_b = np.meshgrid(a, b, indexing="ij")
        fig = plt.figure(figsize=(10, 4))
        left = fig.add_subplot(1, 2, 1, projection="3d")
        left.plot_surface(grid_a, grid_b, values, cmap="viridis")
        left.set_title("LFR: cross-entropy")
        right = fig.add_subplot(1, 2, 2)
        fig.colorbar(right.contourf(grid_a, grid_b, values, levels=20, cmap="viridis"), ax=right)
        fig.suptitle(f"Fig. 2: loss surface of the LFR model around test image #{index}")
        paths["loss"] = os.path.join(directory, "fig2_loss_surface_lfr.png")
        fig.savefig(paths["loss"], dpi=80)
        plt.close(fig)
    return paths


def redraw_figures(budget_name, methods, workdir, figures_dir):
    """Draws the figures from the models a `reproduce` run saved in `workdir`."""
    models = {
        m: keras.models.load_model(os.path.join(workdir, m, "model.keras")).unwrap()
        for m in methods
    }
    budget = BUDGETS[budget_name]
    return write_figures(models, figures_dir, budget.figure_resolution, budget.figure_candidates)


def report(output, command):
    """The markdown section: tables in the paper's layout, strong protocol, γ, checks."""
    methods = output["methods"]
    budget = BUDGETS[output["budget"]]
    label = (
        "the paper's full budget"
        if output["budget"] == "paper"
        else (f"**a REDUCED budget ({output['budget']})**, not the paper's")
    )
    lines = [
        f"## Reproduction of Table 1 ({output['budget']} budget)",
        "",
        f"Trained and evaluated with {label}: {budget.epochs} epoch(s) on "
        f"{budget.train_examples or 60000} training images, K = {budget.steps} inner steps "
        f"of {budget.step_size:g} (ε 0.3), SGD 0.01 momentum 0.9, batch 128; paper protocol on "
        f"{budget.eval_examples or 10000} test images, strong protocol (Square "
        f"{budget.square_queries} queries) on {budget.strong_examples or 10000}. "
        f"Hardware: {output['hardware']}.",
        "",
        "```",
        command,
        "```",
        "",
        "| method | "
        + " | ".join(("Clean", "FGSM", "PGD-40", "MI-FGSM", "DDN"))
        + " | train time |",
        "|---" * 7 + "|",
    ]
    for method, result in methods.items():
        ours = [100 * result["paper"][c] for c in PAPER_COLUMNS]
        paper = PAPER_TABLE[method]
        cells = [f"{o:.2f} ({p:.2f})" for o, p in zip(ours, paper, strict=True)]
        lines.append(
            f"| {NAMES[method]} | "
            + " | ".join(cells)
            + f" | {result['train_seconds'] / 60:.1f} min |"
        )
    lines += [
        "",
        "Ours (paper's Table 1 in parentheses), accuracy in %.",
        "",
        "Strong protocol (APGD-CE, APGD-T, Square; worst case per example) and the "
        "sanity checks of Carlini et al. (2019):",
        "",
        "| method | Clean | APGD-CE | APGD-T | Square | worst case | sanity checks |",
        "|---" * 7 + "|",
    ]
    for method, result in methods.items():
        strong = result["strong"]
        failed = [c.name for c in result["checks"] if not c.passed]
        lines.append(
            f"| {NAMES[method]} | {100 * strong['clean']:.2f} | {100 * strong['apgd_ce']:.2f} | "
            f"{100 * strong['apgd_t']:.2f} | {100 * strong['square']:.2f} | "
            f"{100 * strong['worst_case']:.2f} | "
            + ("all pass" if not failed else "FAILED: " + "; ".join(failed))
            + " |"
        )
    lines += [
        "",
        f"Local flatness γ(x, 0.3) = max over B∞(x, 0.3) of ‖∇ₓ CE‖₁ (the paper's "
        f"Definition 1; {budget.steps} steps of {budget.step_size:g}, best iterate) on "
        f"{budget.gamma_examples} test images; smaller is flatter:",
        "",
        "| method | γ mean | γ median |",
        "|---|---|---|",
    ]
    for method, result in methods.items():
        lines.append(f"| {NAMES[method]} | {result['gamma']:.3f} | {result['gamma_median']:.3f} |")
    for name, path in output.get("figures", {}).items():
        lines += ["", f"![{name}]({os.path.basename(path)})"]
    return "\n".join(lines)


def write_report(text, path):
    """Writes `text` between the reproduce markers of `path` (appending them if absent)."""
    section = f"{BEGIN}\n{text}\n{END}\n"
    existing = open(path).read() if os.path.exists(path) else ""
    if BEGIN in existing and END in existing:
        head, rest = existing.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        updated = head + section + tail
    else:
        updated = existing + ("\n" if existing else "") + section
    with open(path, "w") as f:
        f.write(updated)


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
    figures_dir = os.path.dirname(FLAGS.report) or "."
    if FLAGS.figures_only:
        for path in redraw_figures(FLAGS.budget, methods, FLAGS.model_dir, figures_dir).values():
            print(f"Figure: {path}")
        return
    output = reproduce(FLAGS.budget, methods, FLAGS.model_dir, figures_dir, verbose=1)
    command = "python -m trainers.reproduce " + " ".join(sys.argv[1:])
    text = report(output, command.strip())
    write_report(text, FLAGS.report)
    print(text)


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_enum("budget", "reduced", list(BUDGETS), "Training and evaluation budget.")
    flags.DEFINE_list("methods", list(METHODS), "Methods to train.")
    flags.DEFINE_string("model_dir", "/tmp/keras_lfr_reproduce", "Checkpoints and models.")
    flags.DEFINE_string("report", "docs/RESULTS.md", "Markdown file for the report section.")
    flags.DEFINE_bool(
        "figures_only",
        False,
        "Only redraw the figures (next to --report) from the models already trained "
        "in --model_dir.",
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
