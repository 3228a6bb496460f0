"""`benchmarks/mixed_precision.py`'s bookkeeping: the chunks it joins, its acceptance, its seeds."""

import json

from benchmarks import mixed_precision


def write_chunk(folder, start, stop, verdicts, **extra):
    counts = {name: verdicts.count("1") for name in ("clean", "apgd_ce", "apgd_t", "fab_t")}
    chunk = {
        **counts,
        "square": verdicts.count("1"),
        "worst_case": verdicts.count("1"),
        "examples": stop - start,
        "per_example": verdicts,
        "cpu_seconds": {"clean": 1.0, "apgd_ce": 2.0},
        **extra,
    }
    (folder / f"chunk-{start:06d}-{stop:06d}.json").write_text(json.dumps(chunk))


def test_float32_chunks_are_joined_only_when_they_tile_the_images(tmp_path):
    write_chunk(tmp_path, 0, 4, "1101")
    write_chunk(tmp_path, 4, 8, "0111")
    joined = mixed_precision.join_chunks(str(tmp_path), 8)
    assert joined["per_example"] == "11010111"
    assert joined["worst_case"] == 6 / 8
    assert joined["cpu_seconds"] == {"clean": 2.0, "apgd_ce": 4.0}
    assert mixed_precision.join_chunks(str(tmp_path), 4)["per_example"] == "1101"
    assert mixed_precision.join_chunks(str(tmp_path), 6) is None  # no chunk ends at 6
    assert mixed_precision.join_chunks(str(tmp_path), 12) is None
    write_chunk(tmp_path, 0, 4, "1111", precision="mixed")  # not float32's verdicts
    assert mixed_precision.join_chunks(str(tmp_path), 8) is None


def test_acceptance_allows_one_image_per_thousand_and_no_excess_overall():
    def row(model, only_mixed, only_float32, examples=1000):
        return {
            "model": model,
            "examples": examples,
            "robust_only_mixed": only_mixed,
            "robust_only_float32": only_float32,
        }

    assert mixed_precision.acceptance([row("a", 1, 1), row("b", 0, 2)])["passed"]
    over_all = mixed_precision.acceptance([row("a", 1, 0), row("b", 1, 1)])
    assert not over_all["passed"] and over_all["excess_over_all_models"] == 1
    one_model = mixed_precision.acceptance([row("a", 2, 0), row("b", 0, 5)])
    assert not one_model["passed"] and "on a." in one_model["summary"]
    assert mixed_precision.acceptance([row("a", 2, 3, examples=10000)])["passed"]


def test_reseeded_changes_only_the_seeds_of_the_attacks_that_take_one():
    from keras_lfr import evaluation

    protocol = evaluation.protocol("autoattack")
    assert mixed_precision.reseeded(protocol, 0) is protocol
    reseeded = mixed_precision.reseeded(protocol, 3)
    assert reseeded["fab_t"] is protocol["fab_t"]  # FAB-T has no random start
    for name in ("apgd_ce", "apgd_t", "square"):
        assert reseeded[name].keywords == {**protocol[name].keywords, "seed": 3}
