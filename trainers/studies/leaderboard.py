"""The zoo's leaderboard: its records beside the published MNIST results, in markdown.

`trainers.studies.release --leaderboard` writes it between
`MARKERS` of the docs, and `trainers.studies.tables` regenerates it.
"""

from keras_lfr import zoo

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


# `release --leaderboard` and `tables` rewrite the text between these lines of the docs.
MARKERS = ("<!-- leaderboard:begin -->", "<!-- leaderboard:end -->")


def markdown(records):
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
