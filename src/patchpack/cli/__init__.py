"""``patchpack VERB``: a thin edge. Each verb parses its arguments, loads params once and calls the core.

Exit codes: 0 success, 1 verification failed, 2 bad input or configuration. Errors print as one line.
Ctrl-C prints one line and exits 130 (an extract names its output folder, which it leaves as it was);
a reader of standard output that goes away (``patchpack info | head -1``) ends the command quietly
with 141, as SIGPIPE ends other commands.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Callable, Sequence

from patchpack.cli._common import DEFAULT_DATA, _stdout_closed, interrupted, one_line
from patchpack.cli.dataset import (
    _add_dataset_verbs,
    cmd_card,
    cmd_extract,
    cmd_index,
    cmd_info,
    cmd_preview,
    cmd_sources,
    cmd_verify,
)
from patchpack.cli.sharing import (
    DEFAULT_REMOTE,
    _add_sharing_verbs,
    cmd_import,
    cmd_pull,
    cmd_remote_check,
    cmd_remote_local,
    cmd_remote_s3,
)
from patchpack.cli.training import _add_training_verbs, cmd_compare, cmd_evaluate, cmd_train
from patchpack.engine.output import ignore_file_size_signal
from patchpack.errors import PatchpackError

__all__ = [
    "DEFAULT_DATA",
    "DEFAULT_REMOTE",
    "build_parser",
    "cmd_card",
    "cmd_compare",
    "cmd_evaluate",
    "cmd_extract",
    "cmd_import",
    "cmd_index",
    "cmd_info",
    "cmd_preview",
    "cmd_pull",
    "cmd_remote_check",
    "cmd_remote_local",
    "cmd_remote_s3",
    "cmd_sources",
    "cmd_train",
    "cmd_verify",
    "interrupted",
    "main",
    "one_line",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="patchpack",
        description="Reproducible image-patch datasets in HDF5 shards, shared with DVC.",
    )
    verbs = parser.add_subparsers(dest="verb", required=True, metavar="VERB")

    def verb(
        name: str, func: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        sub = verbs.add_parser(name, help=text, description=text)
        sub.set_defaults(func=func)
        return sub

    _add_dataset_verbs(verb)

    _add_sharing_verbs(verb)

    _add_training_verbs(verb)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; returns its exit code (0, 1, 2; 130 after Ctrl-C; 141 when the reader of
    standard output went away, as for a command killed by SIGPIPE)."""
    try:
        return _main(argv)
    finally:
        if argv is None:  # the command line's own run: the process ends next
            # its objects need no last garbage collection at exit (0.06 s after an extract)
            gc.freeze()


def _main(argv: Sequence[str] | None) -> int:
    try:
        try:
            code = _run(argv)
        except SystemExit:  # argparse's --help and usage
            sys.stdout.flush()
            raise
        sys.stdout.flush()  # here, not at exit: a closed pipe fails where it can be handled
        return code
    except BrokenPipeError:
        if not _stdout_closed():
            raise
        # as Python's documentation advises: the rest of the output goes nowhere, and Python's
        # own flush at exit finds nothing to complain about
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 128 + 13  # SIGPIPE, what `set -o pipefail` sees of any command cut off by `head`


def _run(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    ignore_file_size_signal()
    try:
        code: int = args.func(args)
    except PatchpackError as exc:
        print(f"patchpack {args.verb}: error: {one_line(str(exc))}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print(f"patchpack {args.verb}: {interrupted(args)}", file=sys.stderr)
        return 130
    return code
