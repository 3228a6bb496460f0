r"""Reproduces the LFR paper's MNIST experiments: Table 1, Figures 1–2, γ per method.

    python -m trainers.reproduce --budget=paper     # the paper's setting (GPU work)
    python -m trainers.reproduce --budget=fast      # each model in < 1 hour on 2 CPU cores
    python -m trainers.reproduce --budget=fast --dataset=fashion_mnist   # at ε = 0.1
    python -m trainers.reproduce --budget=reduced   # labelled reduced budget, 2 CPU cores

Trains Standard, PGD-AT, TRADES, LLR and LFR with the same model, data and
train step (only the objective differs), evaluates each under the `"paper"`
and `"strong"` protocols with the gradient-masking sanity checks, estimates
the local flatness γ(x, 0.3), and writes a report (between markers in
`docs/RESULTS.md` by default) and the figures (PNG in `docs/`).
"""

import dataclasses
import json
import os
import platform
import sys
import time

import numpy as np
import tensorflow as tf
from absl import app, flags, logging

import keras_lfr
from trainers import evaluate, runs, train

FLAGS = flags.FLAGS
METHODS = ("standard", "pgd_at", "trades", "llr", "lfr", "adr", "lsp")
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
NAMES = {
    "standard": "Standard",
    "pgd_at": "AT",
    "trades": "TRADES",
    "llr": "LLR",
    "lfr": "LFR",
    "adr": "ADR",
    "lsp": "LSP",
}


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
    # A `trainers.train.RECIPES` name: its optimizer, schedules, precision and
    # dropout apply; the epochs, K and step above win over the recipe's.
    recipe: str = None
    # Attack only the examples still robust (AutoAttack's cascade).
    cascade: bool = False
    # PGD-40 on the last N test images after every epoch (the curve figure).
    curve_examples: int = 0
    # Epochs of the ε ramp; `None` keeps the recipe's (or none without one).
    epsilon_warmup_epochs: float = None

    def train_config(self, method, dataset="mnist", **overrides):
        """The `trainers.train.TrainConfig` of one model under this budget.

        Off MNIST, ε is the dataset's (`EPSILON`) and the inner step scales
        with it.
        """
        fields = {"epochs": self.epochs, "steps": self.steps, "step_size": self.step_size}
        if self.recipe:
            fields = {**train.RECIPES[self.recipe], **fields}
        else:
            fields["lr_decay_epochs"] = self.lr_decay_epochs
        if self.epsilon_warmup_epochs is not None:
            fields["epsilon_warmup_epochs"] = self.epsilon_warmup_epochs
        if EPSILON[dataset] != 0.3:
            fields["epsilon"] = EPSILON[dataset]
            fields["step_size"] = round(fields["step_size"] * EPSILON[dataset] / 0.3, 6)
        fields.update(
            method=method,
            dataset=dataset,
            train_examples=self.train_examples,
            test_examples=self.eval_examples,
            attack_eval_examples=self.curve_examples,
        )
        return train.TrainConfig(**{**fields, **overrides})


# The usual l-inf radius of each dataset.
EPSILON = {"mnist": 0.3, "fashion_mnist": 0.1}

BUDGETS = {
    # The paper: 100 epochs on all 60k images, K = 40 steps of 0.01, ×0.1
    # after epoch 90; evaluation on the whole test set.
    "paper": Budget(100, None, 40, 0.01, (90,), None, None, 5000, 500, 1000, 41, 100),
    # Under an hour on 2 CPU cores: 3 epochs on 20k images, K = 10. The step
    # keeps the paper's path length K · step = 0.4 > ε, so the inner max can
    # still reach the boundary of the ε = 0.3 ball (10 steps of 0.01 cannot).
    "reduced": Budget(3, 20_000, 10, 0.04, (), 1000, 200, 1000, 200, 200, 31, 100),
    # Each model in under an hour on 2 CPU cores: `trainers.train`'s "fast"
    # recipe (20 epochs on all 60k images, K = 5 of 0.1, ε ramped over 5
    # epochs, Adam + cosine, bfloat16). Paper protocol on the whole test set,
    # strong protocol (Square 5,000 queries, cascade) on the first 1,000.
    "fast": Budget(
        20,
        None,
        5,
        0.1,
        (),
        None,
        1000,
        5000,
        200,
        200,
        31,
        100,
        recipe="fast",
        cascade=True,
        curve_examples=500,
    ),
    # About a minute per model: the fast recipe shrunk to 4 epochs on 8,192
    # images with the ε ramp over the first epoch, to see whether a method
    # trains at all (clean CE well below ln 10) when choosing default weights
    # with `trainers.sweep`; clean and PGD-40 accuracy on 1,000 test images.
    "slice": Budget(
        4,
        8192,
        5,
        0.1,
        (),
        1000,
        100,
        100,
        100,
        100,
        5,
        8,
        recipe="fast",
        epsilon_warmup_epochs=1.0,
    ),
    # Seconds: for the smoke test.
    "smoke": Budget(1, 256, 2, 0.2, (), 32, 16, 20, 16, 16, 5, 8),
    "smoke_fast": Budget(
        1,
        256,
        2,
        0.2,
        (),
        32,
        16,
        20,
        16,
        16,
        5,
        8,
        recipe="fast",
        cascade=True,
        curve_examples=16,
    ),
}


def _test_batch(dataset, count):
    return next(iter(keras_lfr.data.load(dataset, "test", batch_size=count, num_examples=count)))


# The version of each part of an evaluation: a cached part made by an older
# version is recomputed. strong 2 and checks 2: APGD's momentum reference and
# Square's p schedule follow AutoAttack (issue 13).
# checks 3: a gap of exactly the tolerance passes (it failed by float round-off).
EVALUATION_VERSIONS = {"paper": 1, "strong": 2, "checks": 3}


def evaluate_method(model, budget, dataset="mnist", parts=tuple(EVALUATION_VERSIONS)):
    """Paper and strong protocols, sanity checks and mean γ(x, ε) of one model.

    The model is evaluated in float32 (`keras_lfr.models.to_float32`),
    whatever precision it was trained in.

    Args:
        model: The classifier.
        budget: A `Budget` (sample sizes, queries, cascade).
        dataset: `"mnist"` or `"fashion_mnist"`. Defaults to `"mnist"`.
        parts: Which of `"paper"` (with γ), `"strong"` and `"checks"` to run.
            Defaults to all.

    Returns:
        A dict with the requested parts' results.
    """
    model = keras_lfr.models.to_float32(model)
    epsilon = EPSILON[dataset]

    def test(count):
        return keras_lfr.data.load(dataset, "test", batch_size=500, num_examples=count)

    x, y = _test_batch(dataset, max(budget.check_examples, budget.gamma_examples))
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
            budget.step_size * epsilon / 0.3,
            budget.steps,
        )
        result["gamma"] = float(np.mean(gamma))
        result["gamma_median"] = float(np.median(gamma))
    if "strong" in parts:
        result["strong"] = keras_lfr.evaluation.robust_accuracy(
            model,
            test(budget.strong_examples),
            keras_lfr.evaluation.protocol("strong", epsilon=epsilon, queries=budget.square_queries),
            cascade=budget.cascade,
            verbose=0,
        )
    if "checks" in parts:
        result["checks"] = keras_lfr.evaluation.sanity_checks(
            model,
            x[: budget.check_examples],
            y[: budget.check_examples],
            epsilon=epsilon,
            queries=budget.square_queries,
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
        dataset: `"mnist"` or `"fashion_mnist"` (ε from `EPSILON`).
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
            train.train_and_evaluate(config, directory)
        results[method] = evaluate_saved(directory, budget, dataset, reuse=evaluate_only)
    output = {
        "methods": results,
        "budget": budget_name,
        "budget_fields": dataclasses.asdict(budget),
        "overrides": budget_overrides,
        "dataset": dataset,
        "hardware": hardware(),
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

    The results are written to `directory/evaluation.json`. With `reuse`, a
    cached evaluation made under the same budget is returned instead of
    evaluating again (so methods can be evaluated in separate processes and
    reported together).
    """
    cache = os.path.join(directory, "evaluation.json")
    fields = json.loads(json.dumps(dataclasses.asdict(budget)))
    cached = {}
    if reuse and os.path.exists(cache):
        with open(cache) as f:
            stored = json.load(f)
        if stored["budget_fields"] == fields and stored["dataset"] == dataset:
            cached = stored
            cached["checks"] = [keras_lfr.evaluation.Check(**c) for c in cached["checks"]]
    # A cache written before parts had versions holds version 1 of each.
    versions = cached.get("versions", dict.fromkeys(EVALUATION_VERSIONS, 1)) if cached else {}
    stale = tuple(p for p, v in EVALUATION_VERSIONS.items() if versions.get(p) != v)
    if not stale:
        return cached
    with open(os.path.join(directory, "metrics.json")) as f:
        history = json.load(f)["history"]
    model = evaluate.load_classifier(os.path.join(directory, "model.keras"))
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


def train_command(budget_name, method, dataset, workdir):
    """The `trainers.train` command that trains one model of a budget by itself."""
    config = BUDGETS[budget_name].train_config(method, dataset)
    defaults = train.TrainConfig()
    recipe = train.RECIPES.get(BUDGETS[budget_name].recipe, {})
    args = [f"--recipe={BUDGETS[budget_name].recipe}"] if recipe else []
    args.append(f"--method={method}")
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if field.name == "method" or (field.name in recipe and recipe[field.name] == value):
            continue
        if value == getattr(defaults, field.name) or value is None:
            continue
        if isinstance(value, tuple):
            value = ",".join(map(str, value))
        args.append(f"--{field.name}={value}")
    directory = method_dir(workdir, method, dataset)
    return "python -m trainers.train " + " ".join(args) + f" --model_dir={directory}"


def hardware():
    """A one-line description of the machine the run used."""
    gpus = tf.config.list_physical_devices("GPU")
    names = [tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus]
    devices = ", ".join(names) if names else "no GPU"
    return (
        f"{os.cpu_count()} CPU cores ({platform.machine()}), {devices}, TensorFlow {tf.__version__}"
    )


def figure_point(models, candidates, dataset="mnist"):
    """The test image the figures are drawn around, and its index.

    Random sign planes rarely reach the decision boundary, so the figures use,
    of the first `candidates` test images that the Standard model classifies
    correctly, the one where its decision value on the plane gets lowest
    (closest to, or across, the boundary); the first test image when there is
    no Standard model or it classifies none of them correctly.
    """
    x, y = _test_batch(dataset, candidates)
    index, lowest = 0, np.inf
    for i in range(candidates if "standard" in models else 0):
        values = keras_lfr.surfaces.surface(models["standard"], x[i], int(y[i]), resolution=9)[2]
        if values[9 // 2, 9 // 2] > 0 and values.min() < lowest:  # the centre is x itself
            index, lowest = i, values.min()
    return x[index], int(y[index]), index


def write_figures(models, directory, resolution, candidates, dataset="mnist", prefix=""):
    """Figures 1 and 2: decision surfaces (Standard vs LFR) and LFR's loss surface.

    Drawn on a `resolution`² grid around the test image `figure_point` picks
    among the first `candidates`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(directory, exist_ok=True)
    x, y, index = figure_point(models, candidates, dataset)
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
        paths["decision"] = os.path.join(directory, f"{prefix}fig1_decision_surfaces.png")
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
        paths["loss"] = os.path.join(directory, f"{prefix}fig2_loss_surface_lfr.png")
        fig.savefig(paths["loss"], dpi=80)
        plt.close(fig)
    return paths


def curve_figure(histories, path):
    """Robust accuracy (PGD-40 on held-out images) against training wall time.

    Args:
        histories: Dict method -> `History.history` with `wall_time` and
            `val_adv_pgd40_accuracy` per epoch.
        path: The PNG to write.

    Returns:
        `path`, or `None` when no history has the curve.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = {m: h for m, h in histories.items() if "val_adv_pgd40_accuracy" in h}
    if not curves:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for method, history in curves.items():
        minutes = np.asarray(history["wall_time"]) / 60
        accuracy = 100 * np.asarray(history["val_adv_pgd40_accuracy"])
        ax.plot(minutes, accuracy, marker="o", markersize=3, label=NAMES.get(method, method))
    ax.axvline(60, color="grey", linestyle=":", label="60 min budget")
    ax.set_xlabel("training wall time (min)")
    ax.set_ylabel("PGD-40 accuracy on 500 held-out test images (%)")
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def redraw_figures(budget_name, methods, workdir, figures_dir, dataset="mnist"):
    """Draws the figures from the models a `reproduce` run saved in `workdir`."""
    models, histories = {}, {}
    for m in methods:
        directory = method_dir(workdir, m, dataset)
        models[m] = evaluate.load_classifier(os.path.join(directory, "model.keras"))
        with open(os.path.join(directory, "metrics.json")) as f:
            histories[m] = json.load(f)["history"]
    budget = BUDGETS[budget_name]
    os.makedirs(figures_dir, exist_ok=True)
    # The reduced MNIST run keeps the figure names of the first reports.
    prefix = "" if (budget_name, dataset) == ("reduced", "mnist") else f"{dataset}_{budget_name}_"
    paths = {}
    if budget.curve_examples:
        curve = curve_figure(histories, os.path.join(figures_dir, f"{prefix}accuracy_vs_time.png"))
        if curve:
            paths["curve"] = curve
    paths.update(
        write_figures(
            models,
            figures_dir,
            budget.figure_resolution,
            budget.figure_candidates,
            dataset,
            prefix,
        )
    )
    return paths


def describe_budget(output):
    """One paragraph: what was trained and evaluated, and on what."""
    budget = Budget(**output["budget_fields"])
    dataset = output.get("dataset", "mnist")
    epsilon = EPSILON[dataset]
    step = budget.step_size * epsilon / 0.3
    if output["budget"] == "paper":
        label = "the paper's full budget"
    elif budget.recipe:
        label = f"the **{output['budget']}** budget (recipe `{budget.recipe}`)"
    else:
        label = f"**a REDUCED budget ({output['budget']})**, not the paper's"
    if budget.recipe:
        recipe = train.RECIPES[budget.recipe]
        optimizer = (
            f"{recipe['optimizer']} lr {recipe['lr']:g} ({recipe['lr_schedule']}, "
            f"{recipe['lr_warmup_epochs']:g} epoch warm-up), ε ramped over "
            f"{recipe['epsilon_warmup_epochs']:g} epochs, {recipe['mixed_precision']} layers, "
            f"dropout {recipe['dropout']:g}"
        )
    else:
        optimizer = "SGD 0.01 momentum 0.9"
    overrides = output.get("overrides") or {}
    changed = (
        f" **Changed for this run:** {', '.join(f'{k}={v}' for k, v in overrides.items())}."
        if overrides
        else ""
    )
    strong = "cascade, cumulative columns" if budget.cascade else "every attack on every image"
    return (
        f"Trained and evaluated with {label} on {dataset}: {budget.epochs} epoch(s) on "
        f"{budget.train_examples or 60000} training images, K = {budget.steps} inner steps of "
        f"{step:g} (ε {epsilon:g}), {optimizer}, batch 128; paper protocol on "
        f"{budget.eval_examples or 10000} test images, strong protocol (Square "
        f"{budget.square_queries} queries; {strong}) on the first "
        f"{budget.strong_examples or 10000}; models evaluated in float32.{changed} "
        f"Hardware: {output['hardware']}."
    )


def report(output, command):
    """The markdown section: tables in the paper's layout, strong protocol, γ, checks."""
    methods = output["methods"]
    budget = Budget(**output["budget_fields"])
    dataset = output.get("dataset", "mnist")
    epsilon = EPSILON[dataset]
    lines = [
        f"## Table 1 on {dataset}, {output['budget']} budget",
        "",
        describe_budget(output),
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
        paper = PAPER_TABLE.get(method) if dataset == "mnist" else None
        if paper:
            cells = [f"{o:.2f} ({p:.2f})" for o, p in zip(ours, paper, strict=True)]
        else:
            cells = [f"{o:.2f}" for o in ours]
        lines.append(
            f"| {NAMES.get(method, method)} | "
            + " | ".join(cells)
            + f" | {result['train_seconds'] / 60:.1f} min |"
        )
    strong_names = ("APGD-CE", "APGD-T", "Square")
    if budget.cascade:
        strong_names = ("after APGD-CE", "+ APGD-T", "+ Square")
    lines += [
        "",
        "Ours (paper's Table 1 in parentheses, MNIST only), accuracy in %. Train time: wall "
        "time of `fit` (training, per-epoch validation and the PGD-40 curve).",
        "",
        "Strong protocol (APGD-CE, APGD-T, Square; worst case per example) and the "
        "sanity checks of Carlini et al. (2019):",
        "",
        "| method | Clean | " + " | ".join(strong_names) + " | worst case | sanity checks |",
        "|---" * 7 + "|",
    ]
    for method, result in methods.items():
        strong = result["strong"]
        failed = [c.name for c in result["checks"] if not c.passed]
        lines.append(
            f"| {NAMES.get(method, method)} | {100 * strong['clean']:.2f} | "
            f"{100 * strong['apgd_ce']:.2f} | {100 * strong['apgd_t']:.2f} | "
            f"{100 * strong['square']:.2f} | {100 * strong['worst_case']:.2f} | "
            + ("all pass" if not failed else "FAILED: " + "; ".join(failed))
            + " |"
        )
    lines += [
        "",
        f"Local flatness γ(x, {epsilon:g}) = max over B∞(x, {epsilon:g}) of ‖∇ₓ CE‖₁ (the "
        f"paper's Definition 1; {budget.steps} steps of {budget.step_size * epsilon / 0.3:g}, "
        f"best iterate) on {budget.gamma_examples} test images; smaller is flatter:",
        "",
        "| method | γ mean | γ median |",
        "|---|---|---|",
    ]
    for method, result in methods.items():
        lines.append(
            f"| {NAMES.get(method, method)} | {result['gamma']:.3f} | "
            f"{result['gamma_median']:.3f} |"
        )
    for name, path in output.get("figures", {}).items():
        lines += ["", f"![{name}]({os.path.basename(path)})"]
    return "\n".join(lines)


def markers(budget_name, dataset="mnist"):
    """The begin and end markers of a run's section in the report file.

    The reduced MNIST budget keeps the markers of the first reports.
    """
    if (budget_name, dataset) in (("reduced", "mnist"), ("smoke", "mnist")):
        return BEGIN, END
    key = f"{budget_name}:{dataset}"
    return f"<!-- reproduce:{key}:begin -->", f"<!-- reproduce:{key}:end -->"


def write_report(text, path, begin=BEGIN, end=END):
    """Writes `text` between the markers `begin` and `end` of `path` (appending them if absent)."""
    section = f"{begin}\n{text}\n{end}\n"
    existing = open(path).read() if os.path.exists(path) else ""
    if begin in existing and end in existing:
        head, rest = existing.split(begin, 1)
        tail = rest.split(end, 1)[1].lstrip("\n")
        updated = head + section + tail
    else:
        updated = existing + ("\n" if existing else "") + section
    with open(path, "w") as f:
        f.write(updated)


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
    figures_dir = os.path.dirname(FLAGS.report) or "."
    if FLAGS.print_commands:
        for method in methods:
            print(train_command(FLAGS.budget, method, FLAGS.dataset, FLAGS.model_dir))
        return
    if FLAGS.figures_only:
        paths = redraw_figures(FLAGS.budget, methods, FLAGS.model_dir, figures_dir, FLAGS.dataset)
        for path in paths.values():
            print(f"Figure: {path}")
        return
    try:
        overrides = train.parse_hparams(FLAGS.override)
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(Budget)})
        if unknown:
            raise ValueError(
                f"Invalid value for argument `override`. Received: {unknown}. Expected "
                f"fields of the budget: {[f.name for f in dataclasses.fields(Budget)]}."
            )
    except ValueError as error:
        sys.exit(f"error: {error}")
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
    command = "python -m trainers.reproduce " + " ".join(sys.argv[1:])
    text = report(output, command.strip())
    write_report(text, FLAGS.report, *markers(FLAGS.budget, FLAGS.dataset))
    results_path = os.path.join(FLAGS.model_dir, f"results_{FLAGS.budget}_{FLAGS.dataset}.json")
    with open(results_path, "w") as f:
        json.dump(output, f, indent=2, default=_json_default)
    print(text)


def define_flags():
    """Defines the command-line flags (only when run as a script)."""
    flags.DEFINE_enum("budget", "reduced", list(BUDGETS), "Training and evaluation budget.")
    flags.DEFINE_list("methods", list(METHODS), "Methods to train.")
    flags.DEFINE_string("model_dir", "/tmp/keras_lfr_reproduce", "Checkpoints and models.")
    flags.DEFINE_string("report", "docs/RESULTS.md", "Markdown file for the report section.")
    flags.DEFINE_enum("dataset", "mnist", list(EPSILON), "Dataset (ε 0.3 MNIST, 0.1 Fashion).")
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
        "Only redraw the figures (next to --report) from the models already trained "
        "in --model_dir.",
    )


if __name__ == "__main__":
    define_flags()
    app.run(main)
