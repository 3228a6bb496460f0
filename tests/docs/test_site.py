"""The docs site's build helpers: doctest examples that render, and the API reference's check."""

import pathlib
import sys

import pytest

DOCS = pathlib.Path(__file__).resolve().parents[2] / "docs"
sys.path.insert(0, str(DOCS))
griffe_extensions = pytest.importorskip("griffe_extensions", reason="needs the `docs` extra")
hooks = pytest.importorskip("hooks", reason="needs the `docs` extra")


def test_a_keras_style_example_becomes_an_examples_section():
    docstring = "Does a thing.\n\nArgs:\n    x: A value.\n\nExample:\n\n>>> f(1)\n2\n"
    converted = griffe_extensions.convert(docstring)
    assert "Examples:\n    >>> f(1)\n    2" in converted
    assert converted.startswith("Does a thing.\n\nArgs:\n    x: A value.")


def test_a_doctest_outside_a_section_is_fenced():
    converted = griffe_extensions.convert('Loads.\n\n>>> info("a")["b"]\n1\n\nMore.')
    assert converted == 'Loads.\n\n```pycon\n>>> info("a")["b"]\n1\n```\n\nMore.'
    assert griffe_extensions.convert("No examples.") == "No examples."


def test_the_public_names_are_all_or_what_the_module_defines():
    import keras_lfr
    import keras_lfr.attacks

    assert hooks.public_names("keras_lfr") == sorted(keras_lfr.__all__)
    assert hooks.public_names("keras_lfr.attacks") == sorted(keras_lfr.attacks.__all__)
    names = hooks.public_names("keras_lfr.evaluation")
    assert {"robust_accuracy", "protocol", "Check"} <= set(names)
    assert not {"keras", "np", "defaults"} & set(names)  # imported, not defined there
