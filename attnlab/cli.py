"""`attnlab` command line: one subcommand per module under ``attnlab.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func``; adding a command is one module plus one line in ``COMMAND_MODULES``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

COMMAND_MODULES = (
    "attnlab.commands.models",
    "attnlab.commands.data",
    "attnlab.commands.train",
    "attnlab.commands.ablate",
    "attnlab.commands.profile",
    "attnlab.commands.report",
    "attnlab.commands.demo",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnlab",
        description="Attention-module ablation studies on CNN backbones (SimAM, EMA, hybrid).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for path in COMMAND_MODULES:
        importlib.import_module(path).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted; finished work is saved and a rerun resumes from it", file=sys.stderr)
        return 130
    return int(result or 0)


if __name__ == "__main__":
    sys.exit(main())
