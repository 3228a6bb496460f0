"""The docs speak of the software and its measurements, not of how the project was worked on.

No tracker items ("issue 24", "#24"), working periods ("session"), pauses,
which machine was kept, or local paths stated as facts about our runs, in
README.md, docs/, CHANGELOG.md and the docstrings of keras_lfr and trainers.
"""

import ast
import glob
import pathlib
import re

import pytest

REPO = pathlib.Path(__file__).resolve().parents[2]
DOCS = sorted(glob.glob("docs/**/*.md", root_dir=REPO, recursive=True))
DOCUMENTS = ["README.md", "CHANGELOG.md", *DOCS]
SOURCES = sorted(
    glob.glob("keras_lfr/**/*.py", root_dir=REPO, recursive=True)
    + glob.glob("trainers/**/*.py", root_dir=REPO, recursive=True)
)
PROCESS_WORDS = {
    "a tracker item": r"\bissues? ?#?\d+|(?<![\w/.#-])#\d+\b",
    "a working period": r"\bsessions?\b",
    "a pause": r"\bpaus(e|es|ed|ing)\b|\bSIGSTOP\b",
    "which machine was kept": r"\bmachine\b[^.\n]{0,60}\bkept\b|\bkept\b[^.\n]{0,30}\bmachine\b",
    "a local path": r"(?<![\w.])/(work|root|home|Users)/",
}
# Temporary paths are fine in a usage example, not as a fact about a run.
TEMPORARY = r"(?<![\w.])/tmp/"


def offences(text, allow_examples=False):
    found = []
    for number, line in enumerate(text.splitlines(), 1):
        for what, pattern in PROCESS_WORDS.items():
            match = re.search(pattern, line, re.IGNORECASE)
            if match:
                found.append(f"line {number}: {what} ({match.group(0)!r})")
        example = allow_examples and re.search(r">>>|\.\.\. |python -m |keras-lfr-", line)
        if re.search(TEMPORARY, line) and not example:
            found.append(f"line {number}: a local path ('/tmp/')")
    return found


def docstrings(source):
    tree = ast.parse(source)
    nodes = [tree, *ast.walk(tree)]
    kinds = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return [ast.get_docstring(n) for n in nodes if isinstance(n, kinds) and ast.get_docstring(n)]


@pytest.mark.parametrize("path", DOCUMENTS)
def test_documents_speak_of_the_software(path):
    assert offences((REPO / path).read_text()) == [], path


def test_docstrings_speak_of_the_software():
    found = {}
    for path in SOURCES:
        for doc in docstrings((REPO / path).read_text()):
            if bad := offences(doc, allow_examples=True):
                found.setdefault(path, []).extend(bad)
    assert found == {}


@pytest.mark.parametrize(
    "text",
    [
        "Issue 24's target is met.",
        "as asked in #24",
        "over several sessions",
        "the first chunk was paused for two minutes",
        "a pause (SIGSTOP) changes nothing",
        "The machine of that run was not kept.",
        "measured on /work/main with TFDS_DATA_DIR=/work/shared",
        "the model in /tmp/prec/bfloat16 scored",
    ],
)
def test_each_process_word_is_caught(text):
    assert offences(text)


@pytest.mark.parametrize(
    "text",
    [
        "Keras fit does not work under it (keras-team/keras#20585).",
        "the results are kept in the entry's folder",
        "2 x86-64 cores with AVX-512, TensorFlow 2.21",
        "see [Results](RESULTS.md#seeds)",
    ],
)
def test_plain_statements_pass(text):
    assert offences(text) == []


def test_a_usage_example_may_name_a_temporary_path():
    assert offences('>>> keras_lfr.export(model, "/tmp/lfr_savedmodel")', allow_examples=True) == []
    assert offences("    python -m trainers.train --model_dir=/tmp/run", allow_examples=True) == []
