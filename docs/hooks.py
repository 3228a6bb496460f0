"""MkDocs hook: warns for each public name of keras_lfr that the API reference does not show.

`mkdocs build --strict` turns the warnings into a failed build, so a name
added to one of `MODULES` without a place in docs/api/ fails CI. A public
name is one `__all__` lists or, without `__all__`, one the module defines
whose name does not start with `_` (griffe's rule, which mkdocstrings
renders by). It counts as shown when a rendered page has an anchor
`module.name` (mkdocstrings gives every object one).
"""

import logging
import os
import re

import griffe

MODULES = (
    "keras_lfr",
    "keras_lfr.attacks",
    "keras_lfr.methods",
    "keras_lfr.evaluation",
    "keras_lfr.zoo",
    "keras_lfr.callbacks",
    "keras_lfr.models",
    "keras_lfr.data",
    "keras_lfr.defaults",
    "keras_lfr.surfaces",
    "keras_lfr.distributed",
)

log = logging.getLogger("mkdocs.hooks.api_reference")
_ANCHOR = re.compile(r'\bid="([^"]+)"')
_anchors = set()


def public_names(path, package=None):
    """The public names of the module at dotted `path`, by griffe's static analysis."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package = package or griffe.load("keras_lfr", search_paths=[root], resolve_aliases=False)
    module = package if path == "keras_lfr" else package[path.removeprefix("keras_lfr.")]
    exported = module.exports
    if exported is not None:
        return sorted(str(name) for name in exported)
    return sorted(name for name, member in module.members.items() if member.is_public)


def on_pre_build(config):
    _anchors.clear()


def on_page_content(html, page, config, files):
    _anchors.update(_ANCHOR.findall(html))
    return html


def on_post_build(config):
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    package = griffe.load("keras_lfr", search_paths=[root], resolve_aliases=False)
    for module in MODULES:
        for name in public_names(module, package):
            # A function that shadows its own module (`attacks.pgd` in `attacks/pgd.py`)
            # is documented under the module's path.
            shown = {f"{module}.{name}", f"{module}.{name}.{name}"}
            if not shown & _anchors:
                log.warning(f"API reference: `{module}.{name}` is public but not documented.")
