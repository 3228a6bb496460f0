"""A training run's directory: its identity, atomic checkpoints, and atomic outputs.

A model_dir holds one run. `run.json` records the configuration that defines
it; `checkpoints/epoch-NNNN/` holds the state after each completed epoch (the
latest is kept, also when the run finishes, so that asking for more epochs
continues it); `model.keras`, `export/` and `metrics.json` are the outputs.
Every write goes to a temporary name first and is then renamed into place
(`os.replace`, atomic on POSIX), so a run killed at any moment leaves either
the old file or the new one, never a partial one.
"""

import contextlib
import dataclasses
import json
import os
import shutil

import keras

RUN_FILE = "run.json"
CHECKPOINTS = "checkpoints"
# Fields that may change between the invocations of one run: they do not
# change what is trained (or, for `epochs`, extend it).
RESUMABLE_FIELDS = frozenset(
    {
        "epochs",
        "verbose",
        "export_dir",
        "jit_compile",
        "distribute",
        "test_examples",
        "attack_eval_examples",
        "data_dir",
        "download",
        "deterministic",
    }
)


def _identity(config):
    fields = dataclasses.asdict(config)
    return {k: v for k, v in fields.items() if k not in RESUMABLE_FIELDS}


def _normalise(value):
    """JSON round trip, so that tuples and lists compare equal."""
    return json.loads(json.dumps(value, default=str))


def write_json(path, value, default=float):
    """Writes `value` as JSON to `path` atomically; `default` converts other objects."""
    temporary = f"{path}.tmp"
    with open(temporary, "w") as f:
        json.dump(value, f, indent=2, default=default)
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def claim(workdir, config, fresh=False):
    """Makes `workdir` the directory of the run `config`, or refuses.

    A directory whose `run.json` records a different run (another method,
    hyperparameter, dataset, model or optimizer; anything but the fields in
    `RESUMABLE_FIELDS`) is refused, so that two runs are never mixed. With
    `fresh=True` the directory's checkpoints and outputs are deleted first
    and the run starts over.

    Args:
        workdir: The run's directory (created if missing).
        config: A dataclass instance (`trainers.train.TrainConfig`).
        fresh: Delete what the directory holds and start over. Defaults to
            `False`.

    Raises:
        ValueError: If the directory holds a different run and `fresh` is
            `False`, naming the fields that differ.
    """
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, RUN_FILE)
    identity = _normalise(_identity(config))
    if fresh:
        for name in (CHECKPOINTS, "backup", "model.keras", "metrics.json", "export", RUN_FILE):
            target = os.path.join(workdir, name)
            if os.path.isdir(target):
                shutil.rmtree(target)
            elif os.path.exists(target):
                os.remove(target)
    elif os.path.exists(path):
        with open(path) as f:
            stored = json.load(f)
        differences = [
            f"{key}={stored.get(key)!r} (stored) vs {identity.get(key)!r} (now)"
            for key in sorted(set(stored) | set(identity))
            if stored.get(key) != identity.get(key)
        ]
        if differences:
            raise ValueError(
                f"The model_dir {workdir!r} holds a different run: "
                + "; ".join(differences)
                + ". Use another model_dir, or start over with `trainers.train --fresh` "
                "(`train_and_evaluate(..., fresh=True)`), which deletes its checkpoints "
                "and outputs."
            )
    elif _has_outputs(workdir):
        raise ValueError(
            f"The model_dir {workdir!r} holds checkpoints or a model but no {RUN_FILE} "
            "(written by an older keras_lfr), so it cannot tell whether they belong to "
            "this run. Use another model_dir, or start over with `trainers.train --fresh`."
        )
    write_json(path, identity)


def _has_outputs(workdir):
    return any(
        os.path.exists(os.path.join(workdir, name))
        for name in (CHECKPOINTS, "backup", "model.keras", "metrics.json")
    )


def latest(workdir):
    """`(epoch, state)` of the latest complete checkpoint, or `(0, None)`.

    `state` is the checkpoint's `state.json` (with the cumulative `history`)
    plus `weights`, the path of its weights file.
    """
    directory = os.path.join(workdir, CHECKPOINTS)
    if not os.path.isdir(directory):
        return 0, None
    complete = sorted(
        name
        for name in os.listdir(directory)
        if name.startswith("epoch-") and not name.endswith(".tmp")
    )
    if not complete:
        return 0, None
    path = os.path.join(directory, complete[-1])
    with open(os.path.join(path, "state.json")) as f:
        state = json.load(f)
    state["weights"] = os.path.join(path, "model.weights.h5")
    return int(state["epoch"]), state


def restore(model, state):
    """Loads a checkpoint's weights and optimizer state into a compiled model."""
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    model.load_weights(state["weights"])


class Checkpoint(keras.callbacks.Callback):
    """Saves the model and optimizer after every epoch, atomically.

    Each checkpoint is written to `checkpoints/epoch-NNNN.tmp/` and renamed to
    `checkpoints/epoch-NNNN/` when complete; older checkpoints are deleted
    after that. Its `state.json` holds the epoch and the cumulative `History`
    (`history`, extending the one of the checkpoint the run resumed from).

    Args:
        workdir: The run's directory.
        history: The cumulative history of the checkpoint the run resumed
            from. Defaults to `None` (a fresh run).
    """

    def __init__(self, workdir, history=None):
        super().__init__()
        self.directory = os.path.join(workdir, CHECKPOINTS)
        self.history = {k: list(v) for k, v in (history or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        os.makedirs(self.directory, exist_ok=True)
        name = f"epoch-{epoch + 1:04d}"
        temporary = os.path.join(self.directory, f"{name}.tmp")
        shutil.rmtree(temporary, ignore_errors=True)
        os.makedirs(temporary)
        self.model.save_weights(os.path.join(temporary, "model.weights.h5"))
        write_json(
            os.path.join(temporary, "state.json"), {"epoch": epoch + 1, "history": self.history}
        )
        final = os.path.join(self.directory, name)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(temporary, final)
        for other in os.listdir(self.directory):
            if other != name:
                shutil.rmtree(os.path.join(self.directory, other), ignore_errors=True)


def save_model(model, path):
    """`model.save(path)` through a temporary file, renamed into place."""
    temporary = path[: -len(".keras")] + ".tmp.keras"
    model.save(temporary)
    os.replace(temporary, path)


def export(export_fn, path):
    """Runs `export_fn(directory)` into a temporary directory, then swaps it in."""
    temporary, previous = f"{path}.tmp", f"{path}.old"
    shutil.rmtree(temporary, ignore_errors=True)
    export_fn(temporary)
    with contextlib.suppress(FileNotFoundError):
        os.replace(path, previous)
    os.replace(temporary, path)
    shutil.rmtree(previous, ignore_errors=True)
