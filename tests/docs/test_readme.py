"""The README: short, with a short Python quickstart, and the same quickstart on the docs site."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[2]
README = (REPO / "README.md").read_text()


def quickstart(text):
    pattern = r"<!-- quickstart:begin -->\n```python\n(.*?)```\n<!-- quickstart:end -->"
    return re.search(pattern, text, re.S)


def test_the_readme_is_at_most_150_lines():
    assert len(README.splitlines()) <= 150


def test_the_python_quickstart_is_at_most_15_lines_and_states_its_time():
    found = quickstart(README)
    assert found, "the README's quickstart sits between <!-- quickstart:begin/end --> markers"
    code = found.group(1)
    assert len(code.strip().splitlines()) <= 15
    compile(code, "README quickstart", "exec")
    after = README[found.end() :].split("\n## ")[0]
    assert re.search(r"about \d+ minutes on 2 (idle )?CPU cores", after)


def test_getting_started_shows_the_same_quickstart():
    assert quickstart(README).group(1) in (REPO / "docs" / "getting-started.md").read_text()


def test_the_test_command_is_the_one_ci_runs():
    command = "python -m pytest -q -n 2 --dist=loadfile --no-loadscope-reorder"
    assert command in README and command in (REPO / ".ci" / "run").read_text()


def installed_extras(text):
    """The extras of each `pip install ... -e ".[...]"` in a text."""
    return [
        set(found.split(","))
        for found in re.findall(r'pip install [^\n]*-e "\.\[([\w,]+)\]"', text)
    ]


def test_the_readme_installs_tensorflow_as_ci_does():
    """Setting up installs the TensorFlow extra, and CI installs what the README's tests need."""
    setup, tests = installed_extras(README)[:2]
    (ci,) = installed_extras((REPO / ".ci" / "run").read_text())
    assert setup == {"tensorflow"}
    assert tests == {"tensorflow", "test"} and tests <= ci
