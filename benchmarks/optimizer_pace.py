r"""How fast each method learns under SGD and Adam: clean accuracy after a short run.

Trains `keras_lfr.models.small_cnn()` (its default dropout 0.5) with each
method's defaults and K inner steps, from several seeds, for a few epochs on
the first MNIST training images, and prints clean test accuracy and clean
cross-entropy per (method, optimizer, seed) with their mean, so that a method
whose defaults learn much slower than its base under one optimizer shows up,
and so does how much of a difference is the seed.

    python -m benchmarks.optimizer_pace --methods=pgd_at,adr --optimizers=sgd,adam
    python -m benchmarks.optimizer_pace --methods=adr --hparams=local_weight=0.01 --seeds=0,1
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
from absl import app, flags, logging  # noqa: E402

import keras_lfr  # noqa: E402
from trainers.options import parse_hparams  # noqa: E402

FLAGS = flags.FLAGS

OPTIMIZERS = {
    # The paper's optimizer, and the fast recipe's (without its schedule).
    "sgd": lambda: keras.optimizers.SGD(0.01, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(1e-3),
}


def pace(method, optimizer, *, epochs, train_examples, test_examples, steps, hparams, seed=0):
    """Clean test accuracy and cross-entropy after `epochs` of one method.

    Returns:
        A dict with `accuracy` and `clean_ce` on the first `test_examples`
        test images.
    """
    keras.utils.set_random_seed(seed)
    cnn = keras_lfr.models.small_cnn()
    extra = {} if method == "standard" else {"steps": steps, **hparams}
    model = keras_lfr.wrap(cnn, method=method, seed=seed, **extra)
    model.compile(optimizer=OPTIMIZERS[optimizer](), metrics=["accuracy"])
    train = keras_lfr.data.load("mnist", "train", num_examples=train_examples, seed=seed)
    model.fit(train, epochs=epochs, verbose=0)
    test = keras_lfr.data.load("mnist", "test", num_examples=test_examples)
    result = model.evaluate(test, return_dict=True, verbose=0)
    return {"accuracy": result["accuracy"], "clean_ce": result["clean_ce"]}


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    hparams = parse_hparams(FLAGS.hparams)
    suffix = f" ({', '.join(FLAGS.hparams)})" if FLAGS.hparams else ""
    print(
        f"SmallCNN (dropout 0.5), {FLAGS.epochs} epochs on the first "
        f"{FLAGS.train_examples} MNIST training images, "
        f"K = {FLAGS.steps}, batch 128; clean accuracy on the first {FLAGS.test_examples} "
        "test images"
    )
    seeds = [int(seed) for seed in FLAGS.seeds]
    print(
        "| method | optimizer | "
        + " | ".join(f"seed {seed}" for seed in seeds)
        + " | mean accuracy | mean clean CE |"
    )
    print("|---|---|" + "---|" * len(seeds) + "---|---|")
    for method in FLAGS.methods:
        for optimizer in FLAGS.optimizers:
            results = [
                pace(
                    method,
                    optimizer,
                    epochs=FLAGS.epochs,
                    train_examples=FLAGS.train_examples,
                    test_examples=FLAGS.test_examples,
                    steps=FLAGS.steps,
                    hparams=hparams if method != "standard" else {},
                    seed=seed,
                )
                for seed in seeds
            ]
            accuracy = [r["accuracy"] for r in results]
            clean_ce = [r["clean_ce"] for r in results]
            print(
                f"| {method}{suffix if method != 'standard' else ''} | {optimizer} | "
                + " | ".join(f"{a:.3f}" for a in accuracy)
                + f" | {sum(accuracy) / len(seeds):.3f} | {sum(clean_ce) / len(seeds):.3f} |",
                flush=True,
            )


if __name__ == "__main__":
    flags.DEFINE_list("methods", ["standard", "pgd_at", "adr"], "Methods to train.")
    flags.DEFINE_list("optimizers", list(OPTIMIZERS), f"Some of {list(OPTIMIZERS)}.")
    flags.DEFINE_list("hparams", [], "Method hyperparameters as name=value (not for standard).")
    flags.DEFINE_integer("epochs", 3, "Training epochs.")
    flags.DEFINE_integer("train_examples", 4096, "Training images.")
    flags.DEFINE_integer("test_examples", 1000, "Test images.")
    flags.DEFINE_integer("steps", 3, "Inner steps K.")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Seeds of weights, data order and attacks.")
    app.run(main)
