"""Comparison of trained models' evaluations as functions: what `trainers.studies.compare` prints.

`load` reads one evaluation, `group` gathers runs that differ only in their
seed, `summary` and `paired` compute the two tables, `over_seeds` and
`ranking` the seeds' interval and the order it gives, and `tables` all of it
as markdown. `trainers.studies.compare` describes the method.
"""

import dataclasses
import itertools
import json
import math
import os

import numpy as np

from keras_lfr import evaluation

from .. import config as config_lib
from .. import runs

# What the evaluations compared must share.
SHARED = ("protocol", "dataset", "split", "epsilon", "examples")


def load(path):
    """One evaluation's group settings, seed and results.

    Returns:
        A dict with `config` (the run's configuration without its seed),
        `seed`, `clean`, `robust`, `per_example` (`None` if the evaluation has
        none) and the `SHARED` settings.

    Raises:
        ValueError: If the evaluation holds no run configuration and its
            model has no run directory.
    """
    with open(path) as f:
        output = json.load(f)
    stored = output.get("run")
    if stored is None:  # written before evaluations held their run's configuration
        model = output["config"]["model"]
        run = runs.RunDir.of_model(model) if model else None
        if run is None:
            raise ValueError(
                f"Invalid evaluation {path!r}: it holds no run configuration (`run`) and "
                f"its model {model!r} has no run directory (run.json beside model.keras). "
                "Expected an evaluation of a trainers.train model."
            )
        stored = run.stored_config()
    config = setting(stored)
    results = output["results"]
    return {
        "path": path,
        "config": {k: v for k, v in config.items() if k != "seed"},
        "seed": config.get("seed", 0),
        "clean": results["clean"],
        "robust": results["worst_case"],
        "per_example": results.get("per_example"),
        "protocol": output["protocol"],
        "dataset": output["dataset"],
        # The images: the test split, or held-out training images (older files: test).
        "split": output.get("split", "test"),
        "epsilon": output["epsilon"],
        "examples": results["examples"],
    }


def setting(stored):
    """A run's `run.json` as the setting it trained: what groups it with its other seeds.

    Fields that an older keras_lfr did not record take their defaults, ε
    and the inner step are resolved (`config.threat_model`), so a step given
    as 0.1 and the same step given as 1/3 of ε = 0.3 are one setting, and a
    float field given as an integer (`10` epochs of ramp) is the float.
    """
    config = config_lib.TrainConfig(**stored)
    threat = config_lib.threat_model(config)
    fields = runs.identity(config)
    fields.update(epsilon=threat.epsilon, step_size=threat.step_size, step_fraction=None)
    for name, value in fields.items():
        if name in _FLOAT_FIELDS and type(value) is int:
            fields[name] = float(value)
    return runs.normalise(fields)


_FLOAT_FIELDS = {f.name for f in dataclasses.fields(config_lib.TrainConfig) if f.type is float}


def group(evaluations):
    """`{label: [evaluation, ...]}`, runs that differ only in the seed together, by seed.

    Raises:
        ValueError: If the evaluations do not share `SHARED`, or a group has
            the same seed twice.
    """
    for key in SHARED:
        values = sorted({str(e[key]) for e in evaluations})
        if len(values) > 1:
            raise ValueError(
                f"Invalid evaluations: they differ in `{key}` ({', '.join(values)}). Expected "
                "evaluations of the same protocol, dataset, ε and images."
            )
    groups = {}
    for e in evaluations:
        groups.setdefault(json.dumps(e["config"], sort_keys=True), []).append(e)
    configs = [members[0]["config"] for members in groups.values()]
    labelled = {}
    for members in groups.values():
        seeds = [e["seed"] for e in members]
        if len(set(seeds)) != len(seeds):
            paths = ", ".join(e["path"] for e in members)
            raise ValueError(f"Invalid evaluations: one setting has seeds {seeds} ({paths}).")
        label = _label(members[0]["config"], configs)
        if label in labelled:  # a guard: `_label` names every difference from the defaults
            raise ValueError(f"Invalid evaluations: two settings are both labelled {label!r}.")
        labelled[label] = sorted(members, key=lambda e: e["seed"])
    return labelled


def _label(config, configs):
    """The method, and the settings in which this group differs from its method's others.

    Only settings away from `trainers.train`'s defaults are named: of two
    groups that differ in a setting, at least one names it, so labels stay
    distinct, and a plain run is labelled by its method alone.
    """
    defaults = setting(dataclasses.asdict(config_lib.TrainConfig()))
    others = [c for c in configs if c["method"] == config["method"] and c != config]
    differing = sorted(
        {
            k
            for other in others
            for k in config
            if other.get(k) != config[k] and config[k] != defaults.get(k)
        }
    )
    if not differing:
        return config["method"]
    return f"{config['method']} ({', '.join(f'{k}={config[k]}' for k in differing)})"


def summary(groups):
    """Per group: its seeds, and each accuracy's mean and standard deviation (ddof 1).

    A group of one run has no spread: its standard deviation is `None`.
    """
    rows = {}
    for label, members in groups.items():
        row = {"seeds": [e["seed"] for e in members]}
        for key in ("clean", "robust"):
            values = np.array([e[key] for e in members])
            std = float(values.std(ddof=1)) if len(values) > 1 else None
            row[key] = (float(values.mean()), std)
        rows[label] = row
    return rows


def paired(groups):
    """For each pair of groups, the paired comparison over their runs of equal seeds.

    Returns:
        A list of dicts with `a`, `b`, `seeds` (those both have), the fields
        of `keras_lfr.evaluation.paired_comparison` over the runs of those
        seeds joined one after another, `per_seed` (each seed's robust A − B)
        and `over_seeds` (`over_seeds(per_seed)`); pairs without a common seed
        or without per-image verdicts are left out.
    """
    comparisons = []
    for a, b in itertools.combinations(groups, 2):
        by_seed = {e["seed"]: e for e in groups[b]}
        matched = [(e, by_seed[e["seed"]]) for e in groups[a] if e["seed"] in by_seed]
        verdicts = [(x["per_example"], y["per_example"]) for x, y in matched]
        if not matched or any(x is None or y is None for x, y in verdicts):
            continue
        result = evaluation.paired_comparison(
            "".join(x for x, _ in verdicts), "".join(y for _, y in verdicts)
        )
        per_seed = [x["robust"] - y["robust"] for x, y in matched]
        comparisons.append(
            {
                "a": a,
                "b": b,
                "seeds": [x["seed"] for x, _ in matched],
                **result,
                "per_seed": per_seed,
                "over_seeds": over_seeds(per_seed),
            }
        )
    return comparisons


def over_seeds(differences, confidence=0.95):
    """The mean of same-seed differences and its Student-t interval over the seeds.

    Each seed's difference carries that seed's training noise and its images'
    sampling error, so the interval counts both.

    Args:
        differences: One difference per seed.
        confidence: Level of the interval. Defaults to `0.95`.

    Returns:
        A dict with `mean`, `std` (ddof 1) and `interval` (mean ± t · std /
        √n, t with n − 1 degrees of freedom), or `None` for fewer than two
        differences.
    """
    n = len(differences)
    if n < 2:
        return None
    values = np.asarray(differences, float)
    mean, std = float(values.mean()), float(values.std(ddof=1))
    half = t_quantile(confidence, n - 1) * std / math.sqrt(n)
    return {"mean": mean, "std": std, "interval": (mean - half, mean + half)}


def ranking(comparisons):
    """Each pair's order over the seeds, decided where its seeds' interval excludes zero.

    Args:
        comparisons: As `paired` returns them.

    Returns:
        One `(higher, lower, decided)` per pair with an interval over seeds
        (`over_seeds`): `higher` is the setting with the larger mean robust
        accuracy over the shared seeds, and `decided` is whether the interval
        of the difference lies wholly above or below zero.
    """
    order = []
    for c in comparisons:
        spread = c["over_seeds"]
        if spread is None:
            continue
        low, high = spread["interval"]
        higher, lower = (c["a"], c["b"]) if spread["mean"] >= 0 else (c["b"], c["a"])
        order.append((higher, lower, low > 0 or high < 0))
    return order


def t_quantile(confidence, df):
    """The t with P(|T| ≤ t) = `confidence` for Student's T with integer `df`.

    Inverts, by bisection, the closed form of P(|T| ≤ t) for integer degrees
    of freedom (Abramowitz & Stegun 26.7.3 and 26.7.4).
    """
    if not 0 < confidence < 1 or df < 1 or int(df) != df:
        raise ValueError(
            f"Invalid values for arguments `confidence` and `df`. Received: {confidence} and "
            f"{df}. Expected 0 < confidence < 1 and a positive integer df."
        )
    low, high = 0.0, 1.0
    while _two_sided_cdf(high, df) < confidence:
        high *= 2
    for _ in range(200):
        middle = (low + high) / 2
        low, high = (middle, high) if _two_sided_cdf(middle, df) < confidence else (low, middle)
    return (low + high) / 2


def _two_sided_cdf(t, df):
    """P(|T| ≤ t), t ≥ 0, for Student's T with integer `df`."""
    theta = math.atan(t / math.sqrt(df))
    if df == 1:
        return 2 * theta / math.pi
    cos2 = math.cos(theta) ** 2
    # Sum of the series' terms: each is the last times cos² θ and a ratio of odd and even.
    term, total = 1.0, 1.0
    if df % 2:
        for k in range(1, (df - 1) // 2):  # 1 + 2/3 cos² + 2·4/(3·5) cos⁴ + …
            term *= cos2 * (2 * k) / (2 * k + 1)
            total += term
        return 2 / math.pi * (theta + math.sin(theta) * math.cos(theta) * total)
    for k in range(1, df // 2):  # 1 + 1/2 cos² + 1·3/(2·4) cos⁴ + …
        term *= cos2 * (2 * k - 1) / (2 * k)
        total += term
    return math.sin(theta) * total


def _percent(mean, std):
    """`mean ± std` in %, or the mean alone when there is no spread (one run)."""
    return f"{100 * mean:.2f}" if std is None else f"{100 * mean:.2f} ± {100 * std:.2f}"


def _interval(interval):
    """`[low, high]` in %, signed."""
    low, high = interval
    return f"[{100 * low:+.2f}, {100 * high:+.2f}]"


def markdown(rows, comparisons):
    """The two tables, in %, and the pairs' order over the seeds (`ranking`)."""
    lines = ["| setting | seeds | clean | robust |", "|---|---|---|---|"]
    for label, row in sorted(rows.items(), key=lambda item: -item[1]["robust"][0]):
        cells = [_percent(*row[k]) for k in ("clean", "robust")]
        lines.append(
            f"| {label} | {', '.join(map(str, row['seeds']))} | " + " | ".join(cells) + " |"
        )
    if comparisons:
        lines += [
            "",
            "| A | B | seeds | robust A − B | 95% interval (images) | only A | only B "
            "| McNemar p | 95% interval (seeds) |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for c in comparisons:
            spread = c["over_seeds"]
            lines.append(
                f"| {c['a']} | {c['b']} | {', '.join(map(str, c['seeds']))} | "
                f"{100 * c['difference']:+.2f} | {_interval(c['interval'])} | "
                f"{c['only_a']} | {c['only_b']} | {c['p_value']:.3g} | "
                f"{'–' if spread is None else _interval(spread['interval'])} |"
            )
    order = ranking(comparisons)
    if order:
        pairs = [f"{a} {'>' if decided else '≈'} {b}" for a, b, decided in order]
        lines += [
            "",
            "Over the seeds (95%): " + " · ".join(pairs) + " (>: the seeds' interval "
            "excludes 0; ≈: it holds 0, the higher mean first)",
        ]
    return "\n".join(lines)


def tables(paths):
    """The command's output: both tables and the ranking line of the evaluations at `paths`.

    Args:
        paths: Paths of `trainers.evaluate --output` files.

    Returns:
        The markdown text `python -m trainers.studies.compare PATHS` prints.

    Raises:
        OSError, ValueError: A file cannot be read or its evaluations cannot
            be compared (see `load` and `group`).
    """
    groups = group([load(os.fspath(path)) for path in paths])
    return markdown(summary(groups), paired(groups))
