"""A griffe extension: Keras-style doctest examples render as code in the API reference.

keras_lfr's docstrings follow Keras' format, where an `Example:` header is
followed by unindented `>>>` lines. The Google-style parser expects a
section's content indented under its header, and outside a section Markdown
reads `>>>` lines as prose. So, before parsing, this indents the lines under
an `Example:`/`Examples:` header (griffe then renders them as console
examples), and fences any other run of `>>>` lines as a `pycon` code block.
The docstrings themselves stay as `help()` shows them.
"""

import re

import griffe

_HEADER = re.compile(r"^(\s*)(Example|Examples):\s*$")
_SECTION = re.compile(
    r"^\s*(Args|Arguments|Returns|Raises|Yields|Note|Notes|Warning|Warnings|Attributes|"
    r"References|Example|Examples):\s*$"
)
_PROMPT = re.compile(r"^(\s*)>>> ")


def _indent_examples(lines):
    out, i = [], 0
    while i < len(lines):
        header = _HEADER.match(lines[i])
        out.append(lines[i] if not header else f"{header.group(1)}Examples:")
        i += 1
        if not header:
            continue
        base = header.group(1)
        while i < len(lines) and not lines[i].strip():  # the section starts on the next line
            i += 1
        while i < len(lines) and not _SECTION.match(lines[i]):
            line = lines[i]
            indented = line.startswith(base + "    ")
            out.append(line if (not line.strip() or indented) else "    " + line)
            i += 1
    return out


def _fence_doctests(lines):
    out, i = [], 0
    in_examples, in_fence = False, False
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("```"):
            in_fence = not in_fence
        if _SECTION.match(line):
            in_examples = bool(_HEADER.match(line))
        prompt = _PROMPT.match(line)
        if prompt and not in_examples and not in_fence:
            indent = prompt.group(1)
            block = []
            while i < len(lines) and lines[i].strip():
                block.append(lines[i])
                i += 1
            out += [f"{indent}```pycon", *block, f"{indent}```"]
            continue
        out.append(line)
        i += 1
    return out


def convert(text):
    """The docstring `text` with its doctest examples made renderable."""
    if ">>>" not in text:
        return text
    return "\n".join(_fence_doctests(_indent_examples(text.split("\n"))))


class DoctestExamples(griffe.Extension):
    """Rewrites each docstring's doctest examples as it is loaded."""

    def on_instance(self, *, obj, **kwargs):
        if obj.docstring is not None:
            obj.docstring.value = convert(obj.docstring.value)


class QuietFields(griffe.Extension):
    """Leaves out a class's undocumented instance attributes.

    Rendered alone, each would be an empty block. A dataclass keeps its
    fields: its signature is built from them.
    """

    def on_class_members(self, *, cls, **kwargs):
        if "dataclass" in cls.labels:
            return
        for name, member in list(cls.members.items()):
            if (
                member.is_attribute
                and member.docstring is None
                and "instance-attribute" in member.labels
            ):
                cls.del_member(name)
