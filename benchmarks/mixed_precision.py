r"""Mixed precision against float32: the same verdicts, image by image, and the CPU time each costs.

The `autoattack` protocol (APGD-CE, APGD-T, FAB-T, Square; a cascade) in
mixed precision (`precision="mixed"`: the gradient attacks search on a
bfloat16 copy, Square in float32, every verdict is float32's) on the first
`--examples` test images of each MNIST zoo entry and of the LFR authors'
model (`KERAS_LFR_REFERENCE_WEIGHTS` or `--reference_weights`), compared
image by image with float32's verdicts.

Four modes:

- `--mode=verdicts` (the default): for each model, the mixed-precision
  evaluation, resumable (finished chunks are cached under `--cache_dir`, one
  folder per model, setting and precision: rerun the same command after a
  kill). Float32's verdicts come from the zoo's shipped chunks where they
  cover the images (with their per-attack counts and CPU seconds), else from
  the entry's record (verdicts only), else, and for the authors' model, from
  a float32 evaluation run here the same way; `--float32=run` always runs it.
  Prints a markdown table (images robust only under mixed, only under
  float32, each precision's cascade and CPU seconds) and the acceptance: at
  most 1 image per 1,000 more robust under mixed on each model, and no more
  robust under mixed over all models. Writes `--out`.
- `--mode=timing`: float32 then mixed on the same model and images in one
  process, nothing cached: the CPU seconds (`time.process_time`, all
  threads, tracing included) and wall seconds per 1,000 images of each, and
  their ratio. Writes `--out`.
- `--mode=noise --attack_seed=1`: float32 with other random starts against
  float32's own verdicts (seed 0), image by image: how many images two
  float32 runs disagree on, the yardstick for `--mode=verdicts`' counts.
  Resumable like `verdicts`.
- `--mode=square --images=125,547 --seeds=6`: Square alone on the given
  test images, from each of `--seeds` seeds, searching on the model and on
  its bfloat16 copy (judged in float32 both times): how many seeds break
  each image. Square's draws depend on the batch, so these are not the
  cascade's. This is why mixed precision keeps Square's search in float32
  (`evaluation.search_precision`).

From the repository root:

    # The evidence: every MNIST zoo entry and the authors' model, 1,000 images each
    # (hours on 2 CPU cores; resumable).
    KERAS_LFR_REFERENCE_WEIGHTS=lfr_official_mnist_smallcnn.npz \
        python -m benchmarks.mixed_precision --examples=1000
    # Where it pays: float32 and mixed on the authors' model, same machine, one run.
    python -m benchmarks.mixed_precision --mode=timing --models=authors --examples=1000 \
        --reference_weights=lfr_official_mnist_smallcnn.npz
    # Without TensorFlow (the GPU check, `benchmarks/device_run.sh`): images from an .npz.
    KERAS_BACKEND=jax python -m benchmarks.mixed_precision --mode=timing --models=authors \
        --examples=200 --data_npz=mnist.npz --reference_weights=lfr_official_mnist_smallcnn.npz
    # The yardstick: float32 from other random starts against float32's verdicts.
    python -m benchmarks.mixed_precision --mode=noise --attack_seed=1 --examples=1000

Results go to `results/mixed_precision/<mode>.json` by
default (rewritten after every model, so a stopped run keeps what it
measured).
"""

import functools
import glob
import inspect
import json
import os
import platform
import time

import numpy as np
from absl import app, flags, logging

import keras_lfr
from keras_lfr import evaluation
from keras_lfr.evaluation import running

FLAGS = flags.FLAGS
AUTHORS = "authors"
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULTS = os.path.join(REPO, "results", "mixed_precision")
# Where the zoo's float32 chunks may be: beside the results, or (earlier) beside the entry.
SHIPPED_CHUNKS = (
    os.path.join(REPO, "results", "zoo", "{name}", "{protocol}-eps{epsilon:g}-q{queries}-*"),
    os.path.join(
        REPO, "keras_lfr", "zoo", "models", "{name}", "evaluation",
        "{protocol}-eps{epsilon:g}-q{queries}-*",
    ),
)  # fmt: skip
PROTOCOL = evaluation.RELEASE_PROTOCOL  # the zoo's, whose float32 chunks are compared


def model_names():
    """`--models`, or every MNIST zoo entry and the authors' model (if its weights are given)."""
    if FLAGS.models:
        return list(FLAGS.models)
    names = list(keras_lfr.zoo.available("mnist"))
    if reference_weights():
        names.append(AUTHORS)
    else:
        print("The authors' model is left out: set KERAS_LFR_REFERENCE_WEIGHTS.")
    return names


def reference_weights():
    return FLAGS.reference_weights or os.environ.get("KERAS_LFR_REFERENCE_WEIGHTS")


def load(name):
    """`(model, dataset, epsilon)` of a zoo entry or of the authors' model (`"authors"`)."""
    if name == AUTHORS:
        path = reference_weights()
        if not path or not os.path.exists(path):
            raise app.UsageError(
                f"Invalid value for flag --reference_weights. Received: {path!r}. Expected the "
                "LFR authors' released .npz (or set KERAS_LFR_REFERENCE_WEIGHTS)."
            )
        cnn = keras_lfr.models.small_cnn()
        return keras_lfr.models.load_weights_npz(cnn, path), "mnist", 0.3
    threat = keras_lfr.ThreatModel.of_record(keras_lfr.zoo.info(name))
    model = keras_lfr.models.to_float32(keras_lfr.zoo.load(name))
    return model, threat.dataset, threat.epsilon


def chunk_loader(dataset):
    """`load_chunk(start, stop)` of the test split: tfds's, or `--data_npz`'s (no TensorFlow)."""
    if FLAGS.data_npz:
        with np.load(FLAGS.data_npz) as data:
            images = data["x_test"].astype("float32").reshape(-1, 28, 28, 1) / 255.0
            labels = data["y_test"].astype("int32")
        return lambda start, stop: [(images[start:stop], labels[start:stop])]
    return lambda start, stop: keras_lfr.data.load(
        dataset, f"test[{start}:{stop}]", batch_size=stop - start, shuffle=False
    )


def run(name, model, dataset, epsilon, precision, cached=True, seed=None):
    """The autoattack cascade on the first `--examples` images: `resumable_robust_accuracy`'s.

    The attacks' random starts use `seed`, by default `--attack_seed`.
    """
    seed = FLAGS.attack_seed if seed is None else seed
    protocol = evaluation.protocol(PROTOCOL, epsilon=epsilon, queries=FLAGS.queries)
    attacks = reseeded(protocol, seed)
    cache_dir = None
    if cached and FLAGS.cache_dir:
        settings = [dataset, FLAGS.chunk_size, PROTOCOL, epsilon, FLAGS.queries, precision]
        settings += [f"seed{seed}"] if seed else []
        if precision != "float32":  # which attacks search in bfloat16 (float32's keys unchanged)
            settings += [evaluation.search_plan(attacks, precision)]
        root = os.path.join(FLAGS.cache_dir, name.replace("/", "-"))
        cache_dir = evaluation.cache_path(root, precision, model, *settings)
    start, cpu_start = time.perf_counter(), time.process_time()
    results = evaluation.resumable_robust_accuracy(
        model,
        chunk_loader(dataset),
        attacks,
        FLAGS.examples,
        chunk_size=FLAGS.chunk_size,
        cache_dir=cache_dir,
        verbose=FLAGS.verbose,
        precision=precision,
    )
    results["this_run"] = {
        "seconds": time.perf_counter() - start,
        "cpu_seconds": time.process_time() - cpu_start,
    }
    return results


def reseeded(attacks, seed):
    """The attacks with `seed` for their random starts (those that take one); 0 leaves them."""
    if not seed:
        return attacks
    return {
        name: functools.partial(attack, seed=seed)
        if "seed" in inspect.signature(attack).parameters
        else attack
        for name, attack in attacks.items()
    }


def cascade(results, n):
    """Images robust after the clean pass and after each attack (cumulative), as counts."""
    names = ("clean", *evaluation.protocol(PROTOCOL))
    return {k: int(round(results[k] * n)) for k in names if k in results}


def total_cpu(results):
    """The CPU seconds of all chunks, cached ones included (`None` if unknown)."""
    per_attack = results.get("cpu_seconds")
    return None if per_attack is None else float(sum(per_attack.values()))


def shipped_float32(name, epsilon):
    """Float32's results on the first `--examples` images from a zoo entry's own evaluation.

    From its shipped chunks when they cover those images exactly (counts per
    attack, CPU seconds, verdicts), else from its record (verdicts only),
    else `None`.
    """
    if name == AUTHORS:
        return None
    where = {"name": name, "protocol": PROTOCOL, "epsilon": epsilon, "queries": FLAGS.queries}
    for pattern in SHIPPED_CHUNKS:
        for folder in sorted(glob.glob(pattern.format(**where))):
            joined = join_chunks(folder, FLAGS.examples)
            if joined is not None:
                return {**joined, "source": os.path.relpath(folder, REPO)}
    record = keras_lfr.zoo.info(name)["evaluation"]
    verdicts = record.get("per_example", "")
    if record.get("protocol") != PROTOCOL or len(verdicts) < FLAGS.examples:
        return None
    verdicts = verdicts[: FLAGS.examples]
    worst = verdicts.count("1") / FLAGS.examples
    return {"per_example": verdicts, "worst_case": worst, "source": "the zoo record"}


def join_chunks(folder, n):
    """The chunks `chunk-000000-…` to `…-n` of a folder, joined; `None` unless they tile [0, n)."""
    chunks, start = [], 0
    while start < n:
        found = glob.glob(os.path.join(folder, f"chunk-{start:06d}-*.json"))
        stops = [int(os.path.basename(f)[len("chunk-000000-") : -len(".json")]) for f in found]
        stops = [stop for stop in stops if stop <= n]
        if not stops:
            return None
        stop = max(stops)
        with open(os.path.join(folder, f"chunk-{start:06d}-{stop:06d}.json")) as f:
            chunks.append(json.load(f))
        start = stop
    if any("per_example" not in c or c.get("precision", "float32") != "float32" for c in chunks):
        return None
    names = ("clean", *evaluation.protocol(PROTOCOL), "worst_case")
    results = {k: sum(c[k] for c in chunks) / n for k in names}
    results["per_example"] = "".join(c["per_example"] for c in chunks)
    if all("cpu_seconds" in c for c in chunks):
        keys = chunks[0]["cpu_seconds"]
        results["cpu_seconds"] = {k: sum(c["cpu_seconds"][k] for c in chunks) for k in keys}
    return results


def compare_verdicts():
    if FLAGS.attack_seed:
        raise app.UsageError(
            f"Invalid value for flag --attack_seed. Received: {FLAGS.attack_seed}. Expected 0 "
            "for --mode=verdicts, whose float32 verdicts are the zoo's own (seed 0); "
            "--mode=noise takes another seed."
        )
    rows = []
    for name in model_names():
        model, dataset, epsilon = load(name)
        print(f"{name}: autoattack at ε = {epsilon:g} on the first {FLAGS.examples} images")
        mixed = run(name, model, dataset, epsilon, "mixed")
        float32 = None if FLAGS.float32 == "run" else shipped_float32(name, epsilon)
        if float32 is None:
            float32 = {**run(name, model, dataset, epsilon, "float32"), "source": "run here"}
        paired = evaluation.paired_comparison(mixed["per_example"], float32["per_example"])
        rows.append(
            {
                "model": name,
                "examples": FLAGS.examples,
                "robust_only_mixed": paired["only_a"],
                "robust_only_float32": paired["only_b"],
                "robust": {"mixed": mixed["worst_case"], "float32": float32["worst_case"]},
                "cascade": {
                    "mixed": cascade(mixed, FLAGS.examples),
                    "float32": cascade(float32, FLAGS.examples),
                },
                "cpu_seconds": {"mixed": total_cpu(mixed), "float32": total_cpu(float32)},
                "float32_source": float32["source"],
                "per_example": {"mixed": mixed["per_example"], "float32": float32["per_example"]},
            }
        )
        save({"rows": rows, "acceptance": acceptance(rows)})
        print(verdict_table(rows), flush=True)
    print(acceptance(rows)["summary"])


def compare_seeds():
    """Float32 at `--attack_seed` against float32 at seed 0: how far two float32 runs disagree."""
    if not FLAGS.attack_seed:
        raise app.UsageError(
            "Invalid value for flag --attack_seed. Received: 0. Expected another seed than the "
            "evaluations' own (0) for --mode=noise."
        )
    rows = []
    for name in model_names():
        model, dataset, epsilon = load(name)
        print(f"{name}: float32 autoattack, seed {FLAGS.attack_seed} against seed 0")
        reseeded_run = run(name, model, dataset, epsilon, "float32")
        baseline = None if FLAGS.float32 == "run" else shipped_float32(name, epsilon)
        if baseline is None:
            baseline = run(name, model, dataset, epsilon, "float32", seed=0)
            baseline["source"] = "run here"
        paired = evaluation.paired_comparison(reseeded_run["per_example"], baseline["per_example"])
        rows.append(
            {
                "model": name,
                "examples": FLAGS.examples,
                "attack_seed": FLAGS.attack_seed,
                "robust_only_reseeded": paired["only_a"],
                "robust_only_seed0": paired["only_b"],
                "robust": {"reseeded": reseeded_run["worst_case"], "seed0": baseline["worst_case"]},
                "cpu_seconds": total_cpu(reseeded_run),
                "seed0_source": baseline["source"],
                "per_example": reseeded_run["per_example"],
            }
        )
        save({"rows": rows})
        print(noise_table(rows), flush=True)


def noise_table(rows):
    """`compare_seeds`' rows as a markdown table."""
    lines = [
        "| model | images | robust only at the new seed | robust only at seed 0 | "
        "robust, new seed | robust, seed 0 |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['examples']} | {row['robust_only_reseeded']} | "
            f"{row['robust_only_seed0']} | {100 * row['robust']['reseeded']:.1f} | "
            f"{100 * row['robust']['seed0']:.1f} |"
        )
    return "\n".join(lines)


def acceptance(rows):
    """At most 1 image per 1,000 more robust under mixed per model; none over all models."""
    per_model = {
        row["model"]: row["robust_only_mixed"] <= max(1, row["examples"] // 1000) for row in rows
    }
    excess = sum(row["robust_only_mixed"] - row["robust_only_float32"] for row in rows)
    passed = all(per_model.values()) and excess <= 0
    failing = [name for name, ok in per_model.items() if not ok]
    summary = (
        f"Acceptance {'met' if passed else 'NOT met'}: robust only under mixed minus only under "
        f"float32, over all models: {excess:+d}"
        + (f"; more than 1 per 1,000 on {', '.join(failing)}" if failing else "")
        + "."
    )
    return {"per_model": per_model, "excess_over_all_models": excess, "passed": passed,
            "summary": summary}  # fmt: skip


def verdict_table(rows):
    def counts(c):
        return " → ".join(str(c[k]) for k in c) if c else "–"

    def seconds(value):
        return "–" if value is None else f"{value:,.0f}"

    attacks = " → ".join(("clean", *evaluation.protocol(PROTOCOL)))
    lines = [
        "| model | images | robust only under mixed | robust only under float32 | "
        f"mixed cascade ({attacks}) | float32 cascade | mixed CPU s | float32 CPU s | "
        "float32 from |",
        "|---|---:|---:|---:|---|---|---:|---:|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['model']} | {row['examples']} | {row['robust_only_mixed']} | "
            f"{row['robust_only_float32']} | {counts(row['cascade']['mixed'])} | "
            f"{counts(row['cascade']['float32'])} | {seconds(row['cpu_seconds']['mixed'])} | "
            f"{seconds(row['cpu_seconds']['float32'])} | {row['float32_source']} |"
        )
    return "\n".join(lines)


def square_seeds():
    """Square alone on `--images` from `--seeds` seeds, on the model and its bfloat16 copy."""
    rows = []
    for name in model_names():
        model, dataset, epsilon = load(name)
        images = [int(i) for i in FLAGS.images]
        load_chunk = chunk_loader(dataset)
        x, y = [], []
        for i in images:
            for image, label in load_chunk(i, i + 1):
                x.append(np.asarray(image))
                y.append(np.asarray(label))
        x, y = np.concatenate(x), np.concatenate(y)
        square = evaluation.protocol(PROTOCOL, epsilon=epsilon, queries=FLAGS.queries)["square"]
        # Square searching on the model and on its bfloat16 copy, judged in float32 both
        # times, compiled as the evaluations compile it.
        searched = {"float32": model, "bfloat16": running._Bfloat16Search(model)}
        broken = {}
        for search, searched_model in searched.items():
            counts = np.zeros(len(images), int)
            for seed in range(FLAGS.seeds):
                attack = functools.partial(square, seed=seed)
                counts += ~np.asarray(running._correct_under(model, attack, searched_model)(x, y))
            broken[search] = counts.tolist()
        for k, image in enumerate(images):
            row = {"model": name, "image": image, "seeds": FLAGS.seeds}
            rows.append({**row, **{f"broken_{p}": broken[p][k] for p in broken}})
        save({"rows": rows})
    print(
        "| model | test image | seeds | Square breaks it, float32 search | "
        "Square breaks it, bfloat16 search |\n|---|---:|---:|---:|---:|"
    )
    for row in rows:
        print(
            f"| {row['model']} | {row['image']} | {row['seeds']} | {row['broken_float32']} | "
            f"{row['broken_bfloat16']} |"
        )


def time_precisions():
    rows = []
    for name in model_names():
        model, dataset, epsilon = load(name)
        for precision in evaluation.PRECISIONS:
            results = run(name, model, dataset, epsilon, precision, cached=False)
            per_thousand = 1000 / results["examples"]
            rows.append(
                {
                    "model": name,
                    "precision": precision,
                    "examples": results["examples"],
                    "robust": results["worst_case"],
                    "cpu_seconds_per_1000": results["this_run"]["cpu_seconds"] * per_thousand,
                    "seconds_per_1000": results["this_run"]["seconds"] * per_thousand,
                    "cpu_seconds_per_attack": results["cpu_seconds"],
                    "per_example": results["per_example"],
                }
            )
            save({"rows": rows})
            print(timing_table(rows), flush=True)


def timing_table(rows):
    lines = [
        "| model | precision | images | robust | CPU s per 1,000 | wall s per 1,000 | "
        "CPU vs float32 |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    base = {}
    for row in rows:
        if row["precision"] == "float32":
            base[row["model"]] = row["cpu_seconds_per_1000"]
        ratio = row["cpu_seconds_per_1000"] / base[row["model"]] if row["model"] in base else None
        lines.append(
            f"| {row['model']} | {row['precision']} | {row['examples']} | "
            f"{100 * row['robust']:.1f} | {row['cpu_seconds_per_1000']:,.0f} | "
            f"{row['seconds_per_1000']:,.1f} | {'–' if ratio is None else f'{ratio:.2f}'} |"
        )
    return "\n".join(lines)


def save(results):
    out = FLAGS.out or os.path.join(RESULTS, f"{FLAGS.mode}.json")
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    about = {
        "mode": FLAGS.mode,
        "protocol": PROTOCOL,
        "examples": FLAGS.examples,
        "chunk_size": FLAGS.chunk_size,
        "queries": FLAGS.queries,
        "backend": keras_lfr.backend.NAME,
        "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
        "keras_lfr_version": keras_lfr.__version__,
    }
    with open(f"{out}.tmp", "w") as f:
        json.dump({"about": about, **results}, f, indent=1)
    os.replace(f"{out}.tmp", out)


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # tfds's lines would hide the tables
    MODES[FLAGS.mode]()


# What each `--mode` runs.
MODES = {
    "verdicts": compare_verdicts,
    "timing": time_precisions,
    "noise": compare_seeds,
    "square": square_seeds,
}


if __name__ == "__main__":
    flags.DEFINE_enum("mode", "verdicts", list(MODES), "What to measure.")
    flags.DEFINE_list("images", [], "Test images Square attacks alone (--mode=square).")
    flags.DEFINE_integer("seeds", 6, "Seeds of Square's random search (--mode=square).")
    flags.DEFINE_integer(
        "attack_seed",
        0,
        "Seed of the attacks' random starts (0: the evaluations' own); --mode=noise compares "
        "float32 at this seed with float32 at seed 0.",
    )
    flags.DEFINE_list(
        "models", None, "Zoo entries and/or 'authors' (default: every MNIST entry and authors)."
    )
    flags.DEFINE_integer("examples", 1000, "Test images, from the first.")
    flags.DEFINE_integer("chunk_size", 500, "Images per chunk (and attack batch).")
    flags.DEFINE_integer("queries", 5000, "Square attack queries.")
    flags.DEFINE_enum(
        "float32",
        "shipped",
        ["shipped", "run"],
        "Float32's verdicts: from the zoo's shipped chunks or records where they cover the "
        "images (else run here), or always run here.",
    )
    flags.DEFINE_string(
        "reference_weights", None, "The LFR authors' .npz (default: KERAS_LFR_REFERENCE_WEIGHTS)."
    )
    flags.DEFINE_string("data_npz", None, "MNIST as an .npz (x_test, y_test) instead of tfds.")
    flags.DEFINE_string(
        "cache_dir",
        os.path.join(RESULTS, "chunks"),
        "Where finished chunks are cached (verdicts and noise modes); empty for none.",
    )
    flags.DEFINE_string("out", None, "JSON results (default: results/mixed_precision/<mode>.json).")
    flags.DEFINE_integer("verbose", 1, "1 for a line per chunk, 0 for none.")
    app.run(main)
