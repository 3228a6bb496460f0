"""Pretrained robust models shipped inside the package, loadable offline by name.

Each entry is a folder `keras_lfr/zoo/models/<dataset>/<threat model>/<name>/`
holding the classifier's weights in Keras' format (`model.weights.h5`) and
its record (`record.json`): the dataset and threat model, the method and its
hyperparameters, the architecture, the exact training command and seed, the
training time and hardware, and the evaluation (clean and robust accuracy,
per attack, with the protocol, its sample and the sanity checks). Names
follow RobustBench's: `mnist/linf-0.3/lfr-fast`. `available`, `info`, `load`
and `compare` need no TensorFlow; `benchmark` and `clean_accuracy` read the
test split with tfds (`keras_lfr.data`).

Example:

>>> keras_lfr.zoo.available(dataset="mnist")
['mnist/linf-0.3/lfr-fast', ...]
>>> model = keras_lfr.zoo.load("mnist/linf-0.3/lfr-fast")  # logits, float32
>>> keras_lfr.zoo.info("mnist/linf-0.3/lfr-fast")["evaluation"]["robust"]
"""

import hashlib
import json
import pathlib

import keras
import numpy as np

from keras_lfr import _validation, data, evaluation, models
from keras_lfr.threat import ThreatModel

MODELS = pathlib.Path(__file__).resolve().parent / "models"
# An entry's folder holds these two files and nothing else.
RECORD = "record.json"
WEIGHTS = "model.weights.h5"
# The architectures an entry may name, by their `keras_lfr.models` function.
ARCHITECTURES = {"small_cnn": models.small_cnn, "preact_resnet18": models.preact_resnet18}

# The record's fields and their types; nested dicts list their own.
SCHEMA = {
    "name": str,
    "dataset": str,
    "threat_model": {"norm": str, "epsilon": float},
    "method": str,
    "hyperparameters": dict,
    "architecture": {"name": str, "kwargs": dict},
    "weights": {"file": str, "sha256": str},
    "training": {
        "command": str,
        "seed": int,
        "wall_time_minutes": float,
        "hardware": str,
        "keras_lfr_version": str,
        "commit": str,
    },
    "evaluation": {
        "protocol": str,
        "protocol_version": int,
        "examples": int,
        "clean": float,
        "robust": float,
        "per_attack": dict,
        "sanity_checks": list,
        "command": str,
        "hardware": str,
    },
    # Clean accuracy on the first 1,000 test images in float32: what `load`
    # must give back exactly.
    "clean_first_1000": float,
    "date": str,
}


def entry_dir(name):
    """The folder of the entry `name` (whether or not it exists yet)."""
    return MODELS.joinpath(*name.split("/"))


def available(dataset=None, threat_model=None):
    """The names of the entries, sorted; optionally of one dataset and threat model.

    Args:
        dataset: E.g. `"mnist"`; `None` for every dataset. Defaults to `None`.
        threat_model: E.g. `"linf-0.3"`; `None` for every one. Defaults to
            `None`.

    Returns:
        A sorted list of names `<dataset>/<threat model>/<name>`.
    """
    names = sorted(str(path.parent.relative_to(MODELS).as_posix()) for path in MODELS.rglob(RECORD))
    return [
        name
        for name in names
        if (dataset is None or name.split("/")[0] == dataset)
        and (threat_model is None or name.split("/")[1] == threat_model)
    ]


def info(name):
    """The record of an entry (a dict; see `SCHEMA`).

    Raises:
        ValueError: If there is no entry of that name (the message lists them).
    """
    path = entry_dir(name) / RECORD
    if "/" not in str(name) or not path.is_file():
        raise ValueError(
            f"Invalid value for argument `name`. Received: name={name!r}. Expected one of "
            f"{available()}."
        )
    return json.loads(path.read_text())


def sha256(path):
    """The hex sha256 digest of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def build(record):
    """The record's architecture with fresh weights (float32, logits)."""
    architecture = record["architecture"]
    _validation.one_of("architecture", architecture["name"], tuple(ARCHITECTURES))
    kwargs = dict(architecture["kwargs"])
    if "input_shape" in kwargs:
        kwargs["input_shape"] = tuple(kwargs["input_shape"])
    return ARCHITECTURES[architecture["name"]](**kwargs)


@keras.saving.register_keras_serializable(package="keras_lfr")
class ZooModel(keras.Model):
    """A zoo entry's classifier: a functional model returning logits that knows its entry.

    `load` returns one. Its `entry` (the entry's name, dataset, ε and pixel
    range) is part of its configuration, so it survives `save` and
    `keras.models.load_model`: evaluating a saved entry
    (`trainers.evaluate --model=entry.keras`) uses the entry's dataset and ε,
    as evaluating it by name does.

    Args:
        *args: `keras.Model`'s functional arguments (`inputs`, `outputs`).
        entry: A dict with the entry's `name`, `dataset`, `epsilon`,
            `clip_min` and `clip_max`. Defaults to `None` (unknown).
        **kwargs: `keras.Model`'s other arguments, e.g. `name`.
    """

    def __init__(self, *args, entry=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.entry = dict(entry or {})

    @property
    def dataset(self):
        """The dataset the entry was trained and evaluated on, e.g. `"mnist"`."""
        return self.entry.get("dataset")

    def threat_model(self):
        """The l-inf ball of the entry, like `RobustModel.threat_model`.

        `keras_lfr.ThreatModel.of_model(model)` reads it, with the entry's
        `dataset`.

        Returns:
            A dict with `epsilon`, `clip_min` and `clip_max`; `None` values
            for a model without an entry.
        """
        return {key: self.entry.get(key) for key in ("epsilon", "clip_min", "clip_max")}

    def get_config(self):
        return {**super().get_config(), "entry": dict(self.entry)}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        config = dict(config)
        entry = config.pop("entry", None)
        model = super().from_config(config, custom_objects=custom_objects)
        model.entry = dict(entry or {})
        return model


def entry_of(record):
    """What a `ZooModel` knows of its entry: name, dataset, ε and pixel range.

    The record's `keras_lfr.ThreatModel` (`ThreatModel.of_record`) as a
    dict, with the entry's name.
    """
    threat = ThreatModel.of_record(record)
    return {"name": record["name"], "dataset": threat.dataset, **threat.as_ball()}


def load(name):
    """The classifier of an entry, with its shipped weights: a `ZooModel` returning logits.

    The weights file is checked against the record's sha256 first. The model
    carries its entry's dataset and threat model (`ZooModel`), also once
    saved and loaded again.

    Raises:
        ValueError: If the name is unknown, or the weights file does not
            match its checksum (a corrupted or replaced file).
    """
    record = info(name)
    path = entry_dir(name) / record["weights"]["file"]
    found = sha256(path)
    if found != record["weights"]["sha256"]:
        raise ValueError(
            f"The weights of zoo entry {name!r} ({path}) fail their checksum: sha256 {found}, "
            f"expected {record['weights']['sha256']}. The file is corrupted or was replaced; "
            "reinstall keras_lfr."
        )
    classifier = build(record)
    model = ZooModel(
        classifier.input, classifier.output, name=classifier.name, entry=entry_of(record)
    )
    model.load_weights(path)
    return model


def validate(record):
    """Checks a record against `SCHEMA`.

    Raises:
        ValueError: Naming the first missing field or the first field of the
            wrong type.
    """

    def check(value, schema, where):
        for field, kind in schema.items():
            if field not in value:
                raise ValueError(f"Invalid zoo record: `{where}{field}` is missing.")
            if isinstance(kind, dict):
                check(value[field], kind, f"{where}{field}.")
            elif not isinstance(value[field], kind) or (
                kind is float and isinstance(value[field], bool)
            ):
                if kind is float and isinstance(value[field], int):
                    continue
                raise ValueError(
                    f"Invalid zoo record: `{where}{field}` is {value[field]!r}, expected a "
                    f"{kind.__name__}."
                )

    check(record, SCHEMA, "")
    name = record["name"]
    expected_prefix = f"{record['dataset']}/{threat_model_name(record['threat_model'])}/"
    if not name.startswith(expected_prefix):
        raise ValueError(
            f"Invalid zoo record: name {name!r} should start with {expected_prefix!r}."
        )


def threat_model_name(threat_model):
    """`{"norm": "linf", "epsilon": 0.3}` -> `"linf-0.3"`: a record's `keras_lfr.ThreatModel.name`.

    Args:
        threat_model: A record's `threat_model` field.

    Returns:
        A string.

    Raises:
        ValueError: If the norm or ε is invalid.
    """
    return ThreatModel(threat_model["epsilon"], norm=threat_model["norm"]).name


def clean_accuracy(model, dataset, n_examples=1000):
    """Clean accuracy of a classifier on the first `n_examples` test images, in float32."""
    test = data.load(dataset, "test", batch_size=500, num_examples=n_examples)
    correct = total = 0
    for x, y in test:
        logits = np.asarray(model(x, training=False))
        correct += int(np.sum(np.argmax(logits, axis=1) == np.asarray(y)))
        total += len(y)
    return correct / total


def benchmark(
    model,
    dataset,
    epsilon=None,
    n_examples=10000,
    *,
    protocol=evaluation.RELEASE_PROTOCOL,
    chunk_size=500,
    cache_dir=None,
    queries=5000,
    verbose=1,
):
    """Evaluates any Keras classifier like the zoo's entries: robust accuracy on the test split.

    Runs an attack protocol (by default AutoAttack's: APGD-CE, APGD-T, FAB-T,
    Square with `queries` queries) as a cascade on the first `n_examples`
    test images of the dataset, in float32, in chunks of `chunk_size` images. With `cache_dir`,
    each finished chunk's counts are saved there, and a rerun (e.g. after
    the process was killed) evaluates only the chunks not yet saved; the
    attacks' randomness depends on the chunk alone, so a resumed evaluation
    gives exactly the counts of an uninterrupted one.

    Args:
        model: A Keras classifier returning logits (a `RobustModel` is
            unwrapped; mixed-precision layers are evaluated in float32).
        dataset: A dataset of `keras_lfr.data.DATASETS`.
        epsilon: The l-inf radius; `None` for the dataset's standard one
            (`keras_lfr.ThreatModel.of_dataset`). Defaults to `None`.
        n_examples: Test images. Defaults to `10000` (the whole MNIST test
            split).
        protocol: A protocol with a black-box part
            (`keras_lfr.evaluation.QUERY_PROTOCOLS`): `"autoattack"`, or
            `"strong"` (the same without FAB-T; cheaper, never lower).
            Defaults to `keras_lfr.evaluation.RELEASE_PROTOCOL`
            (`"autoattack"`).
        chunk_size: Images per chunk (and attack batch). Defaults to `500`.
        cache_dir: Directory for the per-chunk results, in a folder named
            after the protocol, ε, the queries and a digest of the model's
            weights, the settings and keras_lfr's version
            (`keras_lfr.evaluation.cache_path`: a retrained model or
            another version never reads these counts); `None` for none.
            Defaults to `None`.
        queries: Square attack queries. Defaults to `5000`.
        verbose: 1 for a line per chunk with the running robust accuracy
            and the time left, 0 for none. Defaults to `1`.

    Returns:
        The `evaluation` part of a zoo record (see `SCHEMA`), without the
        `command` and `hardware` fields, which the caller knows, and with
        `per_example`: each image's worst-case verdict, a string of `"1"`
        (robust) and `"0"` that `evaluation.paired_comparison` compares with
        another model's on the same images.
    """
    from keras_lfr.robust_model import RobustModel

    if isinstance(model, RobustModel):
        model = model.unwrap()
    model = models.to_float32(model)
    epsilon = ThreatModel.of_dataset(dataset, epsilon).epsilon
    _validation.one_of("protocol", protocol, evaluation.QUERY_PROTOCOLS)
    attacks = evaluation.protocol(protocol, epsilon=epsilon, queries=queries)
    if cache_dir is not None:
        # One cache per protocol, radius, query budget, model and version: never mix them.
        cache_dir = evaluation.cache_path(
            cache_dir,
            f"{protocol}-eps{epsilon:g}-q{queries}",
            model,
            dataset,
            chunk_size,
            protocol,
            epsilon,
            queries,
        )

    def load_chunk(start, stop):
        return data.load(dataset, f"test[{start}:{stop}]", batch_size=stop - start)

    result = evaluation.resumable_robust_accuracy(
        model,
        load_chunk,
        attacks,
        n_examples,
        chunk_size=chunk_size,
        cache_dir=cache_dir,
        verbose=verbose,
    )
    return {
        "protocol": protocol,
        "protocol_version": evaluation.PROTOCOLS[protocol].version,
        "epsilon": epsilon,
        "examples": result["examples"],
        "clean": result["clean"],
        "robust": result["worst_case"],
        "per_attack": {name: result[name] for name in attacks},
        "cascade": True,
        "square_queries": queries,
        # Each image's verdict ("1" robust), for paired comparisons; absent
        # when a cached chunk was written before chunks kept them.
        **({"per_example": result["per_example"]} if "per_example" in result else {}),
    }


def compare(a, b, confidence=0.95):
    """Compares two entries' robustness on the test images both were evaluated on.

    A paired comparison (`keras_lfr.evaluation.paired_comparison`) of the
    two records' per-image verdicts: the images on which the two disagree
    decide the difference, far more tightly than two independent accuracies
    would. Evaluations always start at the first test image, so one on
    10,000 images is compared with one on 1,000 on those 1,000.

    Args:
        a: Name of the first entry.
        b: Name of the second.
        confidence: Level of the difference's interval. Defaults to `0.95`.

    Returns:
        `paired_comparison`'s dict (`difference` is a's robust accuracy
        minus b's) on the first `examples` test images.

    Raises:
        ValueError: If a name is unknown, if a record keeps no per-image
            verdicts (records released before they were kept), or if the two
            were evaluated on different datasets, radii or protocols.

    Example:

    >>> keras_lfr.zoo.compare("mnist/linf-0.3/pgd-at-fast", "mnist/linf-0.3/lfr-fast")
    {'accuracy_a': ..., 'difference': ..., 'interval': ..., 'p_value': ..., ...}
    """
    records = [info(a), info(b)]
    for name, record in zip((a, b), records, strict=True):
        if "per_example" not in record["evaluation"]:
            raise ValueError(
                f"Invalid entry {name!r}: its record has no per-image verdicts "
                "(`evaluation.per_example`). Expected an entry released with them: rerun "
                "its release command."
            )
    first, second = records
    for key, got, want in [
        ("dataset", second["dataset"], first["dataset"]),
        *(
            (f"evaluation.{k}", second["evaluation"][k], first["evaluation"][k])
            for k in ("epsilon", "protocol", "protocol_version")
        ),
    ]:
        if got != want:
            raise ValueError(
                f"Invalid entries: {a!r} has {key}={want!r} and {b!r} has {key}={got!r}. "
                "Expected two evaluations of the same threat model under the same protocol."
            )
    n = min(first["evaluation"]["examples"], second["evaluation"]["examples"])
    return evaluation.paired_comparison(
        first["evaluation"]["per_example"][:n],
        second["evaluation"]["per_example"][:n],
        confidence=confidence,
    )
