"""Robust accuracy under named attack protocols, and gradient-masking sanity checks."""

import dataclasses
import functools
import hashlib
import json
import math
import numbers
import os
import statistics
import time

import keras
import numpy as np

from keras_lfr import _validation, attacks, backend, checks, defaults, ops


def paper_protocol(epsilon=defaults.PAPER_EPSILON, clip_min=0.0, clip_max=1.0):
    """The LFR authors' evaluation (Xu et al., ICIP 2020, Table 1).

    FGSM: one step of size ε from a uniform random start; PGD-40: step 0.01,
    random start; MI-FGSM: 40 steps of 0.01, decay 0.1; DDN: l2, 20
    iterations, no ε (an example is robust when no adversarial is found).

    Args:
        epsilon: The l-inf radius. Defaults to `0.3` (the paper's MNIST).
        clip_min: Smallest pixel value. Defaults to `0.0`.
        clip_max: Largest pixel value. Defaults to `1.0`.

    Returns:
        A dict mapping attack names to functions `(model, x, y) -> x_adv`.
    """
    pixels = {"clip_min": clip_min, "clip_max": clip_max}
    paper_steps = {"step_size": defaults.PAPER_STEP_SIZE, "steps": defaults.PAPER_STEPS}
    return {
        "fgsm": functools.partial(attacks.fgsm, epsilon=epsilon, random_start=True, **pixels),
        "pgd40": functools.partial(
            attacks.pgd, epsilon=epsilon, random_start=True, **paper_steps, **pixels
        ),
        "mi_fgsm": functools.partial(
            attacks.mi_fgsm, epsilon=epsilon, decay=0.1, **paper_steps, **pixels
        ),
        "ddn": functools.partial(attacks.ddn, steps=20, **pixels),
    }


def strong_protocol(epsilon=defaults.PAPER_EPSILON, queries=5000, clip_min=0.0, clip_max=1.0):
    """APGD-CE, APGD-T (targeted DLR, 9 targets) and Square, worst case per example.

    The white-box attacks of AutoAttack (Croce & Hein, ICML 2020) with 100
    iterations each, plus the black-box Square attack with `queries` queries,
    which gradient masking cannot fool, on AutoAttack's fixed p schedule
    (`rescale_schedule=False`).

    Args:
        epsilon: The l-inf radius. Defaults to `0.3` (the paper's MNIST).
        queries: Square attack queries. Defaults to `5000`.
        clip_min: Smallest pixel value. Defaults to `0.0`.
        clip_max: Largest pixel value. Defaults to `1.0`.

    Returns:
        A dict mapping attack names to functions `(model, x, y) -> x_adv`.
    """
    ball = {"epsilon": epsilon, "clip_min": clip_min, "clip_max": clip_max}
    return {
        "apgd_ce": functools.partial(attacks.apgd, steps=100, loss="ce", **ball),
        "apgd_t": functools.partial(attacks.apgd, steps=100, loss="dlr", num_targets=9, **ball),
        "square": functools.partial(
            attacks.square, queries=queries, rescale_schedule=False, **ball
        ),
    }


def autoattack_protocol(epsilon=defaults.PAPER_EPSILON, queries=5000, clip_min=0.0, clip_max=1.0):
    """AutoAttack's `standard` version: APGD-CE, APGD-T, FAB-T and Square, in that order.

    The strong protocol with FAB-T (9 targets, 100 steps; `attacks.fab`)
    between APGD-T and Square, as in AutoAttack (Croce & Hein, ICML 2020).
    Meant to run as a cascade (`robust_accuracy(..., cascade=True)`), each
    attack on the points still robust, as AutoAttack does; its worst case is
    at most the strong protocol's on the same images.

    Args:
        epsilon: The l-inf radius. Defaults to `0.3` (the paper's MNIST).
        queries: Square attack queries. Defaults to `5000`.
        clip_min: Smallest pixel value. Defaults to `0.0`.
        clip_max: Largest pixel value. Defaults to `1.0`.

    Returns:
        A dict mapping attack names to functions `(model, x, y) -> x_adv`.
    """
    strong = strong_protocol(epsilon, queries, clip_min, clip_max)
    ball = {"epsilon": epsilon, "clip_min": clip_min, "clip_max": clip_max}
    return {
        "apgd_ce": strong["apgd_ce"],
        "apgd_t": strong["apgd_t"],
        "fab_t": functools.partial(attacks.fab, steps=100, num_targets=9, **ball),
        "square": strong["square"],
    }


PROTOCOLS = {"paper": paper_protocol, "strong": strong_protocol, "autoattack": autoattack_protocol}


def protocol(name, **kwargs):
    """Returns the attacks of a named protocol (`"paper"`, `"strong"` or `"autoattack"`).

    Raises:
        ValueError: If `name` is unknown.
    """
    _validation.one_of("protocol", name, tuple(PROTOCOLS))
    return PROTOCOLS[name](**kwargs)


def _as_logits_fn(model):
    """A function `(x) -> logits` in inference mode, compiled once."""
    return backend.batch_function(lambda x: model(x, training=False), _variables(model))


# The precisions an evaluation's attacks may search in; their verdicts are always float32's.
PRECISIONS = ("float32", "mixed")


def correct_under(model, attack, precision="float32"):
    """The compiled accuracy-under-attack step of every evaluation loop.

    With `precision="mixed"`, the attack searches on a bfloat16 copy of the
    model (`keras_lfr.models.bfloat16_copy`, its logits cast to float32;
    forward passes and input gradients in bfloat16), and the point it
    returns is judged on `model` itself, in float32: an example counts as
    broken only if `model` misclassifies the attack's point. A rounding error
    of the search can therefore cost a found example (the attack keeps a point
    that bfloat16 misclassifies and float32 does not), never add one. The
    copy's weights are copied from `model`'s at every call, so a model that
    trains between calls (`callbacks.AttackEvaluation`) is searched as it
    is now.

    Args:
        model: A Keras model or any callable returning logits (for
            `"mixed"`: a functional or Sequential Keras model, or a
            `keras_lfr.RobustModel` wrapping one).
        attack: `fn(model, x, labels) -> x_adv`.
        precision: `"float32"` or `"mixed"` (search in bfloat16, verdicts
            in float32). Defaults to `"float32"`.

    Returns:
        A function `(x, labels) -> bool per example`: is the model's
        prediction on `attack(model, x, labels)` the label? It is traced once
        for any batch size (a cascade shrinks the batch from attack to
        attack), not once per size.

    Raises:
        ValueError: If `precision` is not one of `PRECISIONS`, or is
            `"mixed"` and `model` cannot be copied in bfloat16.

    Example:

    >>> correct = keras_lfr.evaluation.correct_under(
    ...     cnn, keras_lfr.evaluation.protocol("autoattack")["apgd_ce"], precision="mixed")
    >>> robust = correct(x, labels)  # float32 verdicts of a bfloat16 search
    """
    return _correct_under(model, attack, _searched(model, precision))


def _searched(model, precision):
    """The model the attacks search on: `model` itself, or its `_Bfloat16Search`."""
    _validation.one_of("precision", precision, PRECISIONS)
    return model if precision == "float32" else _Bfloat16Search(model)


class _Bfloat16Search:
    """A bfloat16 copy of a model for the attacks' search: `(x, training=False) -> float32 logits`.

    Its forward passes and input gradients run in bfloat16; its logits are
    cast to float32, so that the attacks' losses and margins are float32
    arithmetic on bfloat16 logits. `sync` copies the original's current
    weights into it (exactly: both hold float32 variables).
    """

    def __init__(self, model):
        from keras_lfr import models

        unwrap = getattr(model, "unwrap", None)
        self.source = unwrap() if callable(unwrap) else model
        self.copy = models.bfloat16_copy(self.source)
        self.variables = self.copy.variables

    def sync(self):
        for copied, weight in zip(self.copy.weights, self.source.weights, strict=True):
            copied.assign(weight.value)

    def __call__(self, x, training=False):
        return keras.ops.cast(self.copy(x, training=training), "float32")


def _correct_under(model, attack, searched):
    """`correct_under`, the attack searching on `searched` (`_searched`), judged on `model`."""

    def correct(x, labels):
        x_adv = attack(searched, x, labels)
        predictions = keras.ops.argmax(model(x_adv, training=False), axis=1)
        return keras.ops.cast(predictions, "int32") == labels

    if searched is model:
        return backend.batch_function(correct, _variables(model))
    compiled = backend.batch_function(correct, [*_variables(model), *searched.variables])

    def run(x, labels):
        searched.sync()  # the weights of now, read by the compiled function
        return compiled(x, labels)

    return run


def _variables(model):
    """The variables a compiled function of `model` must read at every call."""
    return getattr(model, "variables", ())


def robust_accuracy(
    model,
    dataset,
    attacks_by_name,
    *,
    cascade=False,
    verbose=1,
    per_example=False,
    precision="float32",
):
    """Accuracy on clean inputs, under each attack, and under all of them at once.

    By default every attack runs on every example (also on ones that are
    misclassified clean; they count as not robust), so each attack's own
    accuracy is reported. `worst_case` is the fraction of examples classified
    correctly clean and under every attack.

    With `cascade=True` (AutoAttack's way), each attack only runs on the
    examples that are still robust after the clean pass and the attacks
    before it, in the order of `attacks_by_name`. The worst case is the same
    quantity, found much faster on weak models; each attack's entry is then
    the accuracy *after* that attack and all before it (cumulative), not the
    attack's own.

    Args:
        model: A Keras model or any callable returning logits.
        dataset: Batches of `(images, labels)` (a `tf.data.Dataset` or any
            iterable of pairs).
        attacks_by_name: Dict of name -> `fn(model, x, y) -> x_adv`, e.g.
            `protocol("paper")`.
        cascade: Attack only the examples still robust. Defaults to `False`.
        verbose: 1 for a progress bar, 0 for none. Defaults to `1`.
        per_example: Also return, under `"per_example"`, each example's
            worst-case verdict as a string of `"1"` (robust) and `"0"`, in
            the data's order (for `paired_comparison`). Defaults to `False`.
        precision: `"float32"`, or `"mixed"`: the attacks search on a
            bfloat16 copy of the model, several times faster where bfloat16
            is (most CPUs and GPUs), and every point they return is judged on
            `model` in float32 (`correct_under`). The clean pass, each
            attack's verdicts, the cascade's hand-over and all results are
            float32's; mixed precision can only miss an adversarial example
            that float32 would have found, never count one float32 rejects.
            Defaults to `"float32"`.

    Returns:
        A dict with `clean`, each attack's name, `worst_case` (fractions),
        `examples` (the count), `seconds` (a dict: wall time of the clean
        pass and of each attack, including its model queries) and
        `cpu_seconds` (the same in CPU time of this process, all threads).

    Raises:
        ValueError: If `attacks_by_name` is empty or `precision` invalid.

    Example:

    >>> results = keras_lfr.evaluation.robust_accuracy(
    ...     model, test_ds, keras_lfr.evaluation.protocol("paper"))
    >>> fast = keras_lfr.evaluation.robust_accuracy(
    ...     model, test_ds, keras_lfr.evaluation.protocol("autoattack"), cascade=True,
    ...     precision="mixed")
    """
    steps = _compile(model, attacks_by_name, precision)
    return _robust_accuracy(model, steps, dataset, cascade, verbose, per_example)


def _compile(model, attacks_by_name, precision="float32"):
    """`(logits_fn, {name: correct_under(model, attack, precision)})`: compile once, run often.

    The attacks of a mixed-precision evaluation share one bfloat16 copy.
    """
    if not attacks_by_name:
        raise ValueError(
            "Invalid value for argument `attacks_by_name`. Received: "
            f"attacks_by_name={attacks_by_name!r}. Expected a non-empty dict."
        )
    searched = _searched(model, precision)
    compiled = {
        name: _correct_under(model, attack, searched) for name, attack in attacks_by_name.items()
    }
    return _as_logits_fn(model), compiled


def _robust_accuracy(model, steps, dataset, cascade, verbose, per_example):
    """`robust_accuracy` with its compiled steps (`_compile`) given."""
    logits_fn, compiled = steps
    correct = {name: [] for name in ("clean", *compiled)}
    seconds = dict.fromkeys(correct, 0.0)
    cpu_seconds = dict.fromkeys(correct, 0.0)
    cardinality = int(dataset.cardinality()) if checks.is_tf_dataset(dataset) else None
    # Stateful: the bar shows the running totals as given, so it ends on the results.
    progbar = keras.utils.Progbar(
        cardinality if cardinality and cardinality > 0 else None,
        verbose=verbose,
        unit_name="batch",
        stateful_metrics=list(correct),
    )
    for step, (x, y) in enumerate(dataset):
        start, cpu_start = time.perf_counter(), time.process_time()
        logits = logits_fn(x)
        seconds["clean"] += time.perf_counter() - start
        cpu_seconds["clean"] += time.process_time() - cpu_start
        if step == 0:
            checks.validate_batch(x, y, num_classes=logits.shape[-1], where="the evaluation data")
            checks.warn_if_not_logits(model, logits)
        labels = ops.sparse_labels(y)
        robust = _correct(logits, labels)
        correct["clean"].append(robust)
        for name, correct_fn in compiled.items():
            start, cpu_start = time.perf_counter(), time.process_time()
            if cascade:
                survivors = np.flatnonzero(robust)
                robust = np.zeros_like(robust)
                if survivors.size:
                    x_s = keras.ops.take(x, survivors, axis=0)
                    labels_s = keras.ops.take(labels, survivors, axis=0)
                    robust[survivors] = keras.ops.convert_to_numpy(correct_fn(x_s, labels_s))
                correct[name].append(robust)
            else:
                correct[name].append(keras.ops.convert_to_numpy(correct_fn(x, labels)))
            seconds[name] += time.perf_counter() - start
            cpu_seconds[name] += time.process_time() - cpu_start
        progbar.update(step + 1, [(n, np.mean(np.concatenate(c))) for n, c in correct.items()])
    verdicts = {name: np.concatenate(c) for name, c in correct.items()}
    results = {name: float(np.mean(c)) for name, c in verdicts.items()}
    robust = np.all(np.stack(list(verdicts.values())), axis=0)
    results["worst_case"] = float(np.mean(robust))
    results["examples"] = int(len(verdicts["clean"]))
    if per_example:
        results["per_example"] = flags_to_string(robust)
    results["seconds"] = seconds
    results["cpu_seconds"] = cpu_seconds
    return results


def resumable_robust_accuracy(
    model,
    load_chunk,
    attacks_by_name,
    n_examples,
    *,
    chunk_size=500,
    cache_dir=None,
    cascade=True,
    verbose=1,
    precision="float32",
):
    """`robust_accuracy` over many images in chunks, each chunk's counts saved as it finishes.

    The images are taken `chunk_size` at a time (`load_chunk(start, stop)`
    returns the batches of images `start` to `stop`). With `cache_dir`, each
    finished chunk's counts and times are written there (atomically), and a
    rerun after a kill evaluates only the chunks not yet saved. The attacks'
    randomness depends on the chunk alone (stateless seeds), so a resumed
    evaluation gives exactly the counts of an uninterrupted one. Use one
    `cache_dir` per model, protocol and setting (`cache_key`): the cache
    knows only chunk positions. A chunk evaluated in mixed precision says
    so, and is never read back by an evaluation in float32, nor the other
    way round.

    Args:
        model: A Keras model or any callable returning logits.
        load_chunk: `fn(start, stop)` -> batches of `(images, labels)`.
        attacks_by_name: As for `robust_accuracy`.
        n_examples: How many images, from the first.
        chunk_size: Images per chunk. Defaults to `500`.
        cache_dir: Directory of the per-chunk counts; `None` for none.
            Defaults to `None`.
        cascade: As for `robust_accuracy`. Defaults to `True`.
        verbose: 1 for a progress bar after each chunk (images done, the
            running accuracies and the time left), 0 for none. Defaults to `1`.
        precision: As for `robust_accuracy`: `"float32"` or `"mixed"`.
            Defaults to `"float32"`.

    Returns:
        A dict like `robust_accuracy(..., per_example=True)`'s; `seconds`
        and `cpu_seconds` sum the chunks' times and `per_example` joins
        their verdicts, cached chunks included (each is left out if a cached
        chunk, written by an earlier version, has none).

    Raises:
        ValueError: If an argument is invalid, or `cache_dir` holds a chunk
            evaluated in another precision.

    Example:

    >>> results = keras_lfr.evaluation.resumable_robust_accuracy(
    ...     model, load_chunk, keras_lfr.evaluation.protocol("autoattack"), 1000,
    ...     cache_dir="evaluations/mixed-" + keras_lfr.evaluation.cache_key(model, "mixed"),
    ...     precision="mixed")
    """
    n_examples = _validation.positive_int("n_examples", n_examples)
    chunk_size = _validation.positive_int("chunk_size", chunk_size)
    _validation.one_of("precision", precision, PRECISIONS)
    if cache_dir is not None:
        os.makedirs(cache_dir, exist_ok=True)
    names = ("clean", *attacks_by_name, "worst_case")
    counts = dict.fromkeys((*names, "examples"), 0)
    timers = ("seconds", "cpu_seconds")
    times = {t: dict.fromkeys(("clean", *attacks_by_name), 0.0) for t in timers}
    timed, flags = True, []
    bar = _ChunkProgress(n_examples, verbose)
    steps = None  # compiled at the first chunk evaluated, then reused (no retracing per chunk)
    for start in range(0, n_examples, chunk_size):
        stop = min(start + chunk_size, n_examples)
        # Named by its first and last image: a shorter last chunk of a smaller
        # evaluation is never read back as the full chunk of a larger one.
        path = None if cache_dir is None else os.path.join(cache_dir, _chunk_file(start, stop))
        cached = path is not None and os.path.exists(path)
        if cached:
            with open(path) as f:
                chunk = json.load(f)
            # Chunks written before precisions existed are float32's.
            found = chunk.get("precision", "float32")
            if found != precision:
                raise ValueError(
                    f"Invalid value for argument `cache_dir`. Received: cache_dir={cache_dir!r}, "
                    f"whose {_chunk_file(start, stop)} was evaluated with "
                    f"precision={found!r}. Expected a folder of chunks "
                    f"evaluated with precision={precision!r}: use one folder per precision."
                )
        else:
            steps = steps or _compile(model, attacks_by_name, precision)
            result = _robust_accuracy(
                model, steps, load_chunk(start, stop), cascade, verbose=0, per_example=True
            )
            n = result["examples"]
            chunk = {name: int(round(result[name] * n)) for name in names}
            chunk["examples"] = n
            chunk.update({t: result[t] for t in (*timers, "per_example")})
            if precision != "float32":  # float32 chunks keep the form they always had
                chunk["precision"] = precision
            if path is not None:
                with open(f"{path}.tmp", "w") as f:
                    json.dump(chunk, f)
                os.replace(f"{path}.tmp", path)
        for key in counts:
            counts[key] += chunk[key]
        timed = timed and all(t in chunk for t in timers)
        if "per_example" not in chunk:
            flags = None
        elif flags is not None:
            flags.append(chunk["per_example"])
        for t in timers if timed else ():
            for key in times[t]:
                times[t][key] += chunk[t][key]
        bar.update(counts, evaluated=not cached)
    total = counts.pop("examples")
    results = {name: value / total for name, value in counts.items()}
    if flags is not None:
        results["per_example"] = "".join(flags)
    return {**results, "examples": total, **(times if timed else {})}


def _chunk_file(start, stop):
    """The cached counts of images `start` to `stop`: `chunk-000500-001000.json`."""
    return f"chunk-{start:06d}-{stop:06d}.json"


def cache_key(model, *settings):
    """Names the cached chunks of one evaluation: its model's weights and settings.

    Use it in the name of `resumable_robust_accuracy`'s `cache_dir`: the
    cache knows only chunk positions, so a retrained model, a changed setting
    or another keras_lfr version must write to another folder.

    Args:
        model: The evaluated model: anything with `weights` (a Keras model or
            layer, e.g. a `TFSMLayer` of a SavedModel).
        *settings: Every JSON-serialisable setting the counts depend on
            (protocol, ε, queries, chunk size, dataset, ...).

    Returns:
        16 hex digits of the sha256 of keras_lfr's version, the settings and
        the model's weights in order.

    Raises:
        ValueError: If `model` has no weights to identify it by.
    """
    from keras_lfr import __version__

    weights = getattr(model, "weights", None)
    if not weights:
        raise ValueError(
            f"Invalid value for argument `model`. Received: model={model!r}, with no "
            "`weights`. Expected a Keras model or layer whose weights identify it."
        )
    digest = hashlib.sha256(json.dumps([__version__, *settings], default=list).encode())
    for weight in weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


def cache_path(root, label, model, *settings):
    """Where one evaluation's results are cached: `<root>/<label>-<cache_key>`.

    Every cached evaluation is named here: the chunk folders of
    `resumable_robust_accuracy` (`cache_dir`) that `trainers.evaluate` and
    `keras_lfr.zoo.benchmark` use, and the sanity checks' file of
    `trainers.release` (with `.json` appended).

    Args:
        root: The directory that holds the caches of many evaluations.
        label: A readable prefix, e.g. `"autoattack-eps0.3-q5000"`.
        model: The evaluated model (see `cache_key`).
        *settings: Every setting the results depend on (see `cache_key`).

    Returns:
        The path, a string (nothing is created).
    """
    return os.path.join(os.fspath(root), f"{label}-{cache_key(model, *settings)}")


class _ChunkProgress:
    """The chunked evaluation's progress line: a bar, the running accuracies and the time left.

    The time left is estimated from the images evaluated in this process
    only (chunks read from the cache take no time).
    """

    WIDTH = 30

    def __init__(self, n_examples, verbose):
        self.n_examples, self.verbose = n_examples, verbose
        self.started, self.done, self.evaluated = time.perf_counter(), 0, 0

    def update(self, counts, evaluated):
        """Reports the running `counts` after a chunk (`evaluated`: not read from the cache)."""
        if evaluated:
            self.evaluated += counts["examples"] - self.done
        self.done = counts["examples"]
        if not self.verbose:
            return
        filled = self.WIDTH * self.done // self.n_examples
        bar = ("=" * filled + ">").ljust(self.WIDTH, ".")[: self.WIDTH]
        line = (
            f"{self.done}/{self.n_examples} images [{bar}] worst case "
            f"{counts['worst_case'] / self.done:.4f}, clean {counts['clean'] / self.done:.4f}"
        )
        if self.evaluated:
            seconds = time.perf_counter() - self.started
            left = seconds / self.evaluated * (self.n_examples - self.done)
            line += f"; about {left / 60:.0f} min left"
        print(line, flush=True)


def flags_to_string(robust):
    """Per-example verdicts (booleans) as a string of `"1"` (robust) and `"0"`."""
    return "".join(np.where(np.asarray(robust, bool), "1", "0"))


def paired_comparison(a, b, confidence=0.95):
    """Compares two models' per-example verdicts on the same images.

    The difference of two robust accuracies measured on the same images is
    decided by the images on which the two disagree: an exact two-sided
    McNemar (sign) test on those discordant images, and a normal confidence
    interval of the difference from the paired variance.

    Args:
        a: Model A's verdicts: booleans, or a string of `"1"`/`"0"` (as in
            `robust_accuracy(..., per_example=True)["per_example"]`).
        b: Model B's, on the same images in the same order.
        confidence: Level of the interval. Defaults to `0.95`.

    Returns:
        A dict with `accuracy_a`, `accuracy_b`, `difference` (A − B),
        `interval` (its confidence interval), `only_a` and `only_b` (images
        robust for one model only), `p_value` (exact McNemar) and `examples`.

    Raises:
        ValueError: If the two have different lengths or are empty.

    Example:

    >>> paired_comparison("1101", "1001")["difference"]
    0.25
    """
    a, b = (_as_verdicts(v) for v in (a, b))
    if len(a) != len(b) or not len(a):
        raise ValueError(
            "Invalid values for arguments `a` and `b`. Received: verdicts of "
            f"{len(a)} and {len(b)} examples. Expected the same, non-zero number of examples."
        )
    n = len(a)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    difference = (only_a - only_b) / n
    # Paired variance of the mean of d_i = a_i - b_i, each in {-1, 0, 1}.
    variance = ((only_a + only_b) / n - difference**2) / n
    z = statistics.NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * np.sqrt(max(variance, 0.0))
    discordant = only_a + only_b
    tail = sum(math.comb(discordant, k) for k in range(min(only_a, only_b) + 1))
    p_value = min(1.0, 2 * tail / 2**discordant) if discordant else 1.0
    return {
        "accuracy_a": float(np.mean(a)),
        "accuracy_b": float(np.mean(b)),
        "difference": float(difference),
        "interval": (float(difference - half), float(difference + half)),
        "only_a": only_a,
        "only_b": only_b,
        "p_value": float(p_value),
        "examples": n,
    }


def _as_verdicts(verdicts):
    if isinstance(verdicts, str):
        return np.frombuffer(verdicts.encode(), np.uint8) == ord("1")
    return np.asarray(verdicts, bool)


def _correct(logits, labels):
    predictions = keras.ops.cast(keras.ops.argmax(logits, axis=1), "int32")
    return keras.ops.convert_to_numpy(predictions == labels)


def confidence(model, x, y):
    """How confident a classifier is on clean images: its cross-entropy and logit margins.

    A penalty on the input gradient (LFR's ‖∇ₓ CE‖₁) can be lowered two ways:
    by making the loss saturate over the whole ε-ball (p_y → 1, as adversarial
    training does), or by shrinking the logits, which leaves the model
    unconfident and no more robust. The margin tells the two apart: it grows
    in the first case and shrinks in the second.

    Args:
        model: A Keras model or any callable returning logits.
        x: Test images.
        y: Their labels (integer or one-hot).

    Returns:
        A dict: `"clean_ce"`, the mean cross-entropy; `"margin_median"`, the
        median over images of z_y − max_{j≠y} z_j (negative where the image
        is misclassified); `"logit_std"`, the mean over images of the logits'
        standard deviation.

    Example:

    >>> keras_lfr.evaluation.confidence(cnn, x_test[:200], y_test[:200])
    {'clean_ce': 0.0195, 'margin_median': 10.87, 'logit_std': 5.23}  # the authors' LFR model
    """
    labels = ops.sparse_labels(y)
    logits = keras.ops.cast(_as_logits_fn(model)(x), "float32")
    return {
        "clean_ce": float(keras.ops.mean(ops.cross_entropy(labels, logits))),
        "margin_median": float(np.median(keras.ops.convert_to_numpy(ops.margin(logits, labels)))),
        "logit_std": float(keras.ops.mean(keras.ops.std(logits, axis=1))),
    }


@dataclasses.dataclass
class Check:
    """One sanity check: what was compared, the numbers, and whether it passed."""

    name: str
    """What the check compares, e.g. `"black-box not stronger than white-box"`."""
    passed: bool
    """Whether the model passed it."""
    detail: str
    """The accuracies compared, e.g. `"PGD-40: 97.2%, Square (1000 queries): 94.8%"`."""


def sanity_checks(
    model,
    x,
    y,
    *,
    epsilon=defaults.PAPER_EPSILON,
    step_size=defaults.PAPER_STEP_SIZE,
    steps=defaults.PAPER_STEPS,
    tolerance=0.02,
    queries=1000,
    verbose=True,
):
    """Checks for signs of gradient masking (Carlini et al., 2019).

    After "On Evaluating Adversarial Robustness" (Carlini et al., 2019):

    1. accuracy under PGD falls to about 0 (≤ 5%) at ε = the whole pixel
       range, where any image can be reached;
    2. doubling PGD's steps and using 2 restarts lowers accuracy by at most
       `tolerance` (else the attack had not converged);
    3. the black-box Square attack is not stronger than white-box PGD by more
       than `tolerance` (else gradients mislead the white-box attack);
    4. FGSM (one step) is not stronger than PGD by more than `tolerance`.

    A failed check is printed loudly: it is a likely sign of gradient masking,
    and robustness numbers from gradient attacks alone are then not to be
    trusted.

    Args:
        model: A Keras model or any callable returning logits.
        x: A few hundred test images.
        y: Their labels.
        epsilon: The evaluation radius. Defaults to `0.3`.
        step_size: PGD step. Defaults to `0.01`.
        steps: PGD steps. Defaults to `40`.
        tolerance: Allowed accuracy gap. Defaults to `0.02`.
        queries: Square attack queries. Defaults to `1000`.
        verbose: Print the report. Defaults to `True`.

    Returns:
        A list of `Check`.
    """
    labels = ops.sparse_labels(y)

    def accuracy(attack, **kwargs):
        return float(np.mean(correct_under(model, functools.partial(attack, **kwargs))(x, labels)))

    pgd = functools.partial(attacks.pgd, epsilon=epsilon, step_size=step_size)
    full = accuracy(attacks.pgd, epsilon=1.0, step_size=0.1, steps=steps)
    base = accuracy(pgd, steps=steps)
    longer = accuracy(pgd, steps=2 * steps, restarts=2)
    black_box = accuracy(attacks.square, epsilon=epsilon, queries=queries)
    one_step = accuracy(attacks.fgsm, epsilon=epsilon)
    results = [
        Check(
            "unbounded attack reaches ~0%",
            _at_most(full, 0.05),
            f"PGD at eps=1.0: {full:.1%} (expected <= 5%)",
        ),
        Check(
            "more steps and restarts add little",
            _at_most(base - longer, tolerance),
            f"PGD-{steps}: {base:.1%}, PGD-{2 * steps} x2 restarts: {longer:.1%}",
        ),
        Check(
            "black-box not stronger than white-box",
            _at_most(base - black_box, tolerance),
            f"PGD-{steps}: {base:.1%}, Square ({queries} queries): {black_box:.1%}",
        ),
        Check(
            "FGSM not stronger than PGD",
            _at_most(base - one_step, tolerance),
            f"PGD-{steps}: {base:.1%}, FGSM: {one_step:.1%}",
        ),
    ]
    if verbose:
        print(format_checks(results))
    return results


def _at_most(value, limit):
    """`value <= limit` for accuracy differences, free of float round-off.

    0.96 − 0.94 is 0.020000000000000018 in floating point: a gap of exactly
    the tolerance (2 of 100 images at 2%) must pass.
    """
    return value <= limit + 1e-9


def format_checks(checks):
    """A plain-text report of sanity checks; failures are marked loudly."""
    lines = []
    for check in checks:
        mark = "PASS" if check.passed else "FAIL"
        lines.append(f"[{mark}] {check.name}: {check.detail}")
    if not all(check.passed for check in checks):
        lines.append(
            "WARNING: at least one sanity check FAILED: this is a likely sign of gradient "
            "masking. Do not trust robustness measured by gradient-based attacks alone; "
            "report the worst case over white-box and black-box attacks."
        )
    return "\n".join(lines)


def markdown_table(results_by_model):
    """Formats `{model name: robust_accuracy results}` as a markdown table (in %)."""
    columns = []
    for results in results_by_model.values():
        # The accuracies: not the count, the timers or the per-example verdicts.
        columns.extend(
            k
            for k, v in results.items()
            if isinstance(v, numbers.Real) and k not in ("examples", *columns)
        )
    lines = [
        "| model | " + " | ".join(columns) + " | examples |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for name, results in results_by_model.items():
        cells = [f"{100 * results[c]:.2f}" if c in results else "" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {results.get('examples', '')} |")
    return "\n".join(lines)
