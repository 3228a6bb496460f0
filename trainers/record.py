"""A training run's record and its provenance: what it trained, how, where and from which code.

`training_record` is the part of a zoo record that describes the training
(`TRAINING_FIELDS`); `trainers.train` writes it beside the model
(`trainers.runs.RunDir.record`), and the zoo's release copies it. The
provenance helpers say which commit (`commit`, `version_at`) and which
machine (`hardware`) a result came from.
"""

import os
import re
import subprocess

import keras_lfr

from . import builders
from . import config as config_lib

# The repository this module runs from (for its git provenance).
CHECKOUT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _git(*args, root=CHECKOUT):
    """The output of `git ARGS` in `root` (raises `OSError` or `CalledProcessError`)."""
    return subprocess.run(
        ["git", *args], cwd=root, capture_output=True, text=True, check=True
    ).stdout


def commit():
    """The git commit of this checkout (with `+dirty` if it has changes), or `"unknown"`."""
    try:
        head = _git("rev-parse", "HEAD").strip()
        dirty = _git("status", "--porcelain", "--untracked-files=no").strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("+dirty" if dirty else "")


def version_at(revision, root=None):
    """keras_lfr's version at a git `revision`, or `"unknown"` if git cannot say.

    Args:
        revision: A commit (or any git revision).
        root: The repository. Defaults to `None`: this checkout.

    Returns:
        The `__version__` that `keras_lfr/_version.py` held at `revision`
        (`keras_lfr/__init__.py` at revisions before that file).
    """
    for path in ("keras_lfr/_version.py", "keras_lfr/__init__.py"):
        try:
            source = _git("show", f"{revision}:{path}", root=root or CHECKOUT)
        except (OSError, subprocess.CalledProcessError):
            continue
        found = re.search(r"^__version__ = [\"']([^\"']+)[\"']", source, re.MULTILINE)
        if found:
            return found.group(1)
    return "unknown"


def hardware():
    """A one-line description of the machine: CPU cores and architecture, GPUs, the framework.

    The framework is the Keras backend's: TensorFlow, or JAX (which needs no
    TensorFlow installed).
    """
    import platform

    if keras_lfr.backend.NAME == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        names = [
            tf.config.experimental.get_device_details(g).get("device_name", "GPU") for g in gpus
        ]
        framework = f"TensorFlow {tf.__version__}"
    else:
        import jax

        names = [device.device_kind for device in jax.devices() if device.platform == "gpu"]
        framework = f"JAX {jax.__version__}"
    devices = ", ".join(names) if names else "no GPU"
    return f"{os.cpu_count()} CPU cores ({platform.machine()}), {devices}, {framework}"


def hyperparameters(config):
    """Every hyperparameter of a run's training objective, the method's defaults included.

    The method's full configuration (e.g. TRADES' `beta` when the run left it
    at its default), then AWP's and the ε ramp's settings.
    """
    method = keras_lfr.methods.get_method(
        config.method, **config_lib.method_hyperparameters(config)
    )
    return {
        **method.get_config(),
        "awp_gamma": config.awp_gamma,
        "awp_warmup": config.awp_warmup,
        "epsilon_warmup_epochs": config.epsilon_warmup_epochs,
        "epsilon_warmup_shape": config.epsilon_warmup_shape,
    }


def training_record(config, history, command):
    """What a zoo record says of a training run; `trainers.train` writes it beside the model.

    Args:
        config: The run's `TrainConfig`.
        history: Its cumulative Keras history (with `wall_time`).
        command: The command that trained it.

    Returns:
        A dict with the zoo record's `dataset`, `threat_model`, `method`,
        `hyperparameters`, `architecture` and `training` fields.
    """
    return {
        "dataset": config.dataset,
        "threat_model": config_lib.threat_model(config).as_record(),
        "method": config.method,
        "hyperparameters": hyperparameters(config),
        "architecture": builders.architecture(config),
        "training": {
            "command": command,
            "seed": config.seed,
            "epochs": config.epochs,
            "wall_time_minutes": round(history.get("wall_time", [0.0])[-1] / 60, 1),
            "hardware": hardware(),
            "keras_lfr_version": keras_lfr.__version__,
            "commit": commit(),
        },
    }


# The record's fields that describe the training: kept when an entry is evaluated again.
TRAINING_FIELDS = (
    "dataset",
    "threat_model",
    "method",
    "hyperparameters",
    "architecture",
    "training",
)
