"""TensorFlow's C++ start-up log, kept to the level `TF_CPP_MIN_LOG_LEVEL` asks for.

TensorFlow honours `TF_CPP_MIN_LOG_LEVEL` for most of its C++ log, but not
for the lines it writes while it is imported (before absl's log is
initialised: oneDNN, CUDA drivers). `import_tensorflow` imports it with
those lines filtered to the same level. keras_lfr's command-line programs
(the `keras-lfr-*` console scripts and `python -m trainers.*`) default the
level to 3, so that a command prints only its own output; a level the user
set is kept as it is. Standard library only: it runs before TensorFlow is
imported.
"""

import importlib.util
import os
import re
import sys
import tempfile

ENV = "TF_CPP_MIN_LOG_LEVEL"
# The level of keras_lfr's programs when the user set none: fatal errors only.
PROGRAM_LEVEL = "3"
# An absl log record: severity, date, time, thread, file:line]. Before absl's
# log is initialised the time reads e.g. 00:00:1796644498.590314.
RECORD = re.compile(r"^([IWEF])\d{4} [\d:.]+\s+\d+ \S+:\d+\] ")
SEVERITY = {"I": 0, "W": 1, "E": 2, "F": 3}
# absl's notice before its first record; shown only when INFO is.
PREAMBLE = "WARNING: All log messages before absl::InitializeLog() is called are written to"
# A warning from Python's `warnings` module: `path:line: SomeWarning: message`.
PYTHON_WARNING = re.compile(r"^\S.*:\d+: \w*Warning: ")


def level(value):
    """The minimum severity a `TF_CPP_MIN_LOG_LEVEL` value keeps (0 for an unset or odd value)."""
    value = (value or "").strip()
    return min(int(value), 3) if value.isdigit() else 0


def filter_log(text, minimum):
    """The lines of `text` that a log at level `minimum` keeps.

    A record's continuation lines go with it; a Python warning, and any
    line before the first record, is kept.
    """
    kept, keep = [], True
    for line in text.splitlines(keepends=True):
        record = RECORD.match(line)
        if record:
            keep = SEVERITY[record.group(1)] >= minimum
        elif line.startswith(PREAMBLE):
            keep = minimum == 0
        elif PYTHON_WARNING.match(line):
            keep = True
        if keep:
            kept.append(line)
    return "".join(kept)


def running_a_program():
    """Whether this process is one of keras_lfr's command-line programs."""
    program = (getattr(sys, "argv", None) or [""])[0] or ""
    if os.path.basename(program).startswith("keras-lfr-"):
        return True
    argv = list(getattr(sys, "orig_argv", ()))
    if "-m" in argv[:-1]:
        module = argv[argv.index("-m") + 1]
        return module.split(".")[0] == "trainers" or module.startswith("keras_lfr.trainers")
    return False


def import_tensorflow(default_level=None):
    """Imports TensorFlow, if installed and not yet imported, with its start-up log filtered.

    Args:
        default_level: The `TF_CPP_MIN_LOG_LEVEL` to set when the environment
            has none, e.g. `"3"`; `None` leaves it unset. Defaults to `None`.
    """
    if default_level is not None:
        os.environ.setdefault(ENV, default_level)
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    minimum = level(os.environ.get(ENV))
    try:
        sys.stderr.flush()
        saved = os.dup(2) if minimum else None
    except (AttributeError, OSError, ValueError):  # no usable standard error: nothing to filter
        saved = None
    if saved is None:
        import tensorflow  # noqa: F401

        return
    # File descriptor 2 goes to a temporary file during the import (TensorFlow's
    # C++ code writes there directly), and what the level keeps is written back.
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401, F811
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            sys.stderr.write(filter_log(captured.read().decode("utf-8", "replace"), minimum))
            sys.stderr.flush()
