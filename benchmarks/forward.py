r"""What one attack query costs, and the least CPU time the `autoattack` protocol can take.

    python -m benchmarks.forward                   # batch 500, as the evaluations' chunks
    python -m benchmarks.forward --threads=1       # one core: the per-core rate
    python -m benchmarks.forward --batch_size=8 --calls=1 --repeats=1   # a smoke run

Square spends nearly all of its time in forward passes (5,000 per image still
robust), so their cost bounds the `autoattack` protocol's. This times a
compiled (graph-mode) forward pass of a batch of MNIST-sized images, in wall
and in CPU seconds of this process, and converts the CPU time into GFLOP/s
(SmallCNN: 19.9 MFLOP per image). The best of `--repeats` rounds of
`--calls` calls is reported. `--threads` caps TensorFlow's thread pools
(0: its default, one thread per core).

It then times the float32 input gradient (a forward and a backward pass to
the input, as APGD and FAB take at each step) and prices the protocol at
these two rates alone: per image entering each attack, the passes its
settings in `keras_lfr.evaluation.autoattack_protocol` imply
(`protocol_passes`), times `--entering` images per attack. Nothing else
(projections, bookkeeping, smaller batches) is counted, so the total is a
floor under any float32 implementation of the protocol on these cores at
these rates.

With `--precisions=float32,mixed` (the default) it prices the protocol in
mixed precision too (`precision="mixed"`: each attack searches in the
precision `keras_lfr.evaluation.search_precision` gives it, the gradient
attacks on a `keras_lfr.models.bfloat16_copy` and Square in float32; each
attack's verdict is one float32 forward pass) and prints the ratio of the
two floors: the least fraction of float32's CPU time that mixed precision
can take on these cores, as long as its bookkeeping is no cheaper than
float32's (it is the same float32 work).
"""

import time

import numpy as np
import tensorflow as tf
from absl import app, flags

import keras_lfr
from keras_lfr import backend, evaluation

FLAGS = flags.FLAGS
# The `autoattack` protocol's attacks, in their cascade's order.
ATTACKS = ("apgd_ce", "apgd_t", "fab_t", "square")
# Multiply-adds of SmallCNN per 28x28x1 image: four 3x3 convolutions, three dense layers.
MACS = (
    26 * 26 * 32 * 9
    + 24 * 24 * 32 * 9 * 32
    + 10 * 10 * 64 * 9 * 32
    + 8 * 8 * 64 * 9 * 64
    + 1024 * 200
    + 200 * 200
    + 200 * 10
)


def _best_seconds(fn, batch_size, calls, repeats):
    """(wall, CPU) seconds of one call of the compiled `fn` on `batch_size` images, best round."""
    x = tf.constant(np.random.default_rng(0).uniform(size=(batch_size, 28, 28, 1)), "float32")
    fn(x).numpy()  # trace and warm up
    rounds = []
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(calls):
            fn(x).numpy()
        rounds.append(((time.perf_counter() - wall) / calls, (time.process_time() - cpu) / calls))
    return min(rounds)


def forward_seconds(dtype, batch_size, calls, repeats):
    """(wall, CPU) seconds of one compiled forward pass of `batch_size` images, best round."""
    model = keras_lfr.models.small_cnn(dtype=dtype)
    forward = tf.function(lambda images: model(tf.cast(images, dtype), training=False))
    return _best_seconds(forward, batch_size, calls, repeats)


def searched_model(search):
    """SmallCNN as an attack searching in `search` (`"float32"` or `"bfloat16"`) sees it.

    Float32 logits either way.
    """
    model = keras_lfr.models.small_cnn()
    if search == "float32":
        return model
    copy = keras_lfr.models.bfloat16_copy(model)
    return lambda images, training=False: tf.cast(copy(images, training=training), "float32")


def input_gradient_seconds(batch_size, calls, repeats, search="float32"):
    """(wall, CPU) seconds of one compiled input gradient of `batch_size` images.

    The gradient is taken as the attacks take theirs (`backend.value_and_gradient`),
    of a logit gap as FAB-T's, on the model they search in `search`
    (`"float32"` or `"bfloat16"`, `searched_model`).
    """
    model = searched_model(search)

    def gap(images):
        logits = model(images, training=False)
        return logits[:, 1] - logits[:, 0], logits

    gradient = tf.function(lambda images: backend.value_and_gradient(gap, images)[1])
    return _best_seconds(gradient, batch_size, calls, repeats)


def protocol_passes(attacks):
    """Per image entering each attack of the `autoattack` protocol: (input gradients, forwards).

    APGD takes a gradient at its start and after each of its `steps`, once
    per target; FAB-T takes a gradient and a forward pass per step and
    target, and ranks the targets with one forward pass; Square makes
    `queries` forward passes (its stripes and the rest). Every attack's
    verdict is one more forward pass.

    Args:
        attacks: `keras_lfr.evaluation.autoattack_protocol()`.

    Returns:
        A dict mapping each attack's name to `(gradients, forwards)`.
    """
    ce, t, fab, square = (attacks[name].keywords for name in ATTACKS)
    return {
        "apgd_ce": (ce["steps"] + 1, 1),
        "apgd_t": (t["num_targets"] * (t["steps"] + 1), 2),
        "fab_t": (fab["num_targets"] * fab["steps"], fab["num_targets"] * fab["steps"] + 2),
        "square": (0, square["queries"] + 1),
    }


def attack_floors(passes, entering, rates, verdict_forward):
    """CPU seconds of each attack's passes at the given per-image rates.

    Args:
        passes: `protocol_passes`' dict of `(gradients, forwards)` per attack.
        entering: Images entering each attack, in `ATTACKS`' order.
        rates: Per attack, `(gradient, forward)` CPU seconds per image of its
            search's passes (at the rates of the precision it searches in).
        verdict_forward: CPU seconds per image of the verdict's forward pass,
            the last of each attack's forwards (float32's in either precision).

    Returns:
        A dict mapping each attack's name to its floor in CPU seconds.
    """
    return {
        name: int(count) * (gradients * gradient + (forwards - 1) * forward + verdict_forward)
        for name, count in zip(ATTACKS, entering, strict=True)
        for (gradients, forwards), (gradient, forward) in [(passes[name], rates[name])]
    }


def main(argv):
    del argv
    if len(FLAGS.entering) != len(ATTACKS) or not all(n.isdigit() for n in FLAGS.entering):
        raise app.UsageError(
            f"Invalid value for flag --entering. Received: {','.join(FLAGS.entering)!r}. "
            f"Expected {len(ATTACKS)} image counts, one per attack: {', '.join(ATTACKS)}."
        )
    unknown = sorted(set(FLAGS.precisions) - set(evaluation.PRECISIONS))
    if unknown:
        raise app.UsageError(
            f"Invalid value for flag --precisions. Received: {','.join(FLAGS.precisions)!r}. "
            f"Expected some of {', '.join(evaluation.PRECISIONS)}."
        )
    if FLAGS.threads:
        tf.config.threading.set_intra_op_parallelism_threads(FLAGS.threads)
        tf.config.threading.set_inter_op_parallelism_threads(FLAGS.threads)
    print(f"TensorFlow threads: {FLAGS.threads or 'default'}")
    print(f"| dtype | wall ms / batch of {FLAGS.batch_size} | CPU ms | GFLOP/s per CPU-s |")
    print("|---|---|---|---|")
    calls = (FLAGS.batch_size, FLAGS.calls, FLAGS.repeats)
    cpu_seconds = {}
    for dtype in FLAGS.dtypes:
        wall, cpu_seconds[dtype] = forward_seconds(dtype, *calls)
        rate = 2 * MACS * FLAGS.batch_size / cpu_seconds[dtype] / 1e9
        print(f"| {dtype} | {1e3 * wall:.1f} | {1e3 * cpu_seconds[dtype]:.1f} | {rate:.0f} |")
    attacks = evaluation.autoattack_protocol()
    plans = {
        precision: evaluation.search_plan(attacks, precision) for precision in FLAGS.precisions
    }
    rates = {}  # per search precision: (gradient, forward) CPU seconds per image
    searches = {"float32", *(s for plan in plans.values() for s in plan.values())}
    for search in [s for s in ("float32", "bfloat16") if s in searches]:
        model = searched_model(search)
        forward = _best_seconds(tf.function(lambda x, m=model: m(x)), *calls)[1]
        gradient = input_gradient_seconds(*calls, search=search)[1]
        rates[search] = (gradient / FLAGS.batch_size, forward / FLAGS.batch_size)
    verdict = rates["float32"][1]
    print("\n| search | forward, CPU ms / image | input gradient, CPU ms / image | in forwards |")
    print("|---|---|---|---|")
    for search, (gradient, forward) in rates.items():
        print(
            f"| {search} | {1e3 * forward:.4f} | {1e3 * gradient:.4f} | {gradient / forward:.2f} |"
        )
    passes = protocol_passes(attacks)
    floors = {
        precision: attack_floors(
            passes, FLAGS.entering, {name: rates[s] for name, s in plan.items()}, verdict
        )
        for precision, plan in plans.items()
    }
    print(
        "\n| attack | images entering | gradients / image | forwards / image | "
        + " | ".join(f"floor, {precision}, CPU s" for precision in floors)
        + " |"
    )
    print("|---|---|---|---|" + "---|" * len(floors))
    for name, entering in zip(ATTACKS, FLAGS.entering, strict=True):
        gradients, forwards = passes[name]
        cells = " | ".join(f"{floor[name]:,.0f}" for floor in floors.values())
        print(f"| {name} | {entering} | {gradients} | {forwards} | {cells} |")
    totals = {precision: sum(floor.values()) for precision, floor in floors.items()}
    print("| total | | | | " + " | ".join(f"**{t:,.0f}**" for t in totals.values()) + " |")
    if "float32" in totals:
        print(
            f"The float32 floor is {totals['float32'] / verdict / 1e6:.2f} million "
            "float32 forward passes' CPU time."
        )
    if {"float32", "mixed"} <= set(totals):
        print(
            f"Mixed precision's floor is {totals['mixed'] / totals['float32']:.2f} "
            "of float32's on these cores."
        )


if __name__ == "__main__":
    flags.DEFINE_integer("batch_size", 500, "Images per forward pass.")
    flags.DEFINE_integer("calls", 20, "Forward passes per round.")
    flags.DEFINE_integer("repeats", 5, "Rounds; the best is reported.")
    flags.DEFINE_integer("threads", 0, "TensorFlow's intra- and inter-op threads; 0: default.")
    flags.DEFINE_list("dtypes", ["float32", "bfloat16"], "Compute dtypes of the model.")
    flags.DEFINE_list(
        "precisions",
        list(evaluation.PRECISIONS),
        "The attacks' precisions to price the protocol in (`evaluation.PRECISIONS`).",
    )
    flags.DEFINE_list(
        "entering",
        ["994", "940", "938", "938"],
        "Images entering APGD-CE, APGD-T, FAB-T and Square: by default the `autoattack` "
        "cascade's on the LFR authors' model, first 1,000 test images (docs/RESULTS.md).",
    )
    app.run(main)
