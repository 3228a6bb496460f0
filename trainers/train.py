r"""Trains a classifier with a keras_lfr method, checkpointing and exporting it.

    python -m trainers.train --recipe=fast --method=pgd_at --model_dir=/tmp/fast_pgd_at
    keras-lfr-train --method=lfr --dataset=mnist --epochs=100   # the paper's setting

Every epoch is checkpointed and a restarted run with the same command resumes
from the last one (also a finished run given more `--epochs`); a finished
run, run again, says so and where its results are, and does nothing else; a
model_dir holding a different run is refused unless `--fresh`. Every setting
is checked before anything is written. The model_dir's layout
(checkpoints, TensorBoard logs, the saved model, the exported SavedModel, the
training record) is `trainers.runs.RunDir`'s; the settings are
`trainers.config.TrainConfig`'s.
"""

import dataclasses
import sys

from absl import flags, logging

from . import config as config_lib
from . import options, runs
from .training import train_and_evaluate

FLAGS = flags.FLAGS


def config_from_flags(flag_values=FLAGS):
    """Builds a `TrainConfig` from the parsed absl flags (`define_flags`).

    The flags given on the command line are the explicit fields of
    `trainers.config.make` over `--recipe`'s values (the layers of
    `trainers.config`).
    """
    parsed = options.from_flags(config_lib.TrainConfig, flag_values)
    given = {
        field.name: getattr(parsed, field.name)
        for field in dataclasses.fields(parsed)
        if flag_values[field.name].present
    }
    return config_lib.make(flag_values.recipe, **given)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep the progress bar readable
    config = config_from_flags()
    run = runs.RunDir(FLAGS.model_dir)
    try:
        finished = None if FLAGS.fresh else run.finished(config)
        if finished is not None:
            # The same command again: the run is done; nothing is retrained or rewritten.
            print(already_complete(finished, run))
            return
        result = train_and_evaluate(
            config,
            FLAGS.model_dir,
            fresh=FLAGS.fresh,
            command=" ".join(["python -m trainers.train", *sys.argv[1:]]),
        )
    except (ValueError, FloatingPointError) as error:
        sys.exit(f"error: {options.one_line(error)}")
    print(f"Clean metrics on {result['evaluation_split']}: {result['test']}")
    exported = f"; exported SavedModel to {result['export_dir']}" if result["export_dir"] else ""
    print(f"Saved {result['model_path']}{exported}")


def already_complete(result, run):
    """What `main` says of a run that its command, run again, finds complete."""
    epochs = result["config"]["epochs"]
    split = result.get("evaluation_split", "test")
    exported = f", exported SavedModel {result['export_dir']}" if result.get("export_dir") else ""
    return (
        f"The run in {run.path} is already complete ({epochs} epoch{'s' * (epochs != 1)}): "
        "nothing to do. Its "
        f"results are in {run.metrics} (clean metrics on {split}: {result['test']}), its model "
        f"{result['model_path']}{exported}. To train it further, pass more --epochs; to "
        "start over, --fresh."
    )


def define_flags(flag_values=FLAGS):
    """Defines the command-line flags: `TrainConfig`'s, `--recipe` and the run's."""
    options.define_flags(config_lib.TrainConfig, flag_values)
    if flag_values is FLAGS:
        flags.adopt_module_key_flags(options)  # listed by --helpshort with this module's
    flags.DEFINE_enum(
        "recipe",
        None,
        list(config_lib.RECIPES),
        "A named recipe (e.g. fast: a robust MNIST model in under an hour on 2 CPU "
        "cores); flags given explicitly override its values.",
        flag_values=flag_values,
    )
    flags.DEFINE_string(
        "model_dir",
        "/tmp/keras_lfr",
        "Checkpoints, TensorBoard logs and the final model.",
        flag_values=flag_values,
    )
    flags.DEFINE_bool(
        "fresh",
        False,
        "Delete the model_dir's checkpoints and outputs and start over (needed to reuse a "
        "model_dir that holds a different run).",
        flag_values=flag_values,
    )


def run():
    """The console script `keras-lfr-train`."""
    define_flags()
    options.run_program(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
