r"""Evaluates a model's robustness under a named attack protocol.

    python -m trainers.evaluate --model=/tmp/fast_pgd_at/model.keras --examples=1000
    keras-lfr-evaluate --model=/tmp/fast_pgd_at/model.keras --sanity_checks
    python -m trainers.evaluate --weights=lfr_official_mnist_smallcnn.npz --protocol=paper
    python -m trainers.evaluate --model=... --attacks=apgd_ce   # one attack, timed
    keras-lfr-evaluate --zoo=fashion_mnist/linf-0.1/pgd-at-fast --examples=1000
    python -m trainers.evaluate --model=... --validation_examples=1000   # held-out images
    python -m trainers.evaluate --zoo=mnist/linf-0.3/lfr-fast --precision=mixed   # faster

By default it runs `keras_lfr.evaluation.DEFAULT_PROTOCOL` (APGD-CE, APGD-T
and Square, as a cascade) at the threat model the model was trained for: for a
keras_lfr `.keras` file, the method's ε and pixel range, and the dataset of
its run directory (`run.json` beside `model.keras`); for a zoo entry (by
name, or saved from `keras_lfr.zoo.load`), the entry's dataset, ε and pixel
range; otherwise the dataset's standard ε (`keras_lfr.defaults`) on MNIST,
which the first line of the output then says. `--epsilon` and `--dataset`
override them.

The first line, printed before any attack runs, says what is evaluated:
the protocol, the dataset, ε and the pixel range, where each came from, and
which images (the test split, or with `--validation_examples=N` the last N
training images, which `trainers.train --validation_examples=N` held out).
A clean accuracy near chance on the first chunk is reported there too: the
dataset or the preprocessing is then probably wrong.

`--model` is a `.keras` file or a SavedModel directory (as written by
`keras_lfr.export`); `--weights` is an `.npz` of SmallCNN weights by layer
name; `--zoo` names a `keras_lfr.zoo` entry. Every argument is checked before
anything runs or is written. Evaluates in chunks of `--batch_size` images,
each finished chunk cached (`trainers.evaluating.chunk_cache`: one folder per
model and setting), so the same command resumes a killed evaluation; prints a
progress bar after each chunk, then a markdown table, and writes the results
as JSON to `--output`. The evaluation itself is `trainers.evaluating.evaluate`.
"""

import functools
import json
import sys

from absl import flags, logging

import keras_lfr

from . import options
from .evaluating import EvalConfig, evaluate, source_name

FLAGS = flags.FLAGS


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # keep the progress bar readable
    config = options.from_flags(EvalConfig)
    try:
        output = evaluate(config, log=functools.partial(print, flush=True))
    except ValueError as error:
        sys.exit(f"error: {options.one_line(error)}")
    if output["cache_dir"]:
        print(f"Finished chunks are in {output['cache_dir']}: the same command resumes there.")
    print(keras_lfr.evaluation.markdown_table({source_name(config): output["results"]}))
    print(
        f"{output['examples_per_second']:.1f} examples/s ({output['seconds']:.0f} s, "
        f"{output['cpu_seconds']:.0f} CPU-s for {output['results']['examples']} examples)"
    )
    for timer in ("seconds", "cpu_seconds"):  # summed over the chunks, cached ones included
        per_attack = output["results"].get(timer, {})
        if per_attack:
            print(f"{timer}: " + ", ".join(f"{n} {v:.0f}" for n, v in per_attack.items()))
    if "flatness" in output:
        flat = output["flatness"]
        print(
            f"γ(x, {output['epsilon']:g}) mean {flat['gamma_mean']:.3f}, median "
            f"{flat['gamma_median']:.3f}; clean CE {flat['clean_ce']:.4f}, median margin "
            f"{flat['margin_median']:.2f}, logit std {flat['logit_std']:.2f} "
            f"({flat['examples']} images)"
        )
    if FLAGS.output:
        with open(FLAGS.output, "w") as f:
            json.dump(output, f, indent=2, default=float)


def define_flags():
    """Defines the command-line flags (only when run as a script): `EvalConfig`'s and --output."""
    options.define_flags(EvalConfig)
    flags.adopt_module_key_flags(options)  # listed by --helpshort with this module's
    flags.DEFINE_string("output", None, "JSON file for the results.")


def run():
    """The console script `keras-lfr-evaluate`."""
    define_flags()
    options.run_program(main, sys.modules[__name__])


if __name__ == "__main__":
    run()
