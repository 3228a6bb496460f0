"""`trainers.studies.compare`: groups evaluations by setting, averages seeds, pairs seeded runs."""

import json
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from conftest import REPO

from keras_lfr import evaluation
from trainers import runs
from trainers.studies import comparing

BASE = {"method": "pgd_at", "steps": 5, "epsilon_warmup_shape": "linear"}


def write_evaluation(tmp_path, name, config, verdicts, clean=0.99, protocol="autoattack"):
    """A run directory with `run.json` and the JSON `trainers.evaluate --output` writes."""
    run = runs.RunDir(tmp_path / name)
    (tmp_path / name).mkdir()
    runs.write_json(run.run_file, config)
    verdicts = evaluation.flags_to_string(verdicts)
    output = {
        "config": {"model": run.model},
        "protocol": protocol,
        "dataset": "mnist",
        "epsilon": 0.3,
        "results": {
            "clean": clean,
            "worst_case": verdicts.count("1") / len(verdicts),
            "examples": len(verdicts),
            "per_example": verdicts,
        },
    }
    path = tmp_path / name / "autoattack.json"
    path.write_text(json.dumps(output))
    return str(path)


@pytest.fixture
def study(tmp_path):
    """Two settings of three seeds each (LFR's with a cosine ramp) on 200 images."""
    rng = np.random.default_rng(0)
    verdicts, paths = {}, []
    for seed in range(3):
        for method, extra in (("pgd_at", {}), ("lfr", {"epsilon_warmup_shape": "cosine"})):
            v = rng.uniform(size=200) < (0.92 if method == "pgd_at" else 0.89)
            verdicts[method, seed] = v
            config = {**BASE, "method": method, **extra, "seed": seed}
            paths.append(
                write_evaluation(tmp_path, f"{method}_s{seed}", config, v, 0.99 - seed / 100)
            )
    # A second LFR setting, one seed: its label names the setting that differs.
    config = {**BASE, "method": "lfr", "steps": 10, "epsilon_warmup_shape": "cosine", "seed": 0}
    paths.append(write_evaluation(tmp_path, "lfr_k10", config, verdicts["lfr", 0]))
    return paths, verdicts


def test_seeds_are_averaged_per_setting(study):
    paths, verdicts = study
    groups = comparing.group([comparing.load(p) for p in paths])
    assert sorted(groups) == ["lfr (steps=10)", "lfr (steps=5)", "pgd_at"]
    rows = comparing.summary(groups)
    robust = [verdicts["pgd_at", s].mean() for s in range(3)]
    assert rows["pgd_at"]["seeds"] == [0, 1, 2]
    assert rows["pgd_at"]["robust"] == pytest.approx((np.mean(robust), np.std(robust, ddof=1)))
    assert rows["pgd_at"]["clean"] == pytest.approx((0.98, 0.01))
    assert rows["lfr (steps=10)"]["robust"][1] is None  # one seed: no spread
    table = comparing.markdown(rows, [])
    assert f"| lfr (steps=10) | 0 | 99.00 | {100 * verdicts['lfr', 0].mean():.2f} |" in table
    assert f"| pgd_at | 0, 1, 2 | 98.00 ± 1.00 | {100 * np.mean(robust):.2f} ± " in table


def test_labels_name_only_the_settings_away_from_the_defaults(tmp_path):
    """Plain LFR against LFR with AWP: AWP's group names its settings, the plain one none."""
    verdicts = np.ones(10, bool)
    awp = {"awp_gamma": 0.005, "awp_warmup": 5}
    paths = [
        write_evaluation(tmp_path, name, {**BASE, "method": "lfr", **extra, "seed": 0}, verdicts)
        for name, extra in (("plain", {}), ("awp", awp), ("awp_lam", {**awp, "lam": 0.05}))
    ]
    groups = comparing.group([comparing.load(p) for p in paths])
    assert sorted(groups) == [
        "lfr",
        "lfr (awp_gamma=0.005, awp_warmup=5)",
        "lfr (awp_gamma=0.005, awp_warmup=5, lam=0.05)",
    ]


def test_a_float_setting_given_as_an_integer_is_the_same_setting(tmp_path):
    """A ramp of `10` epochs (a study's config) and `10.0` (the command line) group together."""
    verdicts = np.ones(10, bool)
    paths = [
        write_evaluation(
            tmp_path, f"s{seed}", {**BASE, "epsilon_warmup_epochs": ramp, "seed": seed}, verdicts
        )
        for seed, ramp in ((0, 10.0), (1, 10))
    ]
    groups = comparing.group([comparing.load(p) for p in paths])
    assert {label: [e["seed"] for e in runs] for label, runs in groups.items()} == {
        "pgd_at": [0, 1]
    }


def test_pairs_join_the_runs_of_equal_seeds(study):
    paths, verdicts = study
    comparisons = comparing.paired(comparing.group([comparing.load(p) for p in paths]))
    pair = next(c for c in comparisons if {c["a"], c["b"]} == {"pgd_at", "lfr (steps=5)"})
    a = np.concatenate(
        [verdicts["pgd_at" if pair["a"] == "pgd_at" else "lfr", s] for s in range(3)]
    )
    b = np.concatenate(
        [verdicts["lfr" if pair["a"] == "pgd_at" else "pgd_at", s] for s in range(3)]
    )
    expected = evaluation.paired_comparison(a, b)
    assert pair["seeds"] == [0, 1, 2] and pair["examples"] == 600
    assert pair["only_a"] == expected["only_a"] == int(np.sum(a & ~b))
    assert pair["difference"] == pytest.approx(a.mean() - b.mean())
    k10 = [c for c in comparisons if "lfr (steps=10)" in (c["a"], c["b"])]
    assert all(c["seeds"] == [0] and c["examples"] == 200 for c in k10)


def test_pairs_carry_an_interval_over_their_seeds(study):
    """Mean of the same-seed differences ± t(0.975, 2) · std / √3; one seed: none."""
    paths, verdicts = study
    groups = comparing.group([comparing.load(p) for p in paths])
    comparisons = comparing.paired(groups)
    pair = next(c for c in comparisons if {c["a"], c["b"]} == {"pgd_at", "lfr (steps=5)"})
    sign = 1 if pair["a"] == "pgd_at" else -1
    d = [sign * (verdicts["pgd_at", s].mean() - verdicts["lfr", s].mean()) for s in range(3)]
    assert pair["per_seed"] == pytest.approx(d)
    half = 4.302652729749 * np.std(d, ddof=1) / np.sqrt(3)  # t table, 2 degrees of freedom
    spread = pair["over_seeds"]
    assert spread["mean"] == pytest.approx(np.mean(d))
    assert spread["mean"] == pytest.approx(pair["difference"])  # equal images per seed
    assert spread["interval"] == pytest.approx((np.mean(d) - half, np.mean(d) + half))
    k10 = next(c for c in comparisons if "lfr (steps=10)" in (c["a"], c["b"]))
    assert k10["over_seeds"] is None
    table = comparing.markdown(comparing.summary(groups), [k10, pair]).splitlines()
    low, high = (100 * x for x in spread["interval"])
    rows = [line for line in table if line.startswith(f"| {pair['a']} | {pair['b']} |")]
    rows += [line for line in table if line.startswith(f"| {k10['a']} | {k10['b']} |")]
    assert rows[0].endswith(f" | [{low:+.2f}, {high:+.2f}] |")
    assert rows[1].endswith(" | – |")
    # The last line orders the one pair with an interval over seeds.
    decided = low > 0 or high < 0
    higher, lower = (pair["a"], pair["b"]) if np.mean(d) >= 0 else (pair["b"], pair["a"])
    assert table[-1].startswith(
        f"Over the seeds (95%): {higher} {'>' if decided else '≈'} {lower} ("
    )


def comparison(a, b, interval):
    """A pair as `compare.paired` gives it, with `interval` over the seeds (`None`: one seed)."""
    spread = None if interval is None else {"mean": sum(interval) / 2, "interval": interval}
    images = {"difference": 0.0, "interval": (0.0, 0.0), "only_a": 0, "only_b": 0, "p_value": 1.0}
    return {"a": a, "b": b, "seeds": [0, 1], **images, "over_seeds": spread}


@pytest.mark.parametrize(
    "interval, expected",
    [
        ((0.01, 0.03), [("A", "B", True)]),  # wholly above zero: A ranks higher
        ((-0.03, -0.01), [("B", "A", True)]),  # wholly below: B
        ((-0.01, 0.03), [("A", "B", False)]),  # holds zero: A's mean is higher, undecided
        ((-0.03, 0.01), [("B", "A", False)]),
        ((0.0, 0.02), [("A", "B", False)]),  # touching zero is not excluding it
        (None, []),  # one shared seed: no interval, no order
    ],
)
def test_ranking_follows_the_seeds_interval(interval, expected):
    assert comparing.ranking([comparison("A", "B", interval)]) == expected


def test_ranking_line_names_every_pair_with_an_interval():
    pairs = [
        comparison("pgd_at", "lfr", (0.01, 0.04)),
        comparison("lfr", "trades", (-0.04, 0.01)),
        comparison("pgd_at", "other", None),
    ]
    table = comparing.markdown({}, pairs)
    assert table.splitlines()[-1].startswith(
        "Over the seeds (95%): pgd_at > lfr · trades ≈ lfr (>: "
    )
    assert "other" not in table.splitlines()[-1]


@pytest.mark.parametrize(
    "confidence, df, expected",  # Student's t table
    [
        (0.95, 1, 12.7062),
        (0.95, 2, 4.3027),
        (0.95, 3, 3.1824),
        (0.95, 4, 2.7764),
        (0.95, 9, 2.2622),
        (0.95, 30, 2.0423),
        (0.99, 2, 9.9248),
        (0.90, 5, 2.0150),
    ],
)
def test_t_quantile_matches_the_table(confidence, df, expected):
    assert comparing.t_quantile(confidence, df) == pytest.approx(expected, abs=1e-4)


def test_t_quantile_approaches_the_normal_one():
    assert comparing.t_quantile(0.95, 2000) == pytest.approx(1.95996, abs=2e-3)


@pytest.mark.parametrize("confidence, df", [(0.95, 0), (1.0, 3), (0.0, 3), (0.95, 2.5)])
def test_t_quantile_refuses_invalid_arguments(confidence, df):
    with pytest.raises(ValueError, match="Expected 0 < confidence < 1 and a positive integer df"):
        comparing.t_quantile(confidence, df)


def test_evaluations_of_different_protocols_or_repeated_seeds_are_refused(tmp_path):
    v = np.ones(10, bool)
    first = write_evaluation(tmp_path, "a", {**BASE, "seed": 0}, v)
    other = write_evaluation(tmp_path, "b", {**BASE, "seed": 1}, v, protocol="strong")
    with pytest.raises(ValueError, match="differ in `protocol`"):
        comparing.group([comparing.load(p) for p in (first, other)])
    again = write_evaluation(tmp_path, "c", {**BASE, "seed": 0}, v)
    with pytest.raises(ValueError, match=r"one setting has seeds \[0, 0\]"):
        comparing.group([comparing.load(p) for p in (first, again)])


def test_evaluations_of_other_images_are_refused(tmp_path):
    """One on the test split (an older file, without `split`), one on held-out training images."""
    v = np.ones(10, bool)
    test = write_evaluation(tmp_path, "a", {**BASE, "seed": 0}, v)
    held_out = write_evaluation(tmp_path, "b", {**BASE, "seed": 1}, v)
    output = json.loads(pathlib.Path(held_out).read_text())
    pathlib.Path(held_out).write_text(json.dumps({**output, "split": "train[59000:]"}))
    with pytest.raises(ValueError, match=r"differ in `split` \(test, train\[59000:\]\)"):
        comparing.group([comparing.load(p) for p in (test, held_out)])


def test_a_run_of_an_older_version_joins_its_setting(tmp_path):
    """A run.json without later fields, its step given absolutely: the same setting."""
    v = np.ones(10, bool)
    older = {"method": "lfr", "step_size": 0.1, "steps": 5, "seed": 0}  # ε = 0.3: 1/3 of it
    newer = {"method": "lfr", "step_size": None, "step_fraction": 1 / 3, "steps": 5, "seed": 1}
    other = {**newer, "step_fraction": 1 / 4, "seed": 2}
    paths = [
        write_evaluation(tmp_path, name, config, v)
        for name, config in (("old", older), ("new", newer), ("other", other))
    ]
    groups = comparing.group([comparing.load(p) for p in paths])
    assert {label: [e["seed"] for e in members] for label, members in groups.items()} == {
        "lfr (step_size=0.1)": [0, 1],
        "lfr (step_size=0.075)": [2],
    }


def test_command_line_prints_both_tables(study):
    paths, _ = study
    completed = subprocess.run(
        [sys.executable, "-m", "trainers.studies.compare", *paths],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    assert lines[0] == "| setting | seeds | clean | robust |"
    assert lines[2].startswith("| pgd_at | 0, 1, 2 | 98.00 ± 1.00 | ")  # most robust first
    assert "| robust A − B | 95% interval (images) |" in completed.stdout


def test_the_seed_tables_in_the_docs_are_the_committed_evaluations():
    paths = sorted((REPO / "results" / "seeds").glob("*.json"))
    assert paths, "results/seeds/ holds no evaluation"
    assert comparing.tables(paths) in (REPO / "docs" / "RESULTS.md").read_text()
