"""Runs a tiny deterministic LFR training (ε ramped) in a fresh process, optionally SIGKILLing it.

Usage: python tests/train_run.py WORKDIR [KILL_EPOCH KILL_BATCH]

With a kill point, the process kills itself with SIGKILL (as the OOM killer or
a preempted machine would) right after that batch, mid-epoch.
"""

import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

from trainers import train  # noqa: E402


class KillAt(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.kill_epoch, self.kill_batch, self.epoch = epoch, batch, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == (self.kill_epoch, self.kill_batch):
            os.kill(os.getpid(), signal.SIGKILL)


workdir = sys.argv[1]
callbacks = [KillAt(int(sys.argv[2]), int(sys.argv[3]))] if len(sys.argv) > 3 else []
config = train.TrainConfig(
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
train.train_and_evaluate(config, workdir, callbacks=callbacks)
print("finished")
