"""Command-line arguments from a dataclass: one field per flag, its ``help`` in the field metadata.

CleanRL keeps a script's arguments in a dataclass; this turns such a dataclass into an argparse
parser without another dependency. Declare fields with :func:`arg`.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any


def arg(default: Any, help: str, type: Any = None, choices: Sequence | None = None) -> Any:
    """A dataclass field that becomes ``--name`` (``type`` is needed when ``default`` is None)."""
    return dataclasses.field(default=default, metadata={"help": help, "type": type, "choices": choices})


class DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Shows each flag's default, unless its help already says what the default is."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        return text if "(default:" in text else super()._get_help_string(action)


def build_parser(cls, description: str) -> argparse.ArgumentParser:
    """An argparse parser with one flag per field of the dataclass ``cls`` (booleans are switches)."""
    parser = argparse.ArgumentParser(description=description, formatter_class=DefaultsHelpFormatter)
    for field in dataclasses.fields(cls):
        flag = "--" + field.name.replace("_", "-")
        meta = field.metadata
        if isinstance(field.default, bool):
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, default=field.default, help=meta["help"])
            continue
        kind = meta.get("type") or type(field.default)
        parser.add_argument(flag, type=kind, default=field.default, choices=meta.get("choices"), help=meta["help"])
    return parser


def parse_args(cls, description: str, argv: Sequence[str] | None = None):
    """Parse ``argv`` (default: the command line) into an instance of ``cls``."""
    return cls(**vars(build_parser(cls, description).parse_args(argv)))
