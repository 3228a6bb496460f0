"""A training run's directory: the one owner of its layout, atomic checkpoints and outputs.

A model_dir holds one run (`RunDir`). `run.json` records the configuration
that defines it; `checkpoints/epoch-NNNN/` holds the state after each
completed epoch (the latest is kept, also when the run finishes, so that
asking for more epochs continues it); `model.keras`, `export/`,
`metrics.json` and `tensorboard/` are the training's outputs, and
`evaluation.json` caches `trainers.studies.reproduce`'s evaluation; `record.json`
is the training's part of a zoo record (`trainers.studies.release`). Only this module
knows these names. Every write goes to a temporary name first and is then
renamed into place (`os.replace`, atomic on POSIX), so a run killed at any
moment leaves either the old file or the new one, never a partial one.
"""

import contextlib
import dataclasses
import json
import os
import shutil

import keras

from keras_lfr import zoo

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
        "data_npz",
        "download",
        "deterministic",
    }
)


# Fields that a finished run, run again with other values, has nothing to redo for.
UNCHANGING_FIELDS = frozenset({"verbose", "data_dir", "data_npz", "download"})


def identity(config):
    """The fields of a config that define its run: all but `RESUMABLE_FIELDS`."""
    fields = dataclasses.asdict(config)
    return {k: v for k, v in fields.items() if k not in RESUMABLE_FIELDS}


def normalise(value):
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


def read_json(path):
    """The JSON value stored at `path`."""
    with open(path) as f:
        return json.load(f)


class RunDir:
    """The directory of one training run, and the only code that knows its file names.

    Args:
        path: The run's directory (`--model_dir`).

    Example:

    >>> run = RunDir("/tmp/fast_pgd_at")
    >>> model = keras.models.load_model(run.model)
    >>> run.history()["val_accuracy"][-1]
    """

    RUN = "run.json"
    CHECKPOINTS = "checkpoints"
    MODEL = "model.keras"
    METRICS = "metrics.json"
    EXPORT = "export"
    TENSORBOARD = "tensorboard"
    EVALUATION = "evaluation.json"
    # The training's part of a zoo record (`trainers.studies.release`).
    RECORD = zoo.RECORD
    # What `claim(fresh=True)` deletes: everything a run writes.
    OUTPUTS = (CHECKPOINTS, MODEL, METRICS, EXPORT, EVALUATION, RECORD, RUN)

    def __init__(self, path):
        self.path = os.fspath(path)

    def __repr__(self):
        return f"RunDir({self.path!r})"

    def _file(self, name):
        return os.path.join(self.path, name)

    @property
    def run_file(self):
        return self._file(self.RUN)

    @property
    def checkpoints(self):
        return self._file(self.CHECKPOINTS)

    @property
    def model(self):
        return self._file(self.MODEL)

    @property
    def metrics(self):
        return self._file(self.METRICS)

    @property
    def export_dir(self):
        return self._file(self.EXPORT)

    @property
    def tensorboard(self):
        return self._file(self.TENSORBOARD)

    @property
    def evaluation(self):
        return self._file(self.EVALUATION)

    @property
    def record(self):
        return self._file(self.RECORD)

    @classmethod
    def of_model(cls, model_path):
        """The run directory a `model.keras` path belongs to, or `None` if it is not a run's.

        Args:
            model_path: A path to a `.keras` file.

        Returns:
            A `RunDir` whose `model` is `model_path` and that holds a
            `run.json`, else `None`.
        """
        directory = os.path.dirname(os.path.abspath(model_path))
        run = cls(directory)
        same = os.path.basename(model_path) == cls.MODEL
        return run if same and os.path.exists(run.run_file) else None

    def stored_config(self):
        """The configuration fields recorded in `run.json` (those that define the run)."""
        return read_json(self.run_file)

    def history(self):
        """The cumulative Keras `History` of the finished run (from `metrics.json`)."""
        return read_json(self.metrics)["history"]

    def write_metrics(self, result):
        """Writes the run's final result (history, test metrics, paths) to `metrics.json`."""
        write_json(self.metrics, result)

    def write_record(self, record):
        """Writes the training's part of a zoo record (`trainers.studies.release`)."""
        write_json(self.record, record)

    def claim(self, config, fresh=False):
        """Makes this directory the directory of the run `config`, or refuses.

        A directory whose `run.json` records a different run (another method,
        hyperparameter, dataset, model or optimizer; anything but the fields
        in `RESUMABLE_FIELDS`) is refused, so that two runs are never mixed.
        With `fresh=True` the directory's checkpoints and outputs are deleted
        first and the run starts over.

        Args:
            config: A dataclass instance (`trainers.config.TrainConfig`).
            fresh: Delete what the directory holds and start over. Defaults
                to `False`.

        Raises:
            ValueError: If the directory holds a different run and `fresh`
                is `False`, naming the fields that differ.
        """
        os.makedirs(self.path, exist_ok=True)
        fields = normalise(identity(config))
        if fresh:
            for name in self.OUTPUTS:
                target = self._file(name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
        elif os.path.exists(self.run_file):
            stored = self.stored_config()
            differences = [
                f"{key}={stored.get(key)!r} (stored) vs {fields.get(key)!r} (now)"
                for key in sorted(set(stored) | set(fields))
                if stored.get(key) != fields.get(key)
            ]
            if differences:
                raise ValueError(
                    f"The model_dir {self.path!r} holds a different run: "
                    + "; ".join(differences)
                    + ". Use another model_dir, or start over with `trainers.train --fresh` "
                    "(`train_and_evaluate(..., fresh=True)`), which deletes its checkpoints "
                    "and outputs."
                )
        elif any(os.path.exists(self._file(n)) for n in (self.CHECKPOINTS, self.MODEL)):
            raise ValueError(
                f"The model_dir {self.path!r} holds checkpoints or a model but no {self.RUN} "
                "(written by an older keras_lfr), so it cannot tell whether they belong to "
                "this run. Use another model_dir, or start over with `trainers.train --fresh`."
            )
        write_json(self.run_file, fields)

    def finished(self, config):
        """The stored result of this run if it is complete as `config` asks, else `None`.

        Complete: `run.json` records this run, its latest checkpoint is at
        `config.epochs`, and `metrics.json` and `model.keras` were written
        with these settings (but for `verbose` and where the data is read
        from; another `test_examples` or `export_dir` is more to do).

        Returns:
            The dict in `metrics.json`, or `None`.
        """
        if not all(os.path.exists(p) for p in (self.run_file, self.metrics, self.model)):
            return None
        if self.stored_config() != normalise(identity(config)):
            return None
        if self.latest()[0] != config.epochs:
            return None
        result = read_json(self.metrics)
        stored, now = normalise(result.get("config", {})), normalise(dataclasses.asdict(config))
        if any(stored.get(k) != v for k, v in now.items() if k not in UNCHANGING_FIELDS):
            return None
        return result

    def latest(self):
        """`(epoch, state)` of the latest complete checkpoint, or `(0, None)`.

        `state` is the checkpoint's `state.json` (with the cumulative
        `history`) plus `weights`, the path of its weights file.
        """
        directory = self.checkpoints
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
        state = read_json(os.path.join(path, "state.json"))
        state["weights"] = os.path.join(path, "model.weights.h5")
        return int(state["epoch"]), state

    def checkpoint_callback(self, history=None):
        """A `Checkpoint` callback writing into this run's `checkpoints/`."""
        return Checkpoint(self.checkpoints, history=history)

    def save_model(self, model):
        """`model.save` to `model.keras`, through a temporary file renamed into place."""
        save_model(model, self.model)

    def export(self, export_fn, path=None):
        """Exports through `export_fn(directory)` to `path` (default `export/`), atomically."""
        export(export_fn, path or self.export_dir)


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
        directory: The run's `checkpoints/` directory (`RunDir.checkpoints`).
        history: The cumulative history of the checkpoint the run resumed
            from. Defaults to `None` (a fresh run).
    """

    def __init__(self, directory, history=None):
        super().__init__()
        self.directory = directory
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
