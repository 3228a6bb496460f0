r"""The docs' tables of results, generated from the zoo's records and the committed JSON.

    python -m trainers.studies.tables          # rewrite every generated table of the docs
    python -m trainers.studies.tables --check  # exit 1, naming each table that is out of date

Every table of results in README.md and docs/ sits between two markers and is
written by this program, never by hand:

- `<!-- table:NAME:begin -->` ... `<!-- table:NAME:end -->`: `NAME` is one of
  `BLOCKS` (tables of the zoo's records, `keras_lfr/zoo/models/**/record.json`,
  and of the seed study, `results/seeds/*.json`), or `FILE/TABLE`: the table
  `TABLE` of `results/FILE.json` (`{"about": ..., "tables": {TABLE: {"columns",
  "rows", "formats", "notes"}}}`; `formats` holds a format spec per column for
  numbers, `notes` the measured figures the table does not show).
- `<!-- leaderboard:begin -->` ... `<!-- leaderboard:end -->`: the zoo's
  leaderboard (`trainers.studies.release.leaderboard`).
- `<!-- reproduce:...:begin -->` ... `<!-- reproduce:...:end -->`: a
  `trainers.studies.reproduce` report (`trainers.studies.report.report`, without its title:
  the page gives its own) of the run whose output is
  `results/reproduce/<budget>_<dataset>.json`.

A test regenerates every table and compares (`tests/docs/test_tables.py`).
"""

import dataclasses
import glob
import itertools
import json
import os
import re
import sys

# The repository: README.md, docs/ and results/ live beside trainers/.
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
RESULTS = os.path.join(REPO, "results")
# Markdown files that hold generated tables.
DOCUMENTS = ("README.md", "docs/**/*.md")
_MARKER = re.compile(r"<!-- ((?:table|reproduce)(?::[^ ]+)?|leaderboard):begin -->\n")


def percent(value, digits=2):
    """`0.8936` -> `"89.36"`."""
    return f"{100 * value:.{digits}f}"


def markdown(columns, rows):
    """A markdown table of string cells."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def cell(value, spec=None):
    """One cell of a JSON table: `None` is `–`, strings as they are, numbers by `spec`."""
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if spec:
        return format(value, spec)
    return f"{value:,}" if isinstance(value, int) else f"{value:g}"


def json_table(name):
    """The markdown of `FILE/TABLE`: the table `TABLE` of `results/FILE.json`."""
    stem, _, key = name.partition("/")
    with open(os.path.join(RESULTS, f"{stem}.json")) as f:
        spec = json.load(f)["tables"][key]
    formats = spec.get("formats") or [None] * len(spec["columns"])
    rows = [[cell(v, f) for v, f in zip(row, formats, strict=True)] for row in spec["rows"]]
    if not rows:
        rows = [["*none yet*"] + ["–"] * (len(spec["columns"]) - 1)]
    return markdown(spec["columns"], rows)


def _records():
    from keras_lfr import zoo

    return [zoo.info(name) for name in zoo.available()]


def _sample(evaluation):
    return "all 10,000" if evaluation["examples"] == 10000 else f"first {evaluation['examples']:,}"


def _method(record):
    names = {"pgd_at": "PGD-AT", "trades": "TRADES", "lfr": "LFR"}
    name = names.get(record["method"], record["method"])
    return name + ("-AWP" if record["hyperparameters"].get("awp_gamma", 0.0) > 0 else "")


def _flags(command):
    """A training command's flags, without the run's directory and verbosity."""
    kept = [
        word
        for word in command.split()
        if word.startswith("--") and not word.startswith(("--model_dir", "--verbose"))
    ]
    return " ".join(kept)


def _checks(evaluation):
    failed = [c["name"] for c in evaluation["sanity_checks"] if not c["passed"]]
    return "all pass" if not failed else "fails: " + "; ".join(failed)


def _order(records):
    """MNIST first, then those on the whole test set, then by robust accuracy."""
    return sorted(
        records,
        key=lambda r: (
            r["dataset"] != "mnist",
            -r["evaluation"]["examples"],
            -r["evaluation"]["robust"],
        ),
    )


def zoo_summary():
    """The README's table: every zoo entry, beside two published MNIST rows."""
    from .leaderboard import PUBLISHED_MNIST

    rows = []
    for record in _order(_records()):
        evaluation = record["evaluation"]
        rows.append(
            [
                f"`{record['name']}`",
                _method(record),
                f"{percent(evaluation['clean'])}%",
                f"**{percent(evaluation['robust'])}%**",
                _sample(evaluation),
                f"{record['training']['wall_time_minutes']:.0f} min",
            ]
        )
    published = {row[0]: row for row in PUBLISHED_MNIST}
    for name in ("TRADES (Zhang et al. 2019), SmallCNN", "Madry et al. 2018"):
        _, clean, robust, compute = published[name]
        training = "100 GPU epochs" if "GPU" in compute else compute
        rows.append([name, "published", f"{clean:.2f}%", f"{robust:.2f}%", "all 10,000", training])
    columns = ["model", "method", "clean", "AutoAttack", "test images", "training"]
    return markdown(columns, rows)


def zoo_entries():
    """Each entry's method, training flags and sanity checks."""
    rows = [
        [
            f"`{record['name']}`",
            _method(record),
            f"`{_flags(record['training']['command'])}`",
            str(record["training"]["seed"]),
            _checks(record["evaluation"]),
        ]
        for record in _order(_records())
    ]
    columns = ["entry", "method", "`trainers.train` flags", "seed", "sanity checks (500 images)"]
    return markdown(columns, rows)


def zoo_attacks():
    """Each entry's accuracy after each attack of its cascade, with the standard error."""
    rows = []
    for record in _order(_records()):
        evaluation = record["evaluation"]
        n, robust = evaluation["examples"], evaluation["robust"]
        error = 100 * (robust * (1 - robust) / n) ** 0.5
        attacks = evaluation["per_attack"]
        rows.append(
            [
                f"`{record['name']}`",
                _sample(evaluation),
                percent(evaluation["clean"]),
                *(percent(attacks[a]) for a in ("apgd_ce", "apgd_t", "fab_t")),
                f"**{percent(attacks['square'])}** ({error:.2f})",
            ]
        )
    columns = ["entry", "test images", "clean", "APGD-CE", "+ APGD-T", "+ FAB-T", "+ Square (s.e.)"]
    return markdown(columns, rows)


def zoo_paired():
    """Every pair of entries on one dataset, compared image by image (`keras_lfr.zoo.compare`)."""
    from keras_lfr import zoo

    rows = []
    records = _order(_records())
    for a, b in itertools.combinations(records, 2):
        if a["dataset"] != b["dataset"]:
            continue
        found = zoo.compare(a["name"], b["name"])
        low, high = found["interval"]
        rows.append(
            [
                f"`{a['name']}`",
                f"`{b['name'].rpartition('/')[2]}`",
                f"{100 * found['difference']:+.2f}",
                f"{100 * low:+.2f} to {100 * high:+.2f}",
                f"{found['only_a']:,}",
                f"{found['only_b']:,}",
                f"{found['p_value']:.2g}",
            ]
        )
    columns = [
        "A",
        "B",
        "robust A − B (pp)",
        "95% interval",
        "robust for A only",
        "for B only",
        "McNemar p",
    ]
    return markdown(columns, rows)


def _seed_paths():
    return sorted(glob.glob(os.path.join(RESULTS, "seeds", "*.json")))


def seeds():
    """The seed study's tables (`trainers.studies.compare.tables` on `results/seeds/`)."""
    from .comparing import tables

    return tables(_seed_paths()).rstrip("\n")


def seed_costs():
    """Each seed run's training time (`results/seed_training.json`) and evaluation cost.

    The evaluation's seconds are summed over its chunks, those of an earlier,
    resumed process included.
    """
    from .seeds import parse_result_path

    with open(os.path.join(RESULTS, "seed_training.json")) as f:
        training = json.load(f)["runs"]
    rows = []
    for path in _seed_paths():
        with open(path) as f:
            stored = json.load(f)
        name, seed = parse_result_path(path)
        if seed != stored["run"]["seed"]:
            raise ValueError(f"Invalid seed run {path!r}: it holds seed {stored['run']['seed']}.")
        run = f"{name}, seed {seed}"
        rows.append(
            [
                run,
                cell(training[run]["training"]),
                training[run]["cores"],
                f"{sum(stored['results']['cpu_seconds'].values()):,.0f}",
                f"{sum(stored['results']['seconds'].values()) / 60:.0f} min",
            ]
        )
    columns = ["run", "training", "cores", "evaluation, CPU seconds", "evaluation, wall time"]
    return markdown(columns, rows)


def reproduce_report(key):
    """The `trainers.studies.reproduce` report of `results/reproduce/<budget>_<dataset>.json`."""
    from keras_lfr import evaluation

    from . import report

    name = "reduced_mnist" if key == "" else key.replace(":", "_")
    with open(os.path.join(RESULTS, "reproduce", f"{name}.json")) as f:
        output = json.load(f)
    for result in output["methods"].values():
        result["checks"] = [
            evaluation.Check(c["name"], c["passed"], c.get("detail") or "")
            for c in result["checks"]
        ]
    # `trainers.studies.reproduce` writes its output without the command; add it to the JSON.
    command = output.get("command") or (
        "python -m trainers.studies.reproduce "
        f"--budget={output['budget']} --dataset={output['dataset']}"
    )
    return report.report(output, command, heading=False)


def _mixed_precision_rows(name):
    """The rows of `results/mixed_precision/<name>.json`, each model with its table label."""
    with open(os.path.join(RESULTS, "mixed_precision", f"{name}.json")) as f:
        rows = json.load(f)["rows"]
    for row in rows:
        row["label"] = f"`{row['model']}`" if row["model"] != "authors" else "the authors' LFR"
    return rows


def mixed_precision():
    """Mixed precision against float32, image by image (`results/mixed_precision/verdicts.json`)."""
    rows = _mixed_precision_rows("verdicts")

    def cascade(row, precision):
        steps = row["cascade"].get(precision)
        return " → ".join(str(n) for n in steps.values()) if steps else "–"

    def seconds(row, precision):
        value = row["cpu_seconds"].get(precision)
        return f"{value:,.0f}" if value is not None else "–"

    table = [
        [
            row["label"],
            cell(row["examples"]),
            cell(row["robust_only_mixed"]),
            cell(row["robust_only_float32"]),
            cascade(row, "mixed"),
            cascade(row, "float32"),
            seconds(row, "mixed"),
            seconds(row, "float32"),
        ]
        for row in rows
    ]
    columns = [
        "model",
        "images",
        "robust only under mixed",
        "robust only under float32",
        "mixed: clean → APGD-CE → APGD-T → FAB-T → Square",
        "float32: the same",
        "mixed, CPU s",
        "float32, CPU s",
    ]
    return markdown(columns, table)


def mixed_precision_timing():
    """Both precisions in one process on one machine (`results/mixed_precision/timing.json`)."""
    rows = _mixed_precision_rows("timing")
    float32 = {
        row["model"]: row["cpu_seconds_per_1000"] for row in rows if row["precision"] == "float32"
    }
    table = [
        [
            row["label"],
            row["precision"],
            cell(row["examples"]),
            cell(100 * row["robust"], ".1f"),
            cell(row["cpu_seconds_per_1000"], ",.0f"),
            cell(row["seconds_per_1000"], ",.0f"),
            cell(row["cpu_seconds_per_1000"] / float32[row["model"]], ".2f"),
        ]
        for row in rows
    ]
    columns = [
        "model",
        "precision",
        "images",
        "robust",
        "CPU s per 1,000 images",
        "wall s per 1,000 images",
        "of float32's CPU time",
    ]
    return markdown(columns, table)


BLOCKS = {
    "zoo-summary": zoo_summary,
    "zoo-entries": zoo_entries,
    "zoo-attacks": zoo_attacks,
    "zoo-paired": zoo_paired,
    "seeds": seeds,
    "seed-costs": seed_costs,
    "mixed-precision": mixed_precision,
    "mixed-precision-timing": mixed_precision_timing,
}


def generate(marker):
    """The text between the begin and end lines of a marker, e.g. `table:zoo-summary`."""
    kind, _, name = marker.partition(":")
    if kind == "leaderboard":
        from . import leaderboard

        return leaderboard.markdown(_records())
    if kind == "reproduce":
        return reproduce_report(name) + "\n"
    if name in BLOCKS:
        return BLOCKS[name]() + "\n"
    if "/" in name:
        return json_table(name) + "\n"
    raise ValueError(
        f"Invalid table marker {marker!r}. Expected `table:NAME` with NAME one of "
        f"{sorted(BLOCKS)} or FILE/TABLE of results/FILE.json, `leaderboard` or `reproduce:...`."
    )


def documents():
    """The markdown files that may hold generated tables, relative to the repository."""
    paths = []
    for pattern in DOCUMENTS:
        paths += sorted(glob.glob(os.path.join(REPO, pattern), recursive=True))
    return [os.path.relpath(path, REPO) for path in paths]


@dataclasses.dataclass
class Block:
    """One generated table in a markdown file."""

    path: str
    marker: str
    text: str  # as the file holds it

    @property
    def begin(self):
        return f"<!-- {self.marker}:begin -->\n"

    @property
    def end(self):
        return f"<!-- {self.marker}:end -->"


def blocks(text, path=""):
    """The generated tables of a markdown text, in order."""
    found = []
    for match in _MARKER.finditer(text):
        marker = match.group(1)
        end = f"<!-- {marker}:end -->"
        start = match.end()
        stop = text.find(end, start)
        if stop < 0:
            raise ValueError(f"{path}: the marker {marker!r} has no end line {end!r}.")
        found.append(Block(path, marker, text[start:stop]))
    return found


def update(text, path=""):
    """`text` with every generated table regenerated."""
    for block in blocks(text, path):
        text = text.replace(
            block.begin + block.text + block.end,
            block.begin + generate(block.marker) + block.end,
            1,
        )
    return text


def stale():
    """`path: marker` of every generated table that differs from its regeneration."""
    out = []
    for path in documents():
        with open(os.path.join(REPO, path)) as f:
            text = f.read()
        out += [f"{path}: {b.marker}" for b in blocks(text, path) if b.text != generate(b.marker)]
    return out


def main(argv):
    if "--check" in argv[1:]:
        found = stale()
        for line in found:
            print(f"out of date: {line}")
        if found:
            print("Run `python -m trainers.studies.tables` to regenerate them.")
        return 1 if found else 0
    for path in documents():
        full = os.path.join(REPO, path)
        with open(full) as f:
            text = f.read()
        updated = update(text, path)
        if updated != text:
            with open(full, "w") as f:
                f.write(updated)
            print(f"updated {path}")
    return 0


def run():
    """The entry point of `python -m trainers.studies.tables`."""
    sys.exit(main(sys.argv))


if __name__ == "__main__":
    run()
