"""trainers.studies.release: provenance helpers, the docs' leaderboards (the release: test_zoo)."""

import subprocess

import pytest
from conftest import REPO

from keras_lfr import zoo
from trainers import config as config_lib
from trainers import record
from trainers.studies import leaderboard


@pytest.fixture
def repository(tmp_path):
    """A git repository whose commits hold keras_lfr 0.1.0, 0.2.0 and (in `_version.py`) 0.3.0."""

    def git(*args):
        return subprocess.run(
            ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()

    git("init", "-q")
    (tmp_path / "keras_lfr").mkdir()
    commits = []
    for version in ("0.1.0", "0.2.0"):
        source = f'"""Doc."""\n\n__version__ = "{version}"\n'
        (tmp_path / "keras_lfr" / "__init__.py").write_text(source)
        git("add", ".")
        git("commit", "-q", "-m", version)
        commits.append(git("rev-parse", "HEAD"))
    # Later versions keep it in a module of its own.
    (tmp_path / "keras_lfr" / "__init__.py").write_text('"""Doc."""\n')
    (tmp_path / "keras_lfr" / "_version.py").write_text('__version__ = "0.3.0"\n')
    git("add", ".")
    git("commit", "-q", "-m", "0.3.0")
    commits.append(git("rev-parse", "HEAD"))
    return tmp_path, commits


def test_version_at_reads_the_version_a_commit_held(repository):
    root, (first, second, third) = repository
    assert record.version_at(first, root=str(root)) == "0.1.0"
    assert record.version_at(second, root=str(root)) == "0.2.0"
    assert record.version_at(third, root=str(root)) == "0.3.0"
    assert record.version_at(first[:7], root=str(root)) == "0.1.0"


@pytest.mark.parametrize("revision", ["0" * 40, "no-such-branch"])
def test_version_at_an_unknown_revision_is_unknown(repository, revision):
    root, _ = repository
    assert record.version_at(revision, root=str(root)) == "unknown"


@pytest.mark.parametrize(
    "method, overrides, expected",
    [
        ("trades", {}, {"beta": 1.0, "random_start": "normal_unclipped"}),  # its defaults
        (
            "trades",
            {"beta": 6.0, "awp_gamma": 0.005, "awp_warmup": 5},
            {"beta": 6.0, "random_start": "normal_unclipped"},
        ),
        ("lfr", {}, {"lam": 0.02, "random_start": "normal", "penalty": "paper"}),
        ("pgd_at", {"epsilon_warmup_shape": "cosine"}, {"clean_weight": 0.0}),
    ],
    ids=["trades_default", "trades_awp", "lfr", "pgd_at"],
)
def test_the_record_holds_every_hyperparameter_of_the_objective(method, overrides, expected):
    config = config_lib.make("fast", method=method, **overrides)
    found = record.hyperparameters(config)
    assert found == {
        "epsilon": 0.3,
        "step_size": 0.1,
        "steps": 5,
        "clip_min": 0.0,
        "clip_max": 1.0,
        **expected,
        "awp_gamma": overrides.get("awp_gamma", 0.0),
        "awp_warmup": overrides.get("awp_warmup", 0),
        "epsilon_warmup_epochs": config.epsilon_warmup_epochs,
        "epsilon_warmup_shape": overrides.get("epsilon_warmup_shape", "linear"),
    }


@pytest.mark.parametrize("doc", ["ZOO.md", "RESULTS.md"])
def test_the_leaderboards_in_the_docs_are_the_shipped_records(doc):
    """`--leaderboard` regenerates them; a record changed without it fails here."""
    begin, end = leaderboard.MARKERS
    text = (REPO / "docs" / doc).read_text()
    block = text.partition(f"{begin}\n")[2].partition(end)[0]
    assert block == leaderboard.markdown([zoo.info(name) for name in zoo.available()])


@pytest.mark.parametrize("name", zoo.available())
def test_the_readme_rows_of_an_entry_are_its_record(name):
    """Every README table row naming the entry holds its clean, robust and sample."""
    evaluation = zoo.info(name)["evaluation"]
    examples = evaluation["examples"]
    sample = "all 10,000" if examples == 10000 else f"first {examples:,}"
    cells = [f"{100 * evaluation['clean']:.2f}%", f"**{100 * evaluation['robust']:.2f}%**", sample]
    rows = [
        line
        for line in (REPO / "README.md").read_text().splitlines()
        if line.startswith("|") and f"`{name}`" in line
    ]
    assert rows, f"the README's zoo table has no row for {name}"
    for row in rows:
        assert set(cells) <= {cell.strip() for cell in row.strip("|").split("|")}, row
