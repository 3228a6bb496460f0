"""`trainers.studies.seeds`: the README's runs from several seeds, resumable and comparable."""

import dataclasses
import json
import shutil

import pytest
from test_reproduce import parsed_command

from trainers import evaluating, training
from trainers.studies import budgets, comparing, seeds


@pytest.mark.parametrize("method", seeds.METHODS)
@pytest.mark.parametrize("seed", [0, 2])
def test_each_printed_command_trains_exactly_its_runs_config(method, seed):
    command = seeds.train_command(method, seed, "/runs")
    assert command.endswith(f" --seed={seed} --model_dir=/runs/{method}_s{seed}")
    assert parsed_command(command) == seeds.BUDGET.train_config(method, "mnist", seed=seed)


def test_the_runs_are_the_zoos_commands():
    assert seeds.train_command("lfr_cos10_e24", 1, "runs/seeds") == (
        "python -m trainers.train --recipe=fast --method=lfr --epochs=24 "
        "--epsilon_warmup_epochs=10 --epsilon_warmup_shape=cosine --seed=1 "
        "--model_dir=runs/seeds/lfr_cos10_e24_s1"
    )
    # LFR + AWP as it was chosen: AWP from epoch 5 (not the ramp's end), 1,000 images held out.
    assert seeds.train_command("lfr_awp_cos10_e40", 2, "runs/seeds") == (
        "python -m trainers.train --recipe=fast --method=lfr --epochs=40 --awp_gamma=0.005 "
        "--awp_warmup=5 --epsilon_warmup_epochs=10 --epsilon_warmup_shape=cosine "
        "--validation_examples=1000 --seed=2 --model_dir=runs/seeds/lfr_awp_cos10_e40_s2"
    )
    for method in seeds.METHODS:  # the fast budget's rows, less the per-epoch curve
        fast = budgets.BUDGETS["fast"].train_config(method)
        assert seeds.BUDGET.train_config(method) == dataclasses.replace(
            fast, attack_eval_examples=0
        )


@pytest.mark.parametrize(
    "name, expected",
    [
        ("pgd_at_s0.json", ("pgd_at", 0)),
        ("lfr_cos10_e24_seed1_s12.json", ("lfr_cos10_e24_seed1", 12)),
    ],
)
def test_result_paths_parse_back_to_their_run(name, expected):
    assert seeds.parse_result_path(f"results/seeds/{name}") == expected
    method, seed = expected
    assert seeds.result_path("results/seeds", method, seed) == f"results/seeds/{name}"


@pytest.mark.parametrize("name", ["pgd_at.json", "pgd_at_s0.txt", "pgd_at_sx.json"])
def test_result_paths_of_another_shape_are_refused(name):
    with pytest.raises(ValueError, match="Expected a file named <method>_s<seed>.json"):
        seeds.parse_result_path(name)


def test_unknown_methods_are_refused(tmp_path):
    with pytest.raises(ValueError, match=r"methods=\['lfr'\].*Expected names from"):
        seeds.run_seeds(["lfr"], [0], str(tmp_path / "runs"), str(tmp_path / "results"))


def test_runs_are_evaluated_once_and_compared_from_their_results_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(
        seeds, "BUDGET", dataclasses.replace(budgets.BUDGETS["smoke_fast"], curve_examples=0)
    )
    model_dir, results_dir = str(tmp_path / "runs"), str(tmp_path / "results")
    paths = seeds.run_seeds(["pgd_at", "trades"], [1], model_dir, results_dir, 4, verbose=0)
    assert [p.rsplit("/", 1)[1] for p in paths] == ["pgd_at_s1.json", "trades_s1.json"]
    output = json.loads(open(paths[1]).read())
    assert (output["protocol"], output["results"]["examples"]) == ("autoattack", 4)
    assert (output["run"]["method"], output["run"]["seed"]) == ("trades", 1)
    assert output["train_command"] == seeds.train_command("trades", 1, model_dir)
    # With the models gone, the results still group by setting and pair by seed.
    shutil.rmtree(model_dir)
    groups = comparing.group([comparing.load(p) for p in paths])
    assert {label: [e["seed"] for e in runs] for label, runs in groups.items()} == {
        "pgd_at": [1],
        "trades": [1],
    }
    (pair,) = comparing.paired(groups)
    assert pair["seeds"] == [1] and pair["examples"] == 4

    # A second call trains and evaluates nothing: every result is there.
    def refuse(*args, **kwargs):
        raise AssertionError("trained again")

    monkeypatch.setattr(training, "train_and_evaluate", refuse)
    assert seeds.run_seeds(["pgd_at", "trades"], [1], model_dir, results_dir, 4) == paths


def test_runs_go_seed_by_seed_and_a_killed_study_continues_at_the_first_missing_run(
    tmp_path, monkeypatch
):
    trained = []

    def fake_train(config, directory, command=None):
        trained.append((config.method, config.seed))
        if len(trained) == 3:
            raise KeyboardInterrupt  # killed during the third run

    monkeypatch.setattr(training, "train_and_evaluate", fake_train)
    monkeypatch.setattr(evaluating, "evaluate", lambda config: {"model": config.model})
    args = (["pgd_at", "trades"], [0, 1], str(tmp_path / "runs"), str(tmp_path / "results"))
    with pytest.raises(KeyboardInterrupt):
        seeds.run_seeds(*args)
    assert trained == [("pgd_at", 0), ("trades", 0), ("pgd_at", 1)]
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == [
        "pgd_at_s0.json",
        "trades_s0.json",
    ]
    seeds.run_seeds(*args)
    assert trained[3:] == [("pgd_at", 1), ("trades", 1)]
