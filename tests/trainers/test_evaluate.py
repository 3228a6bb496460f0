"""`trainers.evaluate`: model sources, protocols, defaults from the model, the command line."""

import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest
from conftest import REFERENCE_WEIGHTS, REPO, console_script, needs_reference_weights

import keras_lfr
from keras_lfr import evaluation
from trainers import evaluating


@needs_reference_weights
def test_evaluate_script_on_npz_and_savedmodel_agree(tmp_path):
    config = evaluating.EvalConfig(
        weights=REFERENCE_WEIGHTS,
        protocol="paper",
        cascade=False,
        examples=64,
        batch_size=64,
        verbose=0,
    )
    from_npz = evaluating.evaluate(config)["results"]
    assert set(from_npz.pop("seconds")) == {"clean", "fgsm", "pgd40", "mi_fgsm", "ddn"}
    assert set(from_npz.pop("cpu_seconds")) == {"clean", "fgsm", "pgd40", "mi_fgsm", "ddn"}
    assert from_npz["clean"] > 0.95 and from_npz["pgd40"] <= from_npz["clean"]
    cnn = evaluating.load_model(config)
    keras_lfr.export(cnn, tmp_path / "saved")
    config = evaluating.EvalConfig(
        model=str(tmp_path / "saved"),
        protocol="paper",
        cascade=False,
        examples=64,
        batch_size=64,
        verbose=0,
    )
    from_saved = evaluating.evaluate(config)["results"]
    del from_saved["seconds"], from_saved["cpu_seconds"]
    assert from_saved == pytest.approx(from_npz, abs=1 / 64)


@needs_reference_weights
def test_evaluate_command_line_writes_json(tmp_path):
    out = tmp_path / "r.json"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "trainers.evaluate",
            f"--weights={REFERENCE_WEIGHTS}",
            "--protocol=paper",
            "--nocascade",
            "--examples=32",
            "--batch_size=32",
            f"--output={out}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "| model | clean | fgsm | pgd40 | mi_fgsm | ddn | worst_case |" in completed.stdout
    assert json.loads(out.read_text())["results"]["examples"] == 32


def test_evaluate_needs_exactly_one_model_source():
    with pytest.raises(ValueError, match="exactly one of `model`"):
        evaluating.load_model(evaluating.EvalConfig())
    both = evaluating.EvalConfig(model="m.keras", zoo="mnist/linf-0.3/pgd-at-fast")
    with pytest.raises(ValueError, match="and `zoo` .*zoo='mnist/linf-0.3/pgd-at-fast'"):
        evaluating.evaluate(both)


@needs_reference_weights
def test_evaluate_runs_a_chosen_subset_and_rejects_unknown_attacks():
    config = evaluating.EvalConfig(
        weights=REFERENCE_WEIGHTS,
        protocol="paper",
        examples=16,
        batch_size=16,
        attacks=("pgd40",),
        verbose=0,
    )
    results = evaluating.evaluate(config)["results"]
    assert set(results) == {
        "clean",
        "pgd40",
        "worst_case",
        "examples",
        "seconds",
        "cpu_seconds",
    } | {"per_example"}
    assert len(results["per_example"]) == 16
    assert set(results["seconds"]) == set(results["cpu_seconds"]) == {"clean", "pgd40"}
    # --flatness: γ and the confidence on the same 16 images, as computed directly.
    config.flatness = True
    flat = evaluating.evaluate(config)["flatness"]
    cnn = evaluating.load_model(config)
    x, y = evaluating.test_batch("mnist", 16)
    gamma, points = keras_lfr.local_flatness(cnn, x, y, 0.3, 0.1, 5, return_points=True)
    assert flat["examples"] == 16 and flat["gamma_median"] == pytest.approx(np.median(gamma))
    assert flat["clean_ce"] == pytest.approx(evaluation.confidence(cnn, x, y)["clean_ce"])
    pressure = keras_lfr.logit_scale_pressure(cnn, x, y, points)
    assert flat["logit_scale_pressure"] == pytest.approx(pressure)
    config.attacks = ("pgd41",)
    with pytest.raises(ValueError, match="argument `attacks`"):
        evaluating.evaluate(config)


@needs_reference_weights
def test_evaluate_runs_the_sanity_checks_on_the_chosen_images(monkeypatch):
    seen = {}

    def recorder(model, x, y, *, epsilon, queries, black_box):
        seen.update(x=np.asarray(x), y=np.asarray(y), epsilon=epsilon, queries=queries)
        seen.update(black_box=black_box)
        return [evaluation.Check("recorded", True, "")]

    monkeypatch.setattr(keras_lfr.evaluation, "sanity_checks", recorder)
    config = evaluating.EvalConfig(
        weights=REFERENCE_WEIGHTS,
        protocol="paper",
        examples=8,
        batch_size=8,
        attacks=("pgd40",),
        epsilon=0.2,
        sanity_checks=True,
        check_examples=12,
        check_queries=5000,
        verbose=0,
    )
    output = evaluating.evaluate(config)
    x, y = evaluating.test_batch("mnist", 12)
    np.testing.assert_array_equal(seen["x"], x)
    np.testing.assert_array_equal(seen["y"], y)
    assert (seen["epsilon"], seen["queries"]) == (0.2, 5000)
    assert seen["black_box"] is None  # the paper protocol has no black-box attack to read
    assert output["sanity_checks"] == [{"name": "recorded", "passed": True, "detail": ""}]


def test_defaults_are_the_strong_protocol_as_a_cascade():
    config = evaluating.EvalConfig()
    assert (config.protocol, config.cascade) == ("strong", True)
    assert config.epsilon is None and config.dataset is None


@pytest.fixture
def fashion_run(tmp_path):
    """A keras_lfr model trained for Fashion-MNIST at ε = 0.1, saved in its run directory."""
    from trainers import config as config_lib
    from trainers import runs

    config = config_lib.make("fast", method="pgd_at", dataset="fashion_mnist")
    run = runs.RunDir(tmp_path / "run")
    run.claim(config)
    threat = config_lib.threat_model(config)
    cnn = keras_lfr.models.small_cnn(dropout=0.0)
    robust = keras_lfr.wrap(
        cnn, method="pgd_at", epsilon=threat.epsilon, step_size=threat.step_size, steps=2
    )
    robust.save(run.model)
    return run


def test_a_keras_lfr_model_is_attacked_at_its_own_dataset_and_epsilon(fashion_run):
    config = evaluating.EvalConfig(model=fashion_run.model, examples=8, batch_size=8, verbose=0)
    threat = evaluating.threat_model(config)
    assert (threat["dataset"], threat["epsilon"]) == ("fashion_mnist", 0.1)
    assert (threat["clip_min"], threat["clip_max"]) == (0.0, 1.0)
    assert threat["source"] == {
        "dataset": "the model's run directory",
        "epsilon": "the model's training radius",
    }
    config.attacks = ("apgd_ce",)
    output = evaluating.evaluate(config)
    assert (output["protocol"], output["dataset"], output["epsilon"]) == (
        "strong",
        "fashion_mnist",
        0.1,
    )
    # The attack ran at ε = 0.1 on Fashion-MNIST's first 8 test images: an
    # untrained model (all-zero logits) is wrong on all of them.
    assert output["results"]["examples"] == 8
    assert output["run"] == fashion_run.stored_config()  # what it evaluated, kept with it
    assert "on fashion_mnist (the model's run directory) at ε = 0.1" in evaluating.describe(output)
    assert "Note" not in evaluating.describe(output)


def test_another_epsilon_is_an_explicit_flag_and_the_output_names_it(fashion_run):
    config = evaluating.EvalConfig(model=fashion_run.model, epsilon=0.2, dataset="mnist")
    threat = evaluating.threat_model(config)
    assert (threat["dataset"], threat["epsilon"]) == ("mnist", 0.2)
    assert threat["source"] == {"dataset": "--dataset", "epsilon": "--epsilon"}
    output = {
        "protocol": "strong",
        "cascade": True,
        "dataset": "mnist",
        "epsilon": 0.2,
        "threat_model": threat,
    }
    assert "Note: the model was trained at ε = 0.1, not 0.2." in evaluating.describe(output)


def test_a_model_without_a_run_directory_gets_its_datasets_standard_epsilon(tmp_path):
    path = str(tmp_path / "plain.keras")
    keras_lfr.models.small_cnn().save(path)
    threat = evaluating.threat_model(evaluating.EvalConfig(model=path))
    assert (threat["dataset"], threat["epsilon"]) == ("mnist", 0.3)
    # Said plainly in the first line: nothing named the dataset.
    header = {"protocol": "strong", "cascade": True, "dataset": "mnist", "epsilon": 0.3}
    line = evaluating.describe({**header, "threat_model": threat})
    assert "Note: neither the model nor --dataset names a dataset, so this is mnist" in line
    threat = evaluating.threat_model(evaluating.EvalConfig(model=path, dataset="fashion_mnist"))
    assert (threat["dataset"], threat["epsilon"]) == ("fashion_mnist", 0.1)
    assert threat["source"]["epsilon"] == "fashion_mnist's standard radius"
    line = evaluating.describe({**header, "dataset": "fashion_mnist", "threat_model": threat})
    assert "Note" not in line


def test_a_killed_chunked_evaluation_resumes_with_the_same_results(fashion_run, tmp_path):
    """`--cache_dir`: killed mid-run (SIGKILL), the same command continues and agrees."""
    import signal

    cache = tmp_path / "cache"
    args = [
        sys.executable,
        "-m",
        "trainers.evaluate",
        f"--model={fashion_run.model}",
        "--attacks=apgd_ce",
        "--examples=24",
        "--batch_size=8",
        f"--cache_dir={cache}",
        "--verbose=1",
    ]
    # Killed as soon as the first chunk is saved.
    process = subprocess.Popen(
        args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    for line in process.stdout:
        if line.startswith("8/24 images"):
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=600)
    assert process.returncode == -signal.SIGKILL, process.stderr.read()[-3000:]
    assert [p.name for p in sorted(cache.iterdir())] == ["chunk-000000-000008.json"]
    out = tmp_path / "resumed.json"
    resumed = subprocess.run(
        [*args, f"--output={out}"], cwd=REPO, capture_output=True, text=True, timeout=600
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert len(list(cache.iterdir())) == 3
    straight = evaluating.evaluate(
        evaluating.EvalConfig(
            model=fashion_run.model,
            attacks=("apgd_ce",),
            examples=24,
            batch_size=8,
            cache_dir=str(tmp_path / "straight"),
            verbose=0,
        )
    )["results"]
    resumed = json.loads(out.read_text())["results"]
    for timer in ("seconds", "cpu_seconds"):  # the chunks' times, measured in two processes
        assert set(resumed.pop(timer)) == set(straight.pop(timer)) == {"clean", "apgd_ce"}
    assert resumed == straight
    assert straight["examples"] == 24 and set(straight) == {
        "clean",
        "apgd_ce",
        "worst_case",
        "examples",
        "per_example",
    }


def test_the_default_chunk_cache_is_one_folder_per_model_and_setting(tmp_path):
    path = tmp_path / "a.keras"
    keras_lfr.models.small_cnn().save(path)
    config = evaluating.EvalConfig(model=str(path))
    threat = evaluating.threat_model(config)

    def folder_of(config, threat=threat):
        return evaluating.chunk_cache(config, threat, evaluating.load_model(config))

    folder = folder_of(config)
    assert folder.startswith(os.environ["KERAS_LFR_CACHE_DIR"])
    assert folder_of(evaluating.EvalConfig(model=str(path))) == folder
    changed = [
        folder_of(evaluating.EvalConfig(model=str(path), queries=100)),
        folder_of(evaluating.EvalConfig(model=str(path), batch_size=100)),
        folder_of(config, {**threat, "epsilon": 0.2}),
    ]
    keras.utils.set_random_seed(1)
    keras_lfr.models.small_cnn().save(path)  # retrained: other weights
    changed.append(folder_of(config))
    assert len({folder, *changed}) == 5
    given = evaluating.EvalConfig(model=str(path), cache_dir=str(tmp_path / "mine"))
    assert folder_of(given) == str(tmp_path / "mine")


def test_a_savedmodel_names_its_chunk_cache_by_its_weights_as_its_keras_file_does(tmp_path):
    keras.utils.set_random_seed(2)
    cnn = keras_lfr.models.small_cnn()
    cnn.save(tmp_path / "m.keras")
    keras_lfr.export(cnn, tmp_path / "m")
    folders = {}
    for source in ("m.keras", "m"):
        config = evaluating.EvalConfig(model=str(tmp_path / source), dataset="mnist")
        model = evaluating.load_model(config)
        folders[source] = evaluating.chunk_cache(config, evaluating.threat_model(config), model)
    # The same weights, however stored, give the same key (the names differ only by the file).
    assert folders["m.keras"].split("-")[-1] == folders["m"].split("-")[-1]


def test_a_rerun_reads_the_cached_chunks_and_nocache_evaluates_afresh(tmp_path, monkeypatch):
    path = tmp_path / "m.keras"
    keras_lfr.models.small_cnn().save(path)
    kwargs = dict(model=str(path), protocol="paper", attacks=("fgsm",), examples=12, batch_size=8)
    first = evaluating.evaluate(evaluating.EvalConfig(**kwargs, verbose=0))
    assert sorted(os.listdir(first["cache_dir"])) == [
        "chunk-000000-000008.json",
        "chunk-000008-000012.json",
    ]
    calls = []
    real = evaluation.running._robust_accuracy
    monkeypatch.setattr(
        evaluation.running, "_robust_accuracy", lambda *a, **k: calls.append(1) or real(*a, **k)
    )
    again = evaluating.evaluate(evaluating.EvalConfig(**kwargs, verbose=0))
    assert calls == [] and again["results"] == first["results"]
    afresh = evaluating.evaluate(evaluating.EvalConfig(**kwargs, cache=False, verbose=0))
    assert len(calls) == 2 and afresh["cache_dir"] is None
    for timer in ("seconds", "cpu_seconds"):
        del afresh["results"][timer], first["results"][timer]
    assert afresh["results"] == first["results"]


FASHION = "fashion_mnist/linf-0.1/pgd-at-fast"


def test_a_zoo_entry_is_evaluated_by_name_at_its_own_threat_model(tmp_path):
    """`keras-lfr-evaluate --zoo`, the installed script, as a user runs it (no log level set)."""
    out = tmp_path / "zoo.json"
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    completed = subprocess.run(
        [
            console_script("keras-lfr-evaluate"),
            f"--zoo={FASHION}",
            "--attacks=apgd_ce",
            "--examples=8",
            "--batch_size=8",
            f"--cache_dir={tmp_path / 'cache'}",
            f"--output={out}",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    lines = completed.stdout.splitlines()
    # The first line says what is evaluated, before the attacks' progress.
    assert lines[0] == (
        "Protocol strong (cascade) on fashion_mnist (the zoo entry) at ε = 0.1 (the zoo "
        "entry's radius), pixels in [0, 1], on the first 8 test images."
    )
    assert lines[1].startswith("8/8 images [")
    output = json.loads(out.read_text())
    assert (output["dataset"], output["epsilon"], output["split"]) == ("fashion_mnist", 0.1, "test")
    assert output["warnings"] == [] and output["results"]["clean"] > 0.5
    assert f"| {FASHION} |" in completed.stdout
    # TensorFlow's C++ log stays quiet when the user asked for none of it.
    assert not re.search(r"^[IWEF]\d{4} ", completed.stderr, re.MULTILINE), completed.stderr
    assert "oneDNN" not in completed.stderr and "cuInit" not in completed.stderr


def test_a_saved_zoo_model_keeps_its_dataset_and_epsilon(tmp_path):
    model = keras_lfr.zoo.load(FASHION)
    path = str(tmp_path / "entry.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, keras_lfr.zoo.ZooModel) and loaded.dataset == "fashion_mnist"
    assert loaded.threat_model() == {"epsilon": 0.1, "clip_min": 0.0, "clip_max": 1.0}
    x = np.random.default_rng(0).uniform(size=(2, 28, 28, 1)).astype("float32")
    np.testing.assert_array_equal(loaded(x), model(x))
    threat = evaluating.threat_model(evaluating.EvalConfig(model=path))
    assert (threat["dataset"], threat["epsilon"]) == ("fashion_mnist", 0.1)
    assert threat["source"] == {
        "dataset": f"the model's zoo entry, {FASHION}",
        "epsilon": "its zoo entry's radius",
    }
    assert threat["dataset_known"]
    by_name = evaluating.threat_model(evaluating.EvalConfig(zoo=FASHION))
    assert {k: by_name[k] for k in ("dataset", "epsilon", "clip_min", "clip_max")} == {
        k: threat[k] for k in ("dataset", "epsilon", "clip_min", "clip_max")
    }


def test_the_first_line_comes_before_any_attack_and_warns_near_chance(monkeypatch):
    """A Fashion-MNIST model on MNIST: said before the attacks run, with the likely cause."""
    events = []
    real = evaluation.resumable_robust_accuracy

    def recorded(*args, **kwargs):
        events.append("attacks")
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "resumable_robust_accuracy", recorded)
    config = evaluating.EvalConfig(
        zoo=FASHION,
        dataset="mnist",
        protocol="paper",
        attacks=("fgsm",),
        examples=32,
        batch_size=32,
        cache=False,
        verbose=0,
    )
    output = evaluating.evaluate(config, log=events.append)
    assert events[0].startswith("Protocol paper (cascade) on mnist (--dataset) at ε = 0.1 ")
    assert events[1].startswith("Warning: clean accuracy 9.4% on the first 32 images is near ")
    assert "the dataset or the preprocessing is probably wrong" in events[1]
    assert events[2:] == ["attacks"]
    assert output["warnings"] == [events[1]] and output["results"]["clean"] == 3 / 32


def test_validation_examples_evaluates_the_held_out_training_images(tmp_path):
    from trainers import config as config_lib

    path = tmp_path / "plain.keras"
    keras.utils.set_random_seed(3)
    keras_lfr.models.small_cnn().save(path)
    kwargs = dict(model=str(path), protocol="paper", attacks=("fgsm",), batch_size=16, verbose=0)
    config = evaluating.EvalConfig(**kwargs, validation_examples=100, examples=16)
    output = evaluating.evaluate(config)
    # The images trainers.train --validation_examples=100 holds out, and says so.
    held_out = config_lib.splits(config_lib.TrainConfig(validation_examples=100))["evaluation"]
    assert output["split"] == held_out == "train[59900:]"
    assert "on the first 16 held-out training images (train[59900:]" in evaluating.describe(output)
    x, y = next(
        iter(keras_lfr.data.load("mnist", "train[59900:59916]", batch_size=16, shuffle=False))
    )
    clean = np.mean(np.argmax(keras.models.load_model(path).predict(x, verbose=0), -1) == y)
    assert output["results"]["clean"] == pytest.approx(clean)
    on_test = evaluating.evaluate(evaluating.EvalConfig(**kwargs, examples=16))
    assert on_test["split"] == "test" and on_test["cache_dir"] != output["cache_dir"]
    assert "on the first 16 test images." in evaluating.describe(on_test)
    with pytest.raises(ValueError, match="argument `examples`. Received: examples=200"):
        evaluating.evaluate(evaluating.EvalConfig(**kwargs, validation_examples=100, examples=200))
    with pytest.raises(ValueError, match="argument `validation_examples`"):
        evaluating.evaluate(evaluating.EvalConfig(**kwargs, validation_examples=-1))


def test_precision_is_checked_and_has_its_own_chunk_cache(tmp_path, monkeypatch):
    from absl import flags

    from trainers import options

    parsed = flags.FlagValues()
    options.define_flags(evaluating.EvalConfig, flag_values=parsed)
    with pytest.raises(flags.IllegalFlagValueError, match=r"float32\|mixed"):
        parsed(["evaluate", "--precision=half"])
    with pytest.raises(ValueError, match=r"`precision`.*'half'.*'float32', 'mixed'"):
        evaluating.evaluate(evaluating.EvalConfig(zoo=FASHION, precision="half"))
    keras_lfr.models.small_cnn().save(tmp_path / "m.keras")
    config = evaluating.EvalConfig(model=str(tmp_path / "m.keras"))
    threat, model = evaluating.threat_model(config), evaluating.load_model(config)
    folders = {
        precision: evaluating.chunk_cache(
            evaluating.EvalConfig(model=config.model, precision=precision), threat, model
        )
        for precision in ("float32", "mixed")
    }
    # float32's folder is the one it always had; mixed precision's is another.
    assert folders["float32"] == evaluating.chunk_cache(config, threat, model)
    assert folders["mixed"] != folders["float32"]
    # Mixed precision's folder is named by where each attack searches: with Square
    # searching in bfloat16 too, it would be another.
    mixed = evaluating.EvalConfig(model=config.model, precision="mixed")
    assert evaluating.chunk_cache(mixed, threat, model) == folders["mixed"]
    monkeypatch.setattr(keras_lfr.evaluation.running, "_SCORE_SEARCHES", ())
    assert evaluating.chunk_cache(mixed, threat, model) != folders["mixed"]
    keras_lfr.export(model, tmp_path / "saved")
    served = evaluating.EvalConfig(
        model=str(tmp_path / "saved"), precision="mixed", dataset="mnist"
    )
    with pytest.raises(ValueError, match=r"`precision`.*SavedModel.*precision='float32'"):
        evaluating.evaluate(served)


def test_a_mixed_precision_evaluation_says_so_and_records_it(tmp_path):
    kwargs = dict(zoo=FASHION, protocol="paper", attacks=("fgsm",), examples=8, batch_size=8)
    lines = []
    output = evaluating.evaluate(
        evaluating.EvalConfig(**kwargs, precision="mixed", verbose=0), log=lines.append
    )
    assert output["precision"] == "mixed" and output["config"]["precision"] == "mixed"
    assert "Mixed precision: the attacks search fgsm in bfloat16; every verdict is" in lines[0]
    assert output["search"] == {"fgsm": "bfloat16"}
    assert len(output["results"]["per_example"]) == 8
    chunk = json.loads((pathlib.Path(output["cache_dir"]) / "chunk-000000-000008.json").read_text())
    assert (chunk["precision"], chunk["search"]) == ("mixed", {"fgsm": "bfloat16"})
    full = evaluating.evaluate(evaluating.EvalConfig(**kwargs, verbose=0))
    assert full["precision"] == "float32" and full["cache_dir"] != output["cache_dir"]
    assert output["results"]["clean"] == full["results"]["clean"]  # the clean pass is float32's
