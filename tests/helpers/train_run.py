"""Runs a tiny deterministic LFR training (ε ramped) in a fresh process, optionally SIGKILLing it.

Usage: python tests/helpers/train_run.py WORKDIR [KILL_POINT]

KILL_POINT makes the process kill itself with SIGKILL (as the OOM killer or a
preempted machine would):

- `batch:E:B`: right after batch B of epoch E (0-based), mid-epoch;
- `replace:NAME`: just before the trainer renames a finished temporary file or
  directory onto a path ending in NAME (e.g. `epoch-0002`, `model.keras`,
  `export`, `metrics.json`);
- `weights:NAME`: after writing half of a weights file whose path contains
  NAME (a checkpoint torn mid-write).
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from keras_lfr.trainers import config as config_lib  # noqa: E402
from keras_lfr.trainers import runs, training  # noqa: E402


def die():
    os.kill(os.getpid(), signal.SIGKILL)


class KillAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.kill_epoch, self.kill_batch, self.epoch = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (self.kill_epoch, self.kill_batch):
            die()


def kill_before_replace(name):
    replace = os.replace

    def patched(src, dst):
        if str(dst).rstrip("/").endswith(name):
            die()
        return replace(src, dst)

    runs.os.replace = patched  # the `os` module as `keras_lfr.trainers.runs` sees it


def kill_mid_weights(name):
    save_weights = keras.Model.save_weights

    def patched(self, filepath, *args, **kwargs):
        save_weights(self, filepath, *args, **kwargs)
        if name in str(filepath):
            with open(filepath, "r+b") as f:
                f.truncate(os.path.getsize(filepath) // 2)
            die()

    keras.Model.save_weights = patched


workdir = sys.argv[1]
callbacks = []
if len(sys.argv) > 2:
    kind, _, where = sys.argv[2].partition(":")
    if kind == "batch":
        callbacks = [KillAt(*map(int, where.split(":")))]
    elif kind == "replace":
        kill_before_replace(where)
    else:
        kill_mid_weights(where)
config = config_lib.TrainConfig(
    method="lfr",
    epochs=3,
    batch_size=64,
    steps=2,
    train_examples=256,
    test_examples=64,
    lr_decay_epochs=(2,),
    # The ramp ends mid-epoch 2, after the kill point: resuming must continue it.
    epsilon_warmup_epochs=1.5,
    deterministic=True,
    verbose=0,
)
training.train_and_evaluate(config, workdir, callbacks=callbacks)
print("finished")
