"""`attnlab` command line: one subcommand per module under ``attnlab.commands``.

Each command module exposes ``register(subparsers)``, which adds its parser and sets
``func``; adding a command is one module plus one line in ``COMMAND_MODULES``.

One error path for every command: an expected failure (``attnlab.errors.AttnlabError``,
or an output folder that is read-only or full) prints ``attnlab <command>: error: ...``
on one line and exits 2; ``--debug`` (or ``ATTNLAB_DEBUG=1``) adds the traceback.
Anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import traceback
from collections.abc import Sequence

from .errors import AttnlabError

COMMAND_MODULES = (
    "attnlab.commands.models",
    "attnlab.commands.data",
    "attnlab.commands.train",
    "attnlab.commands.ablate",
    "attnlab.commands.tune",
    "attnlab.commands.profile",
    "attnlab.commands.report",
    "attnlab.commands.export",
    "attnlab.commands.demo",
)
# OS errors that are the environment's, not a bug: the message names the path
EXPECTED_ERRNOS = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT, errno.ENOENT}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="attnlab",
        description="Attention-module ablation studies on CNN backbones (SimAM, EMA, hybrid).",
    )
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an expected error too (also ATTNLAB_DEBUG=1)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for path in COMMAND_MODULES:
        importlib.import_module(path).register(sub)
    return parser


def one_line(text: str) -> str:
    return " ".join(str(text).split())


def describe_os_error(err: OSError) -> str:
    where = f" {err.filename}" if err.filename else ""
    reason = err.strerror or str(err)
    fix = {errno.ENOSPC: "free some space or choose another output folder",
           errno.EDQUOT: "free some space or choose another output folder",
           errno.ENOENT: "check the path"}.get(err.errno, "choose a writable folder or fix its permissions")
    return f"cannot use{where}: {reason}; {fix}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = args.debug or os.environ.get("ATTNLAB_DEBUG", "") not in ("", "0")
    threads = os.environ.get("ATTNLAB_THREADS")  # set by --jobs N for its worker processes
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    try:
        result = args.func(args)
    except KeyboardInterrupt:
        print("\ninterrupted; finished work is saved and a rerun resumes from it", file=sys.stderr)
        return 130
    except AttnlabError as err:
        failure: BaseException = err
        message = one_line(str(err))
    except OSError as err:
        if err.errno not in EXPECTED_ERRNOS:
            raise
        failure, message = err, one_line(describe_os_error(err))
    else:
        return int(result or 0)
    if debug:
        traceback.print_exception(failure)
    print(f"attnlab {args.command}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
