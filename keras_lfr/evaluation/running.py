"""Running attacks: robust accuracy in memory and in resumable chunks, their cache and precision."""

import functools
import hashlib
import json
import os
import time

import keras
import numpy as np

from keras_lfr import _validation, attacks, backend, checks, ops
from keras_lfr._version import __version__
from keras_lfr.evaluation.comparison import flags_to_string


def _as_logits_fn(model):
    """A function `(x) -> logits` in inference mode, compiled once."""
    return backend.batch_function(lambda x: model(x, training=False), _variables(model))


# What an evaluation's attacks may search in (each attack's: `search_precision`);
# their verdicts are always float32's.
PRECISIONS = ("float32", "mixed")

# Score-based searches: they keep a candidate only if its score beats the best so
# far (Square's acceptance test). Late in the search the gains are smaller than the
# rounding of bfloat16 logits, so under mixed precision they run in float32.
# (`protocols.BLACK_BOX_ATTACKS` names the protocols' attacks of this kind.)
_SCORE_SEARCHES = (attacks.square,)


def search_precision(attack, precision):
    """The precision in which `attack` searches during an evaluation in `precision`.

    Under `"mixed"`, Square (`attacks.square`, or a `functools.partial` of
    it) searches in float32 and every other attack on a bfloat16 copy of the
    model. Square keeps a candidate only if its margin is lower than the
    best so far, and on a bfloat16 copy it misses examples that float32
    finds: the small gains of its late, small squares are below bfloat16's
    rounding. Any other callable, a wrapper around Square included, counts
    as a gradient-based search.

    Args:
        attack: `fn(model, x, labels) -> x_adv`.
        precision: The evaluation's precision, one of `PRECISIONS`.

    Returns:
        `"float32"` or `"bfloat16"`.

    Raises:
        ValueError: If `precision` is not one of `PRECISIONS`.

    Example:

    >>> chosen = keras_lfr.evaluation.protocol("autoattack")
    >>> {name: keras_lfr.evaluation.search_precision(a, "mixed") for name, a in chosen.items()}
    {'apgd_ce': 'bfloat16', 'apgd_t': 'bfloat16', 'fab_t': 'bfloat16', 'square': 'float32'}
    """
    _validation.one_of("precision", precision, PRECISIONS)
    while isinstance(attack, functools.partial):
        attack = attack.func
    if precision == "float32" or attack in _SCORE_SEARCHES:
        return "float32"
    return "bfloat16"


def search_plan(attacks_by_name, precision):
    """Where each attack of an evaluation in `precision` searches: `search_precision` of each.

    A chunk of a mixed-precision evaluation records it, and a cache folder
    of one should be named by it (`cache_key`).

    Args:
        attacks_by_name: Dict of name -> `fn(model, x, labels) -> x_adv`.
        precision: The evaluation's precision, one of `PRECISIONS`.

    Returns:
        A dict of name -> `"float32"` or `"bfloat16"`, in the attacks' order.

    Raises:
        ValueError: If `precision` is not one of `PRECISIONS`.

    Example:

    >>> keras_lfr.evaluation.search_plan(keras_lfr.evaluation.protocol("strong"), "mixed")
    {'apgd_ce': 'bfloat16', 'apgd_t': 'bfloat16', 'square': 'float32'}
    """
    return {name: search_precision(a, precision) for name, a in attacks_by_name.items()}


def correct_under(model, attack, precision="float32"):
    """The compiled accuracy-under-attack step of every evaluation loop.

    With `precision="mixed"`, a gradient-based attack searches on a bfloat16
    copy of the model (`keras_lfr.models.bfloat16_copy`, its logits cast to
    float32; forward passes and input gradients in bfloat16), and the point
    it returns is judged on `model` itself, in float32: an example counts as
    broken only if `model` misclassifies the attack's point. A rounding
    error of the search can therefore cost a found example (the attack keeps
    a point that bfloat16 misclassifies and float32 does not), never add one.
    Score-based searches stay in float32 (`search_precision`). The copy's
    weights are copied from `model`'s at every call, so a model that trains
    between calls (`callbacks.AttackEvaluation`) is searched as it is now.

    Args:
        model: A Keras model or any callable returning logits (for
            `"mixed"` with a gradient-based attack: a functional or
            Sequential Keras model, or a `keras_lfr.RobustModel` wrapping
            one).
        attack: `fn(model, x, labels) -> x_adv`.
        precision: `"float32"` or `"mixed"` (gradient searches in bfloat16,
            verdicts in float32). Defaults to `"float32"`.

    Returns:
        A function `(x, labels) -> bool per example`: is the model's
        prediction on `attack(model, x, labels)` the label? It is traced once
        for any batch size (a cascade shrinks the batch from attack to
        attack), not once per size.

    Raises:
        ValueError: If `precision` is not one of `PRECISIONS`, or the
            attack searches in bfloat16 and `model` cannot be copied.

    Example:

    >>> correct = keras_lfr.evaluation.correct_under(
    ...     cnn, keras_lfr.evaluation.protocol("autoattack")["apgd_ce"], precision="mixed")
    >>> robust = correct(x, labels)  # float32 verdicts of a bfloat16 search
    """
    return _correct_steps(model, {"attack": attack}, precision)["attack"]


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
    """`correct_under`, the attack searching on `searched` (`model` or its `_Bfloat16Search`)."""

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
        precision: `"float32"`, or `"mixed"`: the gradient-based attacks
            search on a bfloat16 copy of the model, faster where bfloat16 is
            (most CPUs and GPUs), score-based ones (Square) in float32
            (`search_precision`), and every point they return is judged on
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
    """`(logits_fn, _correct_steps(...))`: an evaluation loop's steps, compiled once, run often."""
    if not attacks_by_name:
        raise ValueError(
            "Invalid value for argument `attacks_by_name`. Received: "
            f"attacks_by_name={attacks_by_name!r}. Expected a non-empty dict."
        )
    return _as_logits_fn(model), _correct_steps(model, attacks_by_name, precision)


def _correct_steps(model, attacks_by_name, precision):
    """`{name: correct_under(model, attack, precision)}`; the bfloat16 searches share one copy."""
    plan = search_plan(attacks_by_name, precision)
    copy = _Bfloat16Search(model) if "bfloat16" in plan.values() else None
    return {
        name: _correct_under(model, attack, copy if plan[name] == "bfloat16" else model)
        for name, attack in attacks_by_name.items()
    }


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
    so, with the precision each attack searched in (`search_precision`),
    and is never read back by an evaluation in float32 or with another
    search, nor the other way round.

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
            evaluated in another precision or with another search.

    Example:

    >>> chosen = keras_lfr.evaluation.protocol("autoattack")
    >>> plan = keras_lfr.evaluation.search_plan(chosen, "mixed")
    >>> results = keras_lfr.evaluation.resumable_robust_accuracy(
    ...     model, load_chunk, chosen, 1000,
    ...     cache_dir="evaluations/mixed-" + keras_lfr.evaluation.cache_key(model, "mixed", plan),
    ...     precision="mixed")
    """
    n_examples = _validation.positive_int("n_examples", n_examples)
    chunk_size = _validation.positive_int("chunk_size", chunk_size)
    _validation.one_of("precision", precision, PRECISIONS)
    # The precision each attack searches in; a mixed chunk records it.
    plan = search_plan(attacks_by_name, precision)
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
            # Chunks written before precisions existed are float32's, and mixed
            # chunks written before `search` was recorded searched all in bfloat16.
            found = chunk.get("precision", "float32")
            default = dict.fromkeys(plan, "bfloat16" if found == "mixed" else "float32")
            searched = chunk.get("search", default)
            if found != precision or searched != plan:
                raise ValueError(
                    f"Invalid value for argument `cache_dir`. Received: cache_dir={cache_dir!r}, "
                    f"whose {_chunk_file(start, stop)} was evaluated with "
                    f"precision={found!r}, searching {searched}. Expected a folder of chunks "
                    f"evaluated with precision={precision!r}, searching {plan}: use one "
                    "folder per precision and search (`search_precision`)."
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
                chunk["precision"], chunk["search"] = precision, plan
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
    `trainers.studies.release` (with `.json` appended).

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


def _correct(logits, labels):
    predictions = keras.ops.cast(keras.ops.argmax(logits, axis=1), "int32")
    return keras.ops.convert_to_numpy(predictions == labels)
