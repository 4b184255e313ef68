"""`impetus serve | models | chat | bench | doctor | backup | restore` — each subcommand lives beside the code it drives."""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Any

# subcommand -> module exposing `add_parser(subparsers)`; the parser it adds sets `func(args) -> int`
SUBCOMMANDS = {
    "serve": "impetus.api.serve",
    "models": "impetus.models.cli",
    "bench": "impetus.bench.cli",
    "doctor": "impetus.doctor",
    "chat": "impetus.client.terminal",
    "backup": "impetus.backup",
    "restore": "impetus.backup",  # the same module adds both
}


def documented_parser(
    subparsers: Any, name: str, doc: str | None, help: str
) -> argparse.ArgumentParser:
    """A subcommand's parser whose --help shows `doc` (its module's docstring) as written, line
    breaks kept."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        name, help=help, description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    from impetus import __version__

    parser = argparse.ArgumentParser(prog="impetus", description=__doc__)
    parser.add_argument("--version", action="version", version=f"impetus {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    for module in dict.fromkeys(SUBCOMMANDS.values()):
        importlib.import_module(module).add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
