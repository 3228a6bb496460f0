"""One definition per trainer setting: a dataclass field, from which its flag is derived.

A trainer's configuration is a dataclass whose fields are made with `option`
(a default, a help string and, where needed, choices or a converter).
`define_flags` defines one absl flag per field, and `from_flags` builds the
dataclass from the parsed flags, so that no setting is written twice.
"""

import dataclasses
import sys

from absl import app, flags

# The arguments that ask a program for its help: its own flags, or every flag.
HELP = ("--help", "-help", "--helpshort", "-helpshort", "-h", "-?")
FULL_HELP = ("--helpfull", "-helpfull")


def option(default, help, *, choices=None, item=None, parse=None, flag_default=None):
    """A dataclass field that is also a command-line flag.

    Args:
        default: The field's default (a dict or list default is copied per
            instance).
        help: The flag's help string.
        choices: For a string field: the allowed values (an enum flag).
            Defaults to `None`.
        item: For a tuple field: the type of its items. Defaults to `None`.
        parse: For any other field: a function from the flag's value (a
            string, or a list for list flags) to the field's value; the flag
            is then a string flag, or a list flag if `flag_default` is a list.
            Defaults to `None`.
        flag_default: The flag's default when it differs in form from the
            field's (e.g. `"auto"` for a field whose values are `"auto"`,
            `True` and `False`). Defaults to `None`: the field's default.

    Returns:
        A `dataclasses.field`.
    """
    metadata = {"help": help, "choices": choices, "item": item, "parse": parse}
    metadata["flag_default"] = default if flag_default is None else flag_default
    if isinstance(default, (dict, list)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


# Where a program reads its dataset from: the same three settings, with the
# same help, in every configuration that loads data (`keras_lfr.data.load`'s
# `data_dir`, `data_npz` and `download`). Name -> (default, help).
DATA_OPTIONS = {
    "data_dir": (
        None,
        "tfds data directory (default: $TFDS_DATA_DIR, else ~/tensorflow_datasets).",
    ),
    "data_npz": (
        None,
        "An .npz of the dataset in keras.datasets' format (x_train, y_train, x_test, y_test) "
        "to read instead of tfds: no TensorFlow needed.",
    ),
    "download": (True, "Let tfds download the dataset if it is not prepared."),
}


def data_option(name):
    """The field of one of the data settings, `DATA_OPTIONS[name]`, for a configuration.

    Args:
        name: `"data_dir"`, `"data_npz"` or `"download"`.

    Returns:
        A `dataclasses.field` (`option`).
    """
    default, help_text = DATA_OPTIONS[name]
    return option(default, help_text)


def parse_hparams(pairs):
    """Parses `["name=value", ...]` into a dict, values as int, float, bool or string.

    Raises:
        ValueError: If an entry has no `=`.
    """
    parsed = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        if not sep or not name:
            raise ValueError(
                f"Invalid value for argument `hparams`. Received: {pair!r}. "
                "Expected entries like local_weight=0.1."
            )
        for convert in (int, float):
            try:
                parsed[name] = convert(text)
                break
            except ValueError:
                continue
        else:
            parsed[name] = {"true": True, "false": False}.get(text.lower(), text)
    return parsed


def one_line(error):
    """An error's own message, without the traceback TensorFlow puts before it.

    An error raised inside a `tf.function` reads "in user code: File ...",
    the trace, then `ValueError: <message>`; the programs print only the
    message, as they do for errors raised outside one.
    """
    text = str(error).strip()
    if not text.startswith("in user code:"):
        return text
    last = [line.strip() for line in text.splitlines() if line.strip()][-1]
    kind, sep, message = last.partition(": ")
    return message if sep and kind.endswith(("Error", "Exception")) else last


def run_program(main, module, argv=None):
    """Runs a program's `main` with `absl.app.run`, with the help of `module`.

    A console script's `__main__` is its launcher, not the module that
    defines the program's flags, so absl's `--help` would list none. Here the
    module's key flags become the program's: `--help` (also `-h`, `-?`,
    `--helpshort`) prints the module's docstring and its flags, `--helpfull`
    every flag, both on stdout and with exit status 0, as
    `python -m trainers.<name> --help` does.

    Args:
        main: The program's `main(argv)`.
        module: The module that defines the program and its flags (its
            `sys.modules[__name__]`).
        argv: The command line. Defaults to `None`: `sys.argv`.
    """
    argv = list(sys.argv if argv is None else argv)
    program = argv[0]
    for flag in flags.FLAGS.get_key_flags_for_module(module):
        flags.FLAGS.register_key_flag_for_module(program, flag)
    arguments = argv[1 : argv.index("--")] if "--" in argv else argv[1:]
    asked = [a for a in arguments if a in HELP or a in FULL_HELP]
    if asked:
        full = asked[0] in FULL_HELP
        text = (module.__doc__ or f"USAGE: {program} [flags]").strip("\n")
        listed = flags.FLAGS.get_help() if full else flags.FLAGS.module_help(program)
        if listed:
            text += f"\n\nflags:\n{listed}"
        if not full:
            text += "\n\nTry --helpfull to get a list of all flags."
        print(text)
        sys.exit(0)
    app.run(main, argv=argv)


def define_flags(config_class, flag_values=flags.FLAGS):
    """Defines an absl flag for every field of `config_class`."""
    for field in dataclasses.fields(config_class):
        meta = field.metadata
        name, default, help_text = field.name, meta["flag_default"], meta["help"]
        if meta["choices"] is not None:
            flags.DEFINE_enum(name, default, meta["choices"], help_text, flag_values=flag_values)
        elif isinstance(default, list) or field.type is tuple:
            listed = None if default is None else [str(v) for v in default]
            flags.DEFINE_list(name, listed, help_text, flag_values=flag_values)
        elif meta["parse"] is not None or field.type is str:
            flags.DEFINE_string(name, default, help_text, flag_values=flag_values)
        elif field.type is bool:
            flags.DEFINE_bool(name, default, help_text, flag_values=flag_values)
        elif field.type is int:
            flags.DEFINE_integer(name, default, help_text, flag_values=flag_values)
        elif field.type is float:
            flags.DEFINE_float(name, default, help_text, flag_values=flag_values)
        else:
            raise TypeError(f"Field {name!r} of type {field.type!r} needs `parse` or `choices`.")


def from_flags(config_class, flag_values=flags.FLAGS):
    """Builds a `config_class` from the parsed flags its `define_flags` defined."""
    values = {}
    for field in dataclasses.fields(config_class):
        value = flag_values[field.name].value
        if field.metadata["parse"] is not None:
            value = field.metadata["parse"](value)
        elif field.type is tuple and value is not None:
            item = field.metadata["item"] or str
            value = tuple(item(v) for v in value)
        values[field.name] = value
    return config_class(**values)
