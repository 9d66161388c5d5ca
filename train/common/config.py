"""Command-line arguments from a dataclass: one field per flag, its ``help`` in the field metadata.

Every ``train`` and ``benchmarks`` command declares its flags this way, as CleanRL keeps a script's
arguments in a dataclass. It is plain argparse underneath (no extra dependency, standard
``--help``): declare fields with :func:`arg`, parse with :func:`parse_args`. Booleans become
``--flag/--no-flag`` switches, list defaults take several values (``--n-envs 64 256``).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any


def arg(default: Any, help: str, type: Any = None, choices: Sequence | None = None) -> Any:
    """A dataclass field that becomes ``--name``.

    ``type`` is needed when ``default`` is None, and for the items of a list default.
    """
    metadata = {"help": help, "type": type, "choices": choices}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Shows each flag's default (unless its help says it) and the description as written."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if "(default:" in text else super()._get_help_string(action)


def build_parser(cls, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of the dataclass ``cls``."""
    parser = argparse.ArgumentParser(description=description, formatter_class=DefaultsHelpFormatter)
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        meta = field.metadata
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


def parse_args(cls, description: str, argv: Sequence[str] | None = None):
    """Parse ``argv`` (default: the command line) into an instance of ``cls``."""
    return cls(**vars(build_parser(cls, description).parse_args(argv)))
