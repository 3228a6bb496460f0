"""Training as functions: what `trainers.train` runs, and what the studies call.

`validate` checks a `trainers.config.TrainConfig` before anything is
written; `train_and_evaluate` trains one in a run directory
(`trainers.runs.RunDir`), resuming from its last checkpoint, and writes the
model, its metrics and its training record (`trainers.record`).
"""

import dataclasses
import functools

import keras

import keras_lfr
from keras_lfr import _optional, _validation
from keras_lfr.export import FROM_KERAS_FILE

from . import builders, record, runs
from . import config as config_lib


def validate(config):
    """Checks a config before a run writes anything: its settings, and that its data loads.

    Builds no model and draws no random number: it checks the splits, the
    architecture and dataset, the optimizer and its schedule, the method and
    its hyperparameters as `keras_lfr.wrap` does, and that the dataset is
    prepared or downloadable, or its `data_npz` readable (`keras_lfr.data.require`).

    Raises:
        ValueError: Naming the first invalid setting, the value received and
            what was expected.
    """
    _validation.positive_int("epochs", config.epochs)
    _validation.positive_int("batch_size", config.batch_size)
    config_lib.splits(config)
    builders.architecture(config)
    _validation.one_of("optimizer", config.optimizer, config_lib.OPTIMIZERS)
    builders.learning_rate(config, steps_per_epoch=1)
    method = keras_lfr.methods.get_method(
        config.method, **config_lib.method_hyperparameters(config)
    )
    if config.awp_gamma:
        keras_lfr.methods.AWP(base=method, gamma=config.awp_gamma, warmup_steps=config.awp_warmup)
    _validation.non_negative_float("epsilon_warmup_epochs", config.epsilon_warmup_epochs)
    keras_lfr.data.require(config.dataset, config.data_dir, config.download, config.data_npz)


def train_and_evaluate(config, workdir, callbacks=(), fresh=False, command=None):
    """Trains, evaluates on the clean test split, saves and exports a model.

    The workdir holds one run (`trainers.runs.RunDir`): rerunning the same
    config continues from the latest checkpoint, also after the run finished
    (with more `epochs` it trains the extra epochs); a different config is
    refused unless `fresh`.

    Args:
        config: A `trainers.config.TrainConfig`.
        workdir: The run's directory (`trainers.runs.RunDir`): its
            configuration, checkpoints, TensorBoard logs, the saved and
            exported model, the metrics and the training record.
        callbacks: Extra Keras callbacks, e.g.
            `keras_lfr.callbacks.AttackEvaluation`. Defaults to `()`.
        fresh: Delete the workdir's checkpoints and outputs and start over.
            Defaults to `False`.
        command: The command line that runs this, for the run's record
            (the training part of a zoo record). Defaults
            to `None`: the equivalent `trainers.train` flags are not known.

    Returns:
        A dict with the `History` of the whole run, resumed parts included
        (`history`), the clean test metrics (`test`) and the paths written
        (`model_path`, `export_dir`).

    Raises:
        ValueError: If the workdir holds a different run and `fresh` is
            `False`, or the config is invalid.
    """
    validate(config)  # before anything is written
    keras.utils.set_random_seed(config.seed)
    if config.deterministic and _optional.tensorflow_installed():  # tf.data's ops included
        import tensorflow as tf

        tf.config.experimental.enable_op_determinism()
    run = runs.RunDir(workdir)
    run.claim(config, fresh=fresh)
    initial_epoch, state = run.latest()
    if initial_epoch > config.epochs:
        raise ValueError(
            f"The model_dir {workdir!r} holds this run trained for {initial_epoch} epochs, "
            f"more than epochs={config.epochs}. Ask for at least {initial_epoch} epochs, or "
            "pass --fresh (fresh=True) to start over."
        )
    load = functools.partial(
        keras_lfr.data.load,
        config.dataset,
        batch_size=config.batch_size,
        data_dir=config.data_dir,
        download=config.download,
        data_npz=config.data_npz,
    )
    splits = config_lib.splits(config)
    test = load(splits["evaluation"], shuffle=False)
    steps_per_epoch = len(load(splits["train"]))
    # Epoch e is shuffled from (seed, e), so a resumed run sees the same data order.
    train = load(
        splits["train"],
        seed=config.seed,
        epochs=config.epochs,
        initial_epoch=initial_epoch,
    )
    with builders.scope(config):
        model = builders.make_model(config, steps_per_epoch)
    if config.attack_eval_examples:
        callbacks = [*callbacks, builders.attack_evaluation(config)]
    if state is not None:
        runs.restore(model, state)
    checkpoint = run.checkpoint_callback(history=state and state["history"])
    spent = checkpoint.history.get("wall_time", [0.0])[-1]
    callbacks = [keras_lfr.callbacks.WallClock(offset=spent), *callbacks, checkpoint]
    if _optional.tensorflow_installed():  # TensorBoard's logs are written with tf.summary
        callbacks.append(keras.callbacks.TensorBoard(run.tensorboard))
    if initial_epoch < config.epochs:  # else the run is complete: evaluate and save it
        model.fit(
            train,
            epochs=config.epochs,
            initial_epoch=initial_epoch,
            steps_per_epoch=steps_per_epoch,
            validation_data=test,
            callbacks=callbacks,
            shuffle=False,
            verbose=config.verbose,
        )
    test_metrics = model.evaluate(test, return_dict=True, verbose=0)
    run.save_model(model)
    export_dir = None
    if keras_lfr.backend.NAME == "tensorflow":
        export_dir = config.export_dir or run.export_dir
        run.export(functools.partial(keras_lfr.export, model), export_dir)
    else:  # The SavedModel is TensorFlow's: export from the .keras file there.
        print(f"No SavedModel on the {keras_lfr.backend.NAME} backend: {FROM_KERAS_FILE}")
    result = {
        "config": dataclasses.asdict(config),
        "history": checkpoint.history,
        "test": test_metrics,
        "evaluation_split": splits["evaluation"],
        "model_path": run.model,
        "export_dir": export_dir,
    }
    run.write_metrics(result)
    run.write_record(record.training_record(config, checkpoint.history, command))
    return result
