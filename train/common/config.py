"""Command-line arguments from a dataclass: one field per flag, its ``help`` in the field metadata.

Every ``train`` and ``benchmarks`` command declares its flags this way, as CleanRL keeps a script's
arguments in a dataclass. It is plain argparse underneath (no extra dependency, standard
``--help``): declare fields with :func:`arg`, parse with :func:`parse_args`. Booleans become
``--flag/--no-flag`` switches, list defaults take several values (``--n-envs 64 256``).

Every bad value ends the command the same way, before any work starts: one line
``error: argument --flag: what is wrong and what would be valid`` and exit status 2. Ranges are
declared with the flag (``at_least``, ``above``) and checked by :func:`parse_args`.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

BAD_INPUT = 2  # argparse's exit status, used for every bad input


def arg(
    default: Any,
    help: str,
    type: Any = None,
    choices: Sequence | None = None,
    at_least: float | None = None,
    above: float | None = None,
) -> Any:
    """A dataclass field that becomes ``--name``.

    ``type`` is needed when ``default`` is None, and for the items of a list default. A value (or
    each item of a list) must be ``>= at_least`` and ``> above`` when those are given.
    """
    metadata = {"help": help, "type": type, "choices": choices, "at_least": at_least, "above": above}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default (unless its help says it) and the description as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if "(default:" in text else super()._get_help_string(action)


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one ``error: ...`` line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        print(f"error: {message} (see --help)", file=sys.stderr)
        raise SystemExit(BAD_INPUT)


def flag_name(name: str) -> str:
    """``eval_split`` -> ``--eval-split``."""
    return "--" + name.replace("_", "-")


def build_parser(cls, description: str) -> OneLineParser:
    """An argparse parser with one flag per field of the dataclass ``cls``."""
    parser = OneLineParser(description=description, formatter_class=DefaultsHelpFormatter)
    for field in dataclasses.fields(cls):
        flag, meta = flag_name(field.name), field.metadata
        if field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
            kind = meta.get("type") or (type(default[0]) if default else str)
            parser.add_argument(
                flag, type=kind, nargs="*", default=default, choices=meta.get("choices"), help=meta["help"]
            )
        elif isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=meta["help"])
        else:
            kind = meta.get("type") or type(field.default)
            parser.add_argument(flag, type=kind, default=field.default, choices=meta.get("choices"), help=meta["help"])
    return parser


def range_error(cls, values: dict) -> str | None:
    """The first value outside its declared range, as an error message (None when all are fine)."""
    for field in dataclasses.fields(cls):
        at_least, above = field.metadata.get("at_least"), field.metadata.get("above")
        value = values.get(field.name)
        items = value if isinstance(value, list) else [value]
        for item in items:
            if item is None or isinstance(item, bool):
                continue
            if at_least is not None and item < at_least:
                return f"argument {flag_name(field.name)}: must be at least {at_least:g}, got {item}"
            if above is not None and item <= above:
                return f"argument {flag_name(field.name)}: must be greater than {above:g}, got {item}"
    return None


def parse_args(cls, description: str, argv: Sequence[str] | None = None):
    """Parse ``argv`` (default: the command line) into an instance of ``cls``; a bad value exits 2."""
    parser = build_parser(cls, description)
    values = vars(parser.parse_args(argv))
    problem = range_error(cls, values)
    if problem is not None:
        parser.error(problem)
    return cls(**values)
