"""`keras_lfr.zoo`: entries load at their recorded accuracy; records, checksums, benchmark."""

import dataclasses
import json
import pathlib
import shutil

import numpy as np
import pytest

import keras_lfr
from keras_lfr import evaluation, zoo
from trainers.studies import leaderboard, release

PACKAGE = pathlib.Path(keras_lfr.__file__).resolve().parent


@pytest.mark.parametrize("name", zoo.available())
def test_every_entry_loads_and_gives_its_recorded_clean_accuracy(name):
    record = zoo.info(name)
    zoo.validate(record)
    model = zoo.load(name)
    # Deterministic float32 inference: exactly the record's figure.
    assert zoo.clean_accuracy(model, record["dataset"], 1000) == record["clean_first_1000"]
    evaluated = record["evaluation"]
    assert evaluated["robust"] <= min(evaluated["per_attack"].values()) <= evaluated["clean"]


def test_unknown_names_are_refused_with_the_list():
    with pytest.raises(ValueError, match=r"name='mnist/linf-0.3/nope'. Expected one of \["):
        zoo.info("mnist/linf-0.3/nope")
    with pytest.raises(ValueError, match="name='lfr'"):
        zoo.load("lfr")


def test_the_package_stays_small():
    size = sum(path.stat().st_size for path in PACKAGE.rglob("*") if path.is_file())
    assert size < 15 * 2**20


def test_the_zoo_folder_holds_only_what_the_package_ships():
    """Each entry: its record and weights; evaluation results live in `results/zoo/`."""
    files = [path for path in zoo.MODELS.rglob("*") if path.is_file()]
    assert {path.name for path in files} == {zoo.RECORD, zoo.WEIGHTS}
    assert len(files) == 2 * len(zoo.available())


@pytest.fixture(scope="module")
def released(tmp_path_factory):
    """A tiny run trained by `trainers.train` and released into a temporary zoo."""
    from trainers import config as config_lib
    from trainers import training

    root = tmp_path_factory.mktemp("zoo")
    workdir = root / "run"
    config = config_lib.make(
        "fast", method="pgd_at", epochs=1, train_examples=256, test_examples=64, steps=1, verbose=0
    )
    command = "python -m trainers.train --recipe=fast --method=pgd_at --epochs=1"
    training.train_and_evaluate(config, str(workdir), command=command)
    models = root / "models"
    original = zoo.MODELS, release.EVALUATIONS
    zoo.MODELS, release.EVALUATIONS = models, root / "results"
    try:
        record = release.release(
            str(workdir),
            "mnist/linf-0.3/tiny",
            examples=24,
            check_examples=8,
            queries=20,
            verbose=0,
        )
    finally:
        # The tests that read the temporary zoo patch these themselves.
        zoo.MODELS, release.EVALUATIONS = original
    return record, workdir


def test_release_writes_a_valid_record_that_loads_back(released, monkeypatch):
    record, workdir = released
    monkeypatch.setattr(zoo, "MODELS", pathlib.Path(workdir).parent / "models")
    zoo.validate(record)
    assert zoo.available() == ["mnist/linf-0.3/tiny"] == zoo.available("mnist", "linf-0.3")
    assert zoo.available(dataset="fashion_mnist") == [] == zoo.available(threat_model="linf-0.1")
    assert record["training"]["command"].startswith("python -m trainers.train --recipe=fast")
    assert record["threat_model"] == {"norm": "linf", "epsilon": 0.3}
    assert record["hyperparameters"]["step_size"] == 0.1
    assert record["evaluation"]["examples"] == 24
    assert record["evaluation"]["protocol"] == "autoattack"
    assert list(record["evaluation"]["per_attack"]) == ["apgd_ce", "apgd_t", "fab_t", "square"]
    assert zoo.info("mnist/linf-0.3/tiny") == json.loads(json.dumps(record))
    # The released weights are the trained model's, in float32.
    import keras

    trained = keras_lfr.models.to_float32(
        keras.models.load_model(str(workdir / "model.keras")).unwrap()
    )
    x = np.random.default_rng(0).uniform(size=(4, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(zoo.load("mnist/linf-0.3/tiny")(x), trained(x), atol=1e-6)
    assert (
        zoo.clean_accuracy(zoo.load("mnist/linf-0.3/tiny"), "mnist") == (record["clean_first_1000"])
    )


def test_a_release_resumes_from_the_entry_alone(released, tmp_path, monkeypatch):
    """What a later machine does with a committed entry: no run directory, no attack rerun."""
    from keras_lfr import evaluation

    record, workdir = released
    for folder, patched in (("models", (zoo, "MODELS")), ("results", (release, "EVALUATIONS"))):
        shutil.copytree(pathlib.Path(workdir).parent / folder, tmp_path / folder)
        monkeypatch.setattr(*patched, tmp_path / folder)
    name = "mnist/linf-0.3/tiny"
    kept = release.evaluation_dir(name)
    assert sorted(p.name.split("-")[0] for p in kept.iterdir()) == ["autoattack", "sanity"]
    assert sorted(p.name for p in zoo.entry_dir(name).iterdir()) == [zoo.WEIGHTS, zoo.RECORD]

    def not_again(*args, **kwargs):
        raise AssertionError("evaluated again instead of reading the entry's results")

    monkeypatch.setattr(evaluation.running, "_robust_accuracy", not_again)
    monkeypatch.setattr(evaluation, "sanity_checks", not_again)
    again = release.release(None, name, examples=24, check_examples=8, queries=20, verbose=0)
    assert again["evaluation"].pop("command") == (
        "python -m trainers.studies.release --name=mnist/linf-0.3/tiny --examples=24 "
        "--check_examples=8 --queries=20 --protocol=autoattack"
    )
    expected = json.loads(json.dumps(record))
    assert (
        expected["evaluation"]
        .pop("command")
        .startswith(f"python -m trainers.studies.release --model_dir={workdir} --name={name}")
    )
    assert again.pop("date") and expected.pop("date")
    assert again == expected
    with pytest.raises(ValueError, match=r"name='mnist/linf-0.3/other'. Expected one of"):
        release.release(None, "mnist/linf-0.3/other", examples=24, verbose=0)


def test_a_corrupted_weights_file_fails_its_checksum(released, monkeypatch):
    _, workdir = released
    models = pathlib.Path(workdir).parent / "models"
    monkeypatch.setattr(zoo, "MODELS", models)
    weights = models / "mnist" / "linf-0.3" / "tiny" / zoo.WEIGHTS
    original = weights.read_bytes()
    try:
        weights.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        with pytest.raises(ValueError, match="fail their checksum"):
            zoo.load("mnist/linf-0.3/tiny")
    finally:
        weights.write_bytes(original)


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda r: r.pop("weights"), "`weights` is missing"),
        (lambda r: r["evaluation"].update(robust="high"), "`evaluation.robust` is 'high'"),
        (lambda r: r.update(name="mnist/linf-0.1/x"), "should start with 'mnist/linf-0.3/'"),
    ],
    ids=["missing", "wrong_type", "name"],
)
def test_records_are_validated(released, change, message):
    record = json.loads(json.dumps(released[0]))
    change(record)
    with pytest.raises(ValueError, match=message):
        zoo.validate(record)


def _write_entries(root, records):
    for name, record in records.items():
        folder = root.joinpath(*name.split("/"))
        folder.mkdir(parents=True)
        (folder / zoo.RECORD).write_text(json.dumps({**record, "name": name}))


def test_compare_pairs_two_entries_verdicts_on_their_common_images(released, tmp_path, monkeypatch):
    record = json.loads(json.dumps(released[0]))
    a, b = "1101101111" * 3, "1001111" * 2  # 30 images and 14: compared on the first 14
    monkeypatch.setattr(zoo, "MODELS", tmp_path)
    _write_entries(
        tmp_path,
        {
            f"mnist/linf-0.3/{name}": {
                **record,
                "evaluation": {**record["evaluation"], "examples": len(v), "per_example": v},
            }
            for name, v in (("a", a), ("b", b))
        },
    )
    result = zoo.compare("mnist/linf-0.3/a", "mnist/linf-0.3/b")
    only_a = sum(x == "1" and y == "0" for x, y in zip(a[:14], b, strict=True))
    only_b = sum(x == "0" and y == "1" for x, y in zip(a[:14], b, strict=True))
    assert (result["examples"], result["only_a"], result["only_b"]) == (14, only_a, only_b)
    assert result["difference"] == pytest.approx((a[:14].count("1") - b.count("1")) / 14)
    assert zoo.compare("mnist/linf-0.3/a", "mnist/linf-0.3/a")["difference"] == 0


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda e: e.pop("per_example"), "'mnist/linf-0.3/b': its record has no per-image"),
        (lambda e: e.update(epsilon=0.2), "evaluation.epsilon=0.2"),
        (lambda e: e.update(protocol="strong"), "evaluation.protocol='strong'"),
    ],
    ids=["no_verdicts", "epsilon", "protocol"],
)
def test_compare_refuses_entries_it_cannot_pair(released, tmp_path, monkeypatch, change, message):
    record = json.loads(json.dumps(released[0]))
    other = json.loads(json.dumps(record))
    change(other["evaluation"])
    monkeypatch.setattr(zoo, "MODELS", tmp_path)
    _write_entries(tmp_path, {"mnist/linf-0.3/a": record, "mnist/linf-0.3/b": other})
    with pytest.raises(ValueError, match=message):
        zoo.compare("mnist/linf-0.3/a", "mnist/linf-0.3/b")


def test_benchmark_resumes_from_its_cache_with_the_same_counts(released, tmp_path):
    _, workdir = released
    import keras

    model = keras.models.load_model(str(workdir / "model.keras"))
    kwargs = dict(
        dataset="mnist", n_examples=12, chunk_size=8, queries=20, protocol="strong", verbose=0
    )
    cache = tmp_path / "cache"
    first = zoo.benchmark(model, cache_dir=cache, **kwargs)
    (folder,) = cache.iterdir()  # one folder per protocol, radius, query budget and model
    assert folder.name.startswith("strong-eps0.3-q20-")
    chunks = sorted(folder.iterdir())
    assert [chunk.name for chunk in chunks] == [
        "chunk-000000-000008.json",
        "chunk-000008-000012.json",
    ]
    # As if killed after the first chunk: the rerun evaluates the second.
    chunks[1].unlink()
    resumed = zoo.benchmark(model, cache_dir=cache, **kwargs)
    assert first == resumed
    assert first["epsilon"] == 0.3 and first["examples"] == 12
    assert len(first["per_example"]) == 12
    assert first["per_example"].count("1") == round(12 * first["robust"])
    assert first["protocol"] == "strong" and list(first["per_attack"]) == [
        "apgd_ce",
        "apgd_t",
        "square",
    ]
    # Other weights (a retrained model in the same run directory) never read these counts.
    bias = model.trainable_weights[-1]
    bias.assign(bias + 1.0)
    zoo.benchmark(model, cache_dir=cache, **{**kwargs, "n_examples": 8})
    assert len(list(cache.iterdir())) == 2


def test_leaderboard_puts_our_rows_beside_the_published_ones_by_robust_accuracy(released):
    record = json.loads(json.dumps(released[0]))
    record["evaluation"]["robust"] = 0.9100
    text = leaderboard.markdown([record])
    rows = [line for line in text.splitlines() if line.startswith("| ") and "---" not in line]
    robust = [float(row.split(" | ")[2]) for row in rows[1:]]
    assert robust == sorted(robust, reverse=True) and len(rows) == 1 + 1 + 9
    ours = next(row for row in rows if "mnist/linf-0.3/tiny" in row)
    assert "| 91.00 | autoattack, 24 images (s.e. 5.84 pp) |" in ours  # √(.91·.09/24)
    assert rows.index(ours) == 6  # after the header and 5 published rows above 91.00
    assert "(keras_lfr, pgd_at) |" in ours
    record["hyperparameters"]["awp_gamma"] = 0.005
    assert "(keras_lfr, pgd_at + AWP) |" in leaderboard.markdown([record])


@pytest.mark.parametrize("name", zoo.available()[:1])
def test_a_zoo_model_exports_for_serving_like_any_other(name, tmp_path):
    import tensorflow as tf

    model = zoo.load(name)
    keras_lfr.export(model, tmp_path / "saved")
    served = tf.saved_model.load(str(tmp_path / "saved")).signatures["serving_default"]
    x = np.random.default_rng(0).uniform(size=(3, 28, 28, 1)).astype("float32")
    np.testing.assert_allclose(served(images=tf.constant(x))["logits"], model(x), atol=1e-5)
    # The same checks of what it is sent as every exported model.
    with pytest.raises(tf.errors.InvalidArgumentError, match="expected to be a float tensor"):
        served(images=tf.zeros([1, 28, 28, 1], tf.float64))
    with pytest.raises(tf.errors.InvalidArgumentError, match="expects float32 `images` of shape"):
        served(images=tf.zeros([1, 32, 32, 3]))


def chunk_folder(name):
    """The entry's committed chunks of its recorded protocol (`results/zoo/<name>/`), or `None`."""
    protocol = zoo.info(name)["evaluation"]["protocol"]
    folders = sorted(release.evaluation_dir(name).glob(f"{protocol}-*"))
    return folders[0] if len(folders) == 1 else None


@pytest.mark.parametrize("name", zoo.available())
def test_every_entrys_robust_accuracy_is_the_mean_of_its_verdicts(name):
    evaluated = zoo.info(name)["evaluation"]
    verdicts = evaluated["per_example"]
    assert len(verdicts) == evaluated["examples"] and set(verdicts) <= {"0", "1"}
    assert evaluated["robust"] == pytest.approx(verdicts.count("1") / len(verdicts), abs=5e-5)


@pytest.mark.parametrize("name", zoo.available())
def test_no_shipped_record_fails_a_sanity_check(name):
    """A failed check on a shipped model would be a sign of gradient masking, not noise.

    The black-box check is the one `evaluation.black_box_check` derives from
    the record's own per-attack results.
    """
    evaluated = zoo.info(name)["evaluation"]
    failed = [check for check in evaluated["sanity_checks"] if not check["passed"]]
    assert failed == []
    derived = evaluation.black_box_check(evaluated["per_attack"], cascade=evaluated["cascade"])
    assert [check["name"] for check in evaluated["sanity_checks"]] == [
        "unbounded attack reaches ~0%",
        "more steps and restarts add little",
        derived.name,
        "FGSM not stronger than PGD",
    ]
    assert dataclasses.asdict(derived) == evaluated["sanity_checks"][2]


@pytest.mark.parametrize("name", [n for n in zoo.available() if chunk_folder(n)])
def test_shipped_chunks_join_to_the_entrys_verdicts(name):
    """The chunks tile the evaluated images, and their counts and verdicts join to the record's.

    Each chunk's worst-case count equals the 1s of its verdicts, the
    per-attack counts of the cascade never rise along it, and the chunks'
    verdicts, joined, are the record's `per_example`.
    """
    evaluated = zoo.info(name)["evaluation"]
    joined, end = "", 0
    for path in sorted(chunk_folder(name).glob("chunk-*.json")):
        start, stop = (int(part) for part in path.stem.split("-")[1:])
        chunk = json.loads(path.read_text())
        assert start == end and chunk["examples"] == stop - start == len(chunk["per_example"])
        assert chunk["worst_case"] == chunk["per_example"].count("1")
        counts = [chunk[attack] for attack in evaluated["per_attack"]]
        assert counts == sorted(counts, reverse=True) and counts[-1] == chunk["worst_case"]
        joined, end = joined + chunk["per_example"], stop
    assert joined == evaluated["per_example"]
