"""The docs' tables: generated from the zoo's records and results/ JSON, and in sync."""

import glob
import json
import pathlib
import re

import pytest

from keras_lfr import zoo
from trainers.studies import tables

REPO = pathlib.Path(__file__).resolve().parents[2]
# Where prose must not type a figure by hand.
DOCS = sorted(glob.glob("docs/**/*.md", root_dir=REPO, recursive=True))
PROSE = ["README.md", "CHANGELOG.md", *DOCS]


def test_every_generated_table_is_up_to_date():
    """Regenerates every table of README.md and docs/ and compares."""
    assert tables.stale() == [], (
        "run `python -m trainers.studies.tables` to regenerate these tables"
    )


def test_every_table_of_the_results_json_is_shown_in_the_docs():
    markers = set()
    for path in tables.documents():
        markers |= {block.marker for block in tables.blocks((REPO / path).read_text(), path)}
    for path in sorted((REPO / "results").glob("*.json")):
        for key in json.loads(path.read_text()).get("tables", {}):
            assert f"table:{path.stem}/{key}" in markers, f"{path.name}: table {key!r} is not shown"
    for name in tables.BLOCKS:
        assert f"table:{name}" in markers, name


def _outside_tables(text):
    """The text of a markdown file with its generated tables cut out."""
    for block in tables.blocks(text):
        text = text.replace(block.begin + block.text + block.end, "")
    return text


@pytest.mark.parametrize("path", PROSE)
def test_no_zoo_figure_is_typed_by_hand(path):
    """Every zoo entry's clean and robust accuracy appears only inside generated tables."""
    prose = _outside_tables((REPO / path).read_text())
    for name in zoo.available():
        evaluation = zoo.info(name)["evaluation"]
        for value in (evaluation["clean"], evaluation["robust"]):
            for figure in {f"{100 * value:.2f}", f"{100 * value:.1f}%"}:
                found = re.search(rf"(?<![\d.]){re.escape(figure)}(?!\d)", prose)
                assert not found, f"{path}: {figure} ({name}) is typed by hand; generate it"


def test_update_rewrites_a_stale_table_and_keeps_the_rest():
    name = "fast_recipe/lfr_training_logs"
    block = f"<!-- table:{name}:begin -->\n| stale |\n<!-- table:{name}:end -->"
    text = f"# Page\n\nprose\n\n{block}\n\nend\n"
    [block] = tables.blocks(text)
    assert (block.marker, block.text) == (f"table:{name}", "| stale |\n")
    updated = tables.update(text)
    assert updated.startswith("# Page\n\nprose\n\n") and updated.endswith("-->\n\nend\n")
    assert tables.json_table(name) in updated and "| stale |" not in updated
    assert tables.update(updated) == updated


def test_a_bad_marker_says_what_is_expected():
    with pytest.raises(ValueError, match="Expected `table:NAME`"):
        tables.generate("table:no-such-table")
    with pytest.raises(ValueError, match="has no end line"):
        tables.blocks("<!-- table:seeds:begin -->\nno end\n")


def test_cells_format_numbers_by_their_column_and_mark_missing_values():
    assert tables.cell(None) == "–"
    assert tables.cell("37 min*", ".1f") == "37 min*"
    assert tables.cell(92.3, ".1f") == "92.3" and tables.cell(0.0001, "g") == "0.0001"
    assert tables.cell(16483) == "16,483" and tables.cell(2.0) == "2"
    assert tables.markdown(["a", "b"], [["1", "2"]]) == "| a | b |\n|---|---|\n| 1 | 2 |"


def test_an_empty_table_renders_a_placeholder_row(tmp_path, monkeypatch):
    spec = {"tables": {"candidates": {"columns": ["command", "robust"], "rows": []}}}
    (tmp_path / "recipe.json").write_text(json.dumps(spec))
    monkeypatch.setattr(tables, "RESULTS", str(tmp_path))
    rendered = tables.json_table("recipe/candidates").splitlines()
    assert rendered == ["| command | robust |", "|---|---|", "| *none yet* | – |"]


@pytest.mark.parametrize("path", PROSE)
def test_no_table_of_percentages_is_typed_by_hand(path):
    """A table row outside the generated tables holds no measured percentage."""
    rows = [
        line
        for line in _outside_tables((REPO / path).read_text()).splitlines()
        if line.startswith("|") and re.search(r"\d\.\d+ ?%", line)
    ]
    assert rows == [], f"{path}: generate these rows from results/ JSON"
