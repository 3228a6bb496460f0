"""Surfaces, the reproduction report and the λ sweep, on a smoke budget."""

import dataclasses
import json
import subprocess
import sys

import numpy as np
import pytest
from absl import flags
from conftest import tiny_model

import keras_lfr
from trainers import config as config_lib
from trainers import train
from trainers.studies import budgets, report, reproduce, sweep


def test_surface_values_match_direct_evaluation():
    model = tiny_model()
    x = np.random.default_rng(0).uniform(size=(8, 8, 1)).astype("float32")
    a, b, decision = keras_lfr.surfaces.surface(model, x, 3, radius=0.2, resolution=5)
    _, _, loss = keras_lfr.surfaces.surface(model, x, 3, radius=0.2, resolution=5, kind="loss")
    d1, d2 = keras_lfr.surfaces.sign_directions(x).numpy()
    assert set(np.unique(d1)) == {-1.0, 1.0}
    i, j = 1, 4
    point = np.clip(x + a[i] * d1 + b[j] * d2, 0, 1)[None]
    logits = model(point).numpy()[0]
    p = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    np.testing.assert_allclose(decision[i, j], p[3] - np.delete(p, 3).max(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(loss[i, j], -np.log(p[3]), rtol=1e-4)
    np.testing.assert_allclose(a, np.linspace(-0.2, 0.2, 5))
    with pytest.raises(ValueError, match="argument `kind`"):
        keras_lfr.surfaces.surface(model, x, 3, kind="accuracy")


def test_reproduce_smoke_budget_writes_tables_and_figures(tmp_path):
    # One method keeps the test short (each model's evaluation traces every
    # attack again); every method's row comes from the same code.
    output = reproduce.reproduce(
        "smoke", ("lfr",), str(tmp_path / "runs"), figures_dir=str(tmp_path)
    )
    result = output["methods"]["lfr"]
    assert set(result["paper"]) >= {"clean", "fgsm", "pgd40", "mi_fgsm", "ddn", "worst_case"}
    assert set(result["strong"]) >= {"apgd_ce", "apgd_t", "square", "worst_case"}
    assert result["gamma"] >= 0 and len(result["checks"]) == 4
    text = report.report(output, "python -m trainers.studies.reproduce --budget=smoke")
    assert "REDUCED budget (smoke)" in text
    assert "| LFR | " in text and "| Standard | " not in text
    assert "(99.47)" in text and "(96.82)" in text  # the paper's numbers beside ours
    assert "| method | γ mean | γ median |" in text
    for path in output["figures"].values():
        assert path.endswith(".png") and (tmp_path / path.split("/")[-1]).stat().st_size > 1000
    results = tmp_path / "RESULTS.md"
    results.write_text("# Results\n\nkept\n")
    report.write_report(text, str(results))
    report.write_report(text.replace("smoke", "again"), str(results))
    written = results.read_text()
    assert written.startswith("# Results\n\nkept\n") and written.count(report.BEGIN) == 1
    assert "again" in written


def test_sweep_smoke(tmp_path):
    results = sweep.sweep([0.0, 0.1], "smoke", str(tmp_path))
    assert sorted(results) == [0.0, 0.1]
    assert all(0 <= r["pgd40"] <= r["clean"] <= 1 for r in results.values())
    path = sweep.plot(results, str(tmp_path / "fig3.png"))
    assert (tmp_path / "fig3.png").stat().st_size > 1000 and path.endswith("fig3.png")


def test_surface_of_a_vector_input_matches_direct_evaluation():
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(3)])
    x = np.random.default_rng(1).uniform(size=6).astype("float32")
    a, b, loss = keras_lfr.surfaces.surface(model, x, 1, radius=0.1, resolution=3, kind="loss")
    d1, d2 = keras_lfr.surfaces.sign_directions(x).numpy()
    logits = model(np.clip(x + a[0] * d1 + b[2] * d2, 0, 1)[None]).numpy()[0]
    expected = np.log(np.exp(logits).sum()) - logits[1]
    np.testing.assert_allclose(loss[0, 2], expected, rtol=1e-4)


def test_fast_recipe_on_fashion_mnist_trains_evaluates_and_reuses_the_evaluation(tmp_path):
    workdir = str(tmp_path / "runs")
    output = reproduce.reproduce(
        "smoke_fast", ("pgd_at",), workdir, figures_dir=str(tmp_path), dataset="fashion_mnist"
    )
    result = output["methods"]["pgd_at"]
    # The recipe's ramp and the per-epoch PGD-40 curve are in the history.
    assert {"epsilon_scale", "wall_time", "val_adv_pgd40_accuracy"} <= set(result["history"])
    strong = result["strong"]
    assert strong["clean"] >= strong["apgd_ce"] >= strong["apgd_t"] >= strong["square"]
    assert strong["square"] == strong["worst_case"]  # the cascade's columns are cumulative
    curve = output["figures"]["curve"]
    assert curve.endswith("fashion_mnist_smoke_fast_accuracy_vs_time.png")
    # Evaluated once: a report over the saved models reads the cached results.
    again = reproduce.reproduce(
        "smoke_fast", ("pgd_at",), workdir, dataset="fashion_mnist", evaluate_only=True
    )
    assert again["methods"]["pgd_at"]["strong"] == strong
    assert again["methods"]["pgd_at"]["eval_seconds"] == result["eval_seconds"]
    text = report.report(again, "python -m trainers.studies.reproduce --budget=smoke_fast")
    assert "on fashion_mnist" in text and "(ε 0.1)" in text and "| AT | " in text
    assert "(95.37)" not in text  # the paper's MNIST numbers are not shown beside Fashion

    def evaluate_with_8_strong_examples():
        return reproduce.reproduce(
            "smoke_fast",
            ("pgd_at",),
            workdir,
            dataset="fashion_mnist",
            evaluate_only=True,
            strong_examples=8,
        )["methods"]["pgd_at"]

    # A changed budget is evaluated again, not read from the cache.
    assert evaluate_with_8_strong_examples()["strong"]["examples"] == 8
    # A part evaluated by an older version of its attacks is evaluated again, alone.
    cache = tmp_path / "runs" / "fashion_mnist" / "pgd_at" / "evaluation.json"
    stored = json.loads(cache.read_text())
    stored["versions"]["strong"] = 1
    stored["strong"]["worst_case"] = stored["paper"]["worst_case"] = -1.0  # markers
    cache.write_text(json.dumps(stored))
    refreshed = evaluate_with_8_strong_examples()
    assert refreshed["strong"]["worst_case"] >= 0.0  # recomputed
    assert refreshed["paper"]["worst_case"] == -1.0  # reused
    assert refreshed["evaluated_parts"] == ["strong"]
    assert json.loads(cache.read_text())["versions"] == reproduce.EVALUATION_VERSIONS
    # A cache from before a part existed gains that part alone.
    stored = json.loads(cache.read_text())
    del stored["versions"]["confidence"], stored["confidence"]
    cache.write_text(json.dumps(stored))
    added = evaluate_with_8_strong_examples()
    assert added["evaluated_parts"] == ["confidence"] and added["strong"] == refreshed["strong"]
    assert added["confidence"] == result["confidence"]
    assert "| median margin |" in report.report({**again, "methods": {"pgd_at": added}}, "cmd")


def train_command(budget, method, dataset="mnist"):
    directory = reproduce.method_dir("/runs", method, dataset)
    return budgets.BUDGETS[budget].train_command(method, dataset, directory)


def parsed_command(command):
    """The `TrainConfig` that `trainers.train` builds from a printed command."""
    flag_values = flags.FlagValues()
    train.define_flags(flag_values)
    flag_values(["prog", *command.split()[3:]])
    return train.config_from_flags(flag_values)


@pytest.mark.parametrize("budget", sorted(budgets.BUDGETS))
@pytest.mark.parametrize("dataset", ["mnist", "fashion_mnist"])
def test_printed_commands_train_exactly_the_budgets_config(budget, dataset):
    for method in reproduce.METHODS:
        command = train_command(budget, method, dataset)
        assert parsed_command(command) == budgets.BUDGETS[budget].train_config(method, dataset)


def test_printed_train_commands_match_the_budget():
    # Off MNIST, ε and the step follow from the dataset: no flag needed.
    assert train_command("fast", "trades", "fashion_mnist") == (
        "python -m trainers.train --recipe=fast --method=trades --dataset=fashion_mnist "
        "--attack_eval_examples=500 --model_dir=/runs/fashion_mnist/trades"
    )

    def ball(config):
        threat = config_lib.threat_model(config)
        return threat.epsilon, threat.step_size

    fashion = budgets.BUDGETS["fast"].train_config("trades", "fashion_mnist")
    assert ball(fashion) == (0.1, 0.033333)
    assert ball(budgets.BUDGETS["fast"].train_config("trades")) == (0.3, 0.1)
    paper = budgets.BUDGETS["paper"].train_config("lfr", "fashion_mnist")
    assert ball(paper) == (0.1, 0.003333)
    assert ball(budgets.BUDGETS["paper"].train_config("lfr")) == (0.3, 0.01)
    config = budgets.BUDGETS["fast"].train_config("lfr")
    assert config.optimizer == "adam" and config.steps == 5 and config.epochs == 20
    # The AWP rows: the base method, AWP on once the 5-epoch ε ramp is over.
    assert train_command("fast", "trades_awp") == (
        "python -m trainers.train --recipe=fast --method=trades --awp_gamma=0.005 "
        "--awp_warmup=5 --attack_eval_examples=500 --model_dir=/runs/trades_awp"
    )
    assert budgets.BUDGETS["smoke"].train_config("lfr_awp").awp_warmup == 0
    # Other variants change their fields only.
    lam = budgets.BUDGETS["fast"].train_config("lfr_lam005")
    assert (lam.method, lam.lam, lam.awp_gamma) == ("lfr", 0.05, 0.0)
    assert train_command("fast", "lfr_lam005") == (
        "python -m trainers.train --recipe=fast --method=lfr --lam=0.05 "
        "--attack_eval_examples=500 --model_dir=/runs/lfr_lam005"
    )
    for method in ("pgd_at", "trades", "lfr"):
        ramp = budgets.BUDGETS["fast"].train_config(f"{method}_ramp10")
        assert (ramp.method, ramp.epsilon_warmup_epochs, ramp.epochs) == (method, 10, 20)
        assert ramp == dataclasses.replace(
            budgets.BUDGETS["fast"].train_config(method), epsilon_warmup_epochs=10
        )
    # A variant may change the budget's epochs or seed too.
    assert train_command("fast", "lfr_ramp10_e24") == (
        "python -m trainers.train --recipe=fast --method=lfr --epochs=24 "
        "--epsilon_warmup_epochs=10 --attack_eval_examples=500 --model_dir=/runs/lfr_ramp10_e24"
    )
    seed = budgets.BUDGETS["fast"].train_config("lfr_ramp10_e24_seed1")
    assert seed == dataclasses.replace(
        budgets.BUDGETS["fast"].train_config("lfr_ramp10_e24"), seed=1
    )
    # The cosine-ramp rows differ from the 24-epoch row in the ramp's shape only.
    for suffix, seed in (("", 0), ("_seed1", 1)):
        cosine = budgets.BUDGETS["fast"].train_config(f"lfr_cos10_e24{suffix}")
        assert cosine == dataclasses.replace(
            budgets.BUDGETS["fast"].train_config("lfr_ramp10_e24"),
            epsilon_warmup_shape="cosine",
            seed=seed,
        )


def test_each_budget_and_dataset_writes_its_own_report_section(tmp_path):
    results = str(tmp_path / "RESULTS.md")
    report.write_report("reduced table", results, *report.markers("reduced"))
    report.write_report("fast table", results, *report.markers("fast"))
    report.write_report("fashion", results, *report.markers("fast", "fashion_mnist"))
    report.write_report("fast again", results, *report.markers("fast"))
    text = open(results).read()
    assert "reduced table" in text and "fashion" in text and "fast again" in text
    assert "fast table" not in text and text.count(report.BEGIN) == 1


@pytest.mark.parametrize("budget", sorted(budgets.BUDGETS))
def test_every_method_of_every_budget_trains_without_dropout(budget):
    # Like for like, and the LFR authors' setting (`--drop` defaults to 0 in
    # their MNIST script); TRADES' 0.5 is reachable with --dropout=0.5.
    for method in reproduce.METHODS:
        config = budgets.BUDGETS[budget].train_config(method)
        assert config.dropout == 0.0, (budget, method)
    assert "--dropout" not in train_command(budget, "trades")


def test_bare_reproduce_trains_the_table_rows_and_no_exploratory_variant():
    # `--methods` defaults to the published tables' rows; an exploratory
    # variant (here LFR at λ = 0.05) trains only when named.
    def printed(*extra):
        command = [
            sys.executable,
            "-m",
            "trainers.studies.reproduce",
            "--budget=fast",
            "--print_commands",
        ]
        out = subprocess.run(
            [*command, "--model_dir=/runs", *extra], capture_output=True, text=True, check=True
        ).stdout
        return [line.rsplit("/", 1)[-1] for line in out.splitlines()]

    default = printed()
    assert default == list(reproduce.TABLE_METHODS)
    assert {"trades_awp", "lfr_awp", "pgd_at_ramp10", "trades_ramp10", "lfr_ramp10"} <= set(default)
    assert {"lfr_ramp10_e24", "lfr_cos10_e24"} <= set(default)
    assert not set(budgets.EXPLORATORY) & set(default)
    assert printed("--methods=lfr,lfr_lam005") == ["lfr", "lfr_lam005"]


def test_every_method_has_its_own_row_name_and_every_variant_trains_a_method():
    labels = [report.NAMES[method] for method in reproduce.METHODS]
    assert len(set(labels)) == len(labels)
    for name, variant in budgets.VARIANTS.items():
        assert variant.method in keras_lfr.available_methods()
        # A variant's changes are `TrainConfig` fields (a typo would fail here).
        config = budgets.BUDGETS["fast"].train_config(name)
        assert all(getattr(config, field) == value for field, value in variant.changes.items())
