"""The markdown report of `trainers.studies.reproduce`: Table 1, the strong protocol, γ."""

import os

from keras_lfr import ThreatModel

from .. import config as config_lib
from .budgets import VARIANTS, Budget

BEGIN, END = "<!-- reproduce:begin -->", "<!-- reproduce:end -->"
# The report's figures live in this folder beside the report (docs/images/).
FIGURES_DIR = "images"
# What to see in each figure, printed under it.
CAPTIONS = {
    "curve": "PGD-40 accuracy on the held-out images after each epoch, against training time. "
    "Each method's curve shows how fast it becomes robust and whether it levels off.",
    "decision": "Decision surfaces around one test image, in the plane of two random sign "
    "directions (Fig. 1 of the paper): the margin of the true class, positive where the "
    "image is still classified correctly. A flatter, wider positive region is more robust.",
    "loss": "LFR's cross-entropy around the same image (Fig. 2 of the paper): a smooth, "
    "shallow bowl is what the flatness penalty asks for.",
}

# The paper's Table 1 (clean / FGSM / PGD-40 / MI-FGSM / DDN), in %.
PAPER_TABLE = {
    "standard": (99.30, 33.69, 2.04, 2.55, 14.16),
    "pgd_at": (99.52, 97.26, 95.37, 94.17, 94.05),
    "trades": (99.49, 97.54, 95.71, 94.79, 95.91),
    "llr": (99.62, 97.94, 95.63, 94.60, 93.95),
    "lfr": (99.47, 98.14, 96.82, 96.01, 96.89),
}
PAPER_COLUMNS = ("clean", "fgsm", "pgd40", "mi_fgsm", "ddn")
# The rows' names in the tables and figures.
NAMES = {
    "standard": "Standard",
    "pgd_at": "AT",
    "trades": "TRADES",
    "llr": "LLR",
    "lfr": "LFR",
    "adr": "ADR",
    "lsp": "LSP",
    **{name: variant.label for name, variant in VARIANTS.items()},
}


def describe_budget(output):
    """One paragraph: what was trained and evaluated, and on what."""
    budget = Budget(**output["budget_fields"])
    dataset = output.get("dataset", "mnist")
    epsilon = ThreatModel.of_dataset(dataset).epsilon
    step = budget.step_size(dataset)
    if output["budget"] == "paper":
        label = "the paper's full budget"
    elif budget.recipe:
        label = f"the **{output['budget']}** budget (recipe `{budget.recipe}`)"
    else:
        label = f"**a REDUCED budget ({output['budget']})** (not the paper's)"
    if budget.recipe:
        recipe = config_lib.RECIPES[budget.recipe]
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


def report(output, command, heading=True):
    """The markdown section: tables in the paper's layout, strong protocol, γ, checks.

    `heading=False` leaves out the section's title, for a page that gives its own.
    """
    methods = output["methods"]
    budget = Budget(**output["budget_fields"])
    dataset = output.get("dataset", "mnist")
    epsilon = ThreatModel.of_dataset(dataset).epsilon
    title = [f"## Table 1 on {dataset}, {output['budget']} budget", ""] if heading else []
    lines = [
        *title,
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
    # Runs evaluated before the confidence was measured have γ only.
    confident = all("confidence" in result for result in methods.values())
    gamma = (
        f"Local flatness γ(x, {epsilon:g}) = max over B∞(x, {epsilon:g}) of ‖∇ₓ CE‖₁ (the "
        f"paper's Definition 1; {budget.steps} steps of {budget.step_size(dataset):g}, "
        f"best iterate) on {budget.gamma_examples} test images; smaller is flatter"
    )
    if confident:
        lines += [
            "",
            gamma + ". On the same images, the clean cross-entropy and the median logit margin "
            "z_y − max_{j≠y} z_j (`keras_lfr.evaluation.confidence`), which tell a loss "
            "saturated over the ball (γ median ≈ 0, large margins) from gradients kept "
            "small by shrinking the logits:",
            "",
            "| method | γ mean | γ median | clean CE | median margin |",
            "|---|---|---|---|---|",
        ]
    else:
        lines += ["", gamma + ":", "", "| method | γ mean | γ median |", "|---|---|---|"]
    for method, result in methods.items():
        name = NAMES.get(method, method)
        row = f"| {name} | {result['gamma']:.3f} | {result['gamma_median']:.3f} |"
        if confident:
            confidence = result["confidence"]
            row += f" {confidence['clean_ce']:.4f} | {confidence['margin_median']:.2f} |"
        lines.append(row)
    for name, path in output.get("figures", {}).items():
        lines += ["", f"![{name}]({FIGURES_DIR}/{os.path.basename(path)})"]
        if name in CAPTIONS:
            lines += ["", f"*{CAPTIONS[name]}*"]
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
