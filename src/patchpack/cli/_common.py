"""What every verb shares: params loading, optional extras, progress logging, dataset errors, argument
types, and the one-line error and exit-code helpers :func:`patchpack.cli.main` uses."""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from patchpack.engine.output import MANIFEST_NAME
from patchpack.errors import ConfigError, IntegrityError, SourceError
from patchpack.params import Params, load_params

DEFAULT_DATA = Path("data/patches")


def _params(args: argparse.Namespace) -> Params:
    return load_params(
        args.params,
        source_dir=getattr(args, "source", None),
        labels_dir=getattr(args, "labels", None),
    )


def _require(extra: str, *modules: str) -> None:
    """Refuse in one line a verb whose optional dependencies (an extra) are not installed."""
    import importlib.util

    for name in modules:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):  # a broken or blocked package
            found = False
        if not found:
            raise ConfigError(
                f"{name} is not installed: this needs patchpack's {extra} extra, which the light "
                f"install leaves out; install it with pip install -e '.[{extra}]' -c constraints.txt "
                f"(or pip install 'patchpack[{extra}]')"
            )


def _log_progress() -> None:
    """Show patchpack's INFO messages (device, best epoch) on stderr."""

    logger = logging.getLogger("patchpack")
    if not logger.handlers:  # main() may run more than once in one process (tests)
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("patchpack: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


@contextlib.contextmanager
def _dataset_required() -> Iterator[None]:
    """For verbs that read a dataset, a missing or unreadable one is bad input (exit 2), not a failed check."""
    try:
        yield
    except IntegrityError as exc:
        raise SourceError(str(exc)) from exc


def _with_params(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")


Verb = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive integer, received {text!r}"
        ) from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, received {value}")
    return value


def one_line(text: str) -> str:
    """``text`` with control characters escaped (a file name may hold a newline): one line, always."""
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


def interrupted(args: argparse.Namespace) -> str:
    """The line for a Ctrl-C: an extract names the output folder and what it still holds."""
    if args.verb != "extract":
        return "interrupted; nothing incomplete was left at a final path"
    out = Path(args.out)
    if (out / MANIFEST_NAME).is_file():
        return f"interrupted; the previous dataset at {out} is intact"
    return f"interrupted; nothing was written at {out}"


def _stdout_closed() -> bool:
    """Whether the reader of standard output has gone (``patchpack info | head -1``), as opposed to
    a broken pipe elsewhere (a worker, a socket), which is a real error."""
    import select

    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced by something without a descriptor
        return False
    if not hasattr(select, "poll"):
        return True  # cannot tell (Windows): the usual cause
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
