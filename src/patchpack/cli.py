"""``patchpack VERB``: a thin edge. Each verb parses its arguments, loads params once and calls the core.

Exit codes: 0 success, 1 verification failed, 2 bad input or configuration. Errors print as one line.
Ctrl-C prints one line and exits 130 (an extract names its output folder, which it leaves as it was);
a reader of standard output that goes away (``patchpack info | head -1``) ends the command quietly
with 141, as SIGPIPE ends other commands.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from patchpack.engine.output import MANIFEST_NAME, ignore_file_size_signal
from patchpack.errors import ConfigError, IntegrityError, PatchpackError, SourceError
from patchpack.params import MODELS, SPLITS, Params, load_params

DEFAULT_DATA = Path("data/patches")
DEFAULT_REMOTE = "storage"  # the DVC remote name `patchpack remote` configures


def _params(args: argparse.Namespace) -> Params:
    return load_params(
        args.params,
        source_dir=getattr(args, "source", None),
        labels_dir=getattr(args, "labels", None),
    )


def cmd_sources(args: argparse.Namespace) -> int:
    from patchpack.dataset.sources import (
        check_demo_labels_folder,
        export_demo,
        export_demo_labels,
        export_demo_slide,
    )

    if args.slide:
        if args.labels:
            check_demo_labels_folder(Path(args.labels))
        path = export_demo_slide(Path(args.out), side=args.side)
        print(
            f"wrote the demo slide ({args.side}x{args.side}, pyramidal JPEG-tiled BigTIFF) to {path}"
        )
        if args.labels:
            for label_file in export_demo_labels(Path(args.labels), side=args.side):
                print(f"wrote {label_file}")
        return 0
    if args.labels:
        raise ConfigError("--labels goes with --slide: the demo labels describe the demo slide")
    written = export_demo(Path(args.out))
    print(f"wrote {len(written)} demo images to {args.out}")
    return 0


def cmd_extract(args: argparse.Namespace) -> int:
    from patchpack.dataset.extract import Engine, extract

    _log_progress()
    if args.cluster or args.scheduler:
        _require("cluster", "distributed")
        _quiet_dask()
    engine = Engine(
        workers=args.workers,
        cluster=args.cluster,
        scheduler=args.scheduler,
        gather=args.gather,
        accept_env=args.accept_env,
    )
    manifest = extract(_params(args), out=Path(args.out), engine=engine)
    print(
        f"wrote {len(manifest.shards)} shards, "
        f"{sum(s.patches for s in manifest.shards)} patches to {args.out} "
        f"(fingerprint {manifest.fingerprint[:16]})"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from patchpack.audit.verify import verify, verify_rebuild

    splits = tuple(args.split) if args.split else None
    if args.rebuild:
        if splits:
            raise ConfigError("--split checks pulled splits; --rebuild rebuilds the whole dataset")
        report = verify_rebuild(Path(args.data), _params(args), workers=args.workers)
    else:
        report = verify(Path(args.data), allow_container_diff=args.pixels_only, splits=splits)
    if not args.no_lock and splits:
        from patchpack.sharing.splits import committed_split_state

        problem, note = committed_split_state(Path(args.data), splits)
        (report.problems if problem else report.notes).append(problem or note)
    elif not args.no_lock:
        from patchpack.sharing.pull import committed_state

        problem, note = committed_state(Path(args.data))
        (report.problems if problem else report.notes).append(problem or note)
    print(report.render())
    return 0 if report.ok else 1


def cmd_info(args: argparse.Namespace) -> int:
    from patchpack.audit.info import info

    with _dataset_required():
        print(info(Path(args.data)))
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from patchpack.audit.preview import contact_sheet, slide_maps

    out = Path(args.out)
    with _dataset_required():
        path = contact_sheet(Path(args.data), out, per_cell=args.per_class)
        print(f"wrote {path}")
        source = args.source or _params(args).source.dir
        if "://" in source:
            print("slide maps skipped: the sources are at a URL; pass --source DIR, a local copy")
            return 0
        for line in slide_maps(Path(args.data), Path(source), out, limit=args.maps):
            print(line)
    return 0


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


def _training() -> tuple[str, ...]:
    """What training imports: Keras, its backend (KERAS_BACKEND, TensorFlow by default), DVCLive,
    Matplotlib and scikit-learn."""
    import os

    return (
        "keras",
        os.environ.get("KERAS_BACKEND") or "tensorflow",
        "dvclive",
        "matplotlib",
        "sklearn",
    )


def cmd_train(args: argparse.Namespace) -> int:
    _require("train", *_training())
    from patchpack.training.train import train_model

    params = _params(args)
    _log_progress()
    with _dataset_required():
        summary = train_model(
            params,
            args.model,
            data=Path(args.data),
            models_dir=Path(args.models),
            live_dir=Path(args.live) / args.model,
        )
    print(
        f"trained {args.model} on {summary['device']}: best epoch {summary['best_epoch']} of "
        f"{summary['epochs']}, val accuracy {summary['val_accuracy']:.4f}, "
        f"{summary['seconds_per_epoch']:.1f} s per epoch; wrote {summary['path']}"
    )
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    _require("train", *_training())
    from patchpack.training.evaluate import evaluate_model

    params = _params(args)
    out = Path(args.out) / args.model
    with _dataset_required():
        metrics = evaluate_model(
            params, args.model, data=Path(args.data), models_dir=Path(args.models), out_dir=out
        )
    print(
        f"{args.model} on {metrics['test_patches']} test patches: accuracy {metrics['accuracy']:.4f}, "
        f"macro F1 {metrics['macro_f1']:.4f}, loss {metrics['loss']:.4f}; wrote {out}"
    )
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    _require("train", *_training())
    from patchpack.training.compare import comparison_rows, markdown_table, plot_comparison

    rows = comparison_rows(args.models, eval_dir=Path(args.eval), live_dir=Path(args.live))
    plot_comparison(Path(args.out), rows)
    print(markdown_table(rows), end="")
    print(f"wrote {args.out}")
    return 0


def cmd_remote_s3(args: argparse.Namespace) -> int:
    from patchpack.sharing.remote import setup_s3

    report = setup_s3(
        ".",
        args.url,
        name=args.name,
        endpoint_url=args.endpoint_url,
        profile=args.profile,
        region=args.region,
        create_bucket=args.create_bucket,
        read_only=args.read_only,
        public=args.public,
    )
    print(report.render())
    print(f"configured DVC remote '{args.name}' -> {args.url} (default); commit .dvc/config")
    if args.public:
        import json

        from patchpack.sharing.policy import public_read_policy
        from patchpack.sharing.spec import parse_s3_url

        bucket, prefix = parse_s3_url(args.url)
        if report.anonymous is not None:
            state = "work" if report.anonymous.ok else "are refused"
            print(f"anonymous reads {state} now:")
            print(report.anonymous.render())
        print(
            "partners read it anonymously (allow_anonymous_login); attach this bucket policy for "
            "public read (aws s3api put-bucket-policy --bucket "
            f"{bucket} --policy file://policy.json):"
        )
        print(json.dumps(public_read_policy(bucket, prefix), indent=2))
    return 0


def cmd_remote_local(args: argparse.Namespace) -> int:
    from patchpack.sharing.remote import setup_local

    report = setup_local(".", args.dir, name=args.name)
    print(report.render())
    print(f"configured DVC remote '{args.name}' -> {report.spec.url} (default); commit .dvc/config")
    return 0


def cmd_remote_check(args: argparse.Namespace) -> int:
    from patchpack.sharing.remote import check

    report = check(".", args.name, read_only=args.read_only)
    print(report.render())
    report.raise_for_failure()
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    if args.split:
        if args.rebuild:
            raise ConfigError("--split pulls from the remote; --rebuild rebuilds the whole dataset")
        from patchpack.sharing.splits import pull_splits

        return 0 if pull_splits(Path(args.data), list(dict.fromkeys(args.split))) else 1
    from patchpack.sharing.pull import pull

    return 0 if pull(Path(args.data), root=Path("."), rebuild=args.rebuild) else 1


def _quiet_dask() -> None:
    """Dask logs a lost scheduler as tracebacks on stderr; patchpack reports it in one line."""
    import distributed  # noqa: F401  # configures its loggers on import: quiet them after

    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(logging.CRITICAL)


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

    sub = verb("sources", cmd_sources, "export the built-in demo photographs, one folder per class")
    sub.add_argument("--out", default="data/demo", help="folder to write (default: data/demo)")
    sub.add_argument(
        "--slide",
        action="store_true",
        help="write the demo slide instead: a pyramidal JPEG-tiled TIFF at OUT/demo/slide.tif",
    )
    sub.add_argument(
        "--side",
        type=_positive_int,
        default=20480,
        help="demo slide side in pixels (default 20480)",
    )
    sub.add_argument(
        "--labels",
        metavar="DIR",
        help="with --slide: also write its regions as DIR/demo/slide.geojson and slide.png",
    )

    sub = verb("extract", cmd_extract, "extract seeded patches into HDF5 shards and a manifest")
    _with_params(sub)
    sub.add_argument(
        "--source",
        help="image folder (one subfolder per class) or a URL such as s3://bucket/images "
        "(overrides source.dir)",
    )
    sub.add_argument("--labels", help="label files' folder (overrides labels.dir)")
    sub.add_argument(
        "--out", default=str(DEFAULT_DATA), help="dataset folder (default: data/patches)"
    )
    sub.add_argument("--workers", type=_positive_int, default=1, help="processes writing shards")
    sub.add_argument(
        "--cluster", metavar="local:N", help="a Dask LocalCluster of N worker processes"
    )
    sub.add_argument(
        "--scheduler", metavar="ADDRESS", help="a running Dask scheduler, e.g. tcp://host:8786"
    )
    sub.add_argument(
        "--gather",
        action="store_true",
        help="workers return shard bytes and this process writes them (no shared file system)",
    )
    sub.add_argument(
        "--accept-env",
        action="store_true",
        help="accept Dask workers whose environment envelope differs (pixels may be stored in other bytes)",
    )

    sub = verb(
        "verify", cmd_verify, "check every shard against the manifest and audit split leakage"
    )
    _with_params(sub)
    sub.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help="dataset folder")
    sub.add_argument(
        "--rebuild", action="store_true", help="regenerate into a temporary folder and compare"
    )
    sub.add_argument("--source", help="image folder for --rebuild (overrides source.dir)")
    sub.add_argument("--labels", help="label files' folder for --rebuild (overrides labels.dir)")
    sub.add_argument("--workers", type=_positive_int, default=1, help="processes for --rebuild")
    sub.add_argument(
        "--pixels-only",
        action="store_true",
        help="accept shards whose pixels match but whose file bytes differ (other HDF5/zstd build)",
    )
    sub.add_argument(
        "--no-lock",
        action="store_true",
        help="inside a DVC project, do not compare the folder with the md5 dvc.lock records",
    )
    sub.add_argument(
        "--split",
        action="append",
        choices=SPLITS,
        help="check only this split's shards (repeatable): after `patchpack pull --split`",
    )

    sub = verb(
        "info", cmd_info, "counts per split and class, bytes on disk, compression, fingerprint"
    )
    sub.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help="dataset folder")

    sub = verb(
        "preview", cmd_preview, "write a PNG contact sheet of sample patches per class and split"
    )
    sub.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help="dataset folder")
    sub.add_argument("--out", default="preview.png", help="PNG to write (default: preview.png)")
    sub.add_argument(
        "--per-class", type=_positive_int, default=8, help="patches per class and split"
    )
    _with_params(sub)
    sub.add_argument("--source", help="image folder for the slide maps (default: source.dir)")
    sub.add_argument(
        "--maps",
        type=int,
        default=4,
        help="slide maps to draw for sources with a tissue mask or pyramid (default 4; 0: none)",
    )

    _add_sharing_verbs(verb)

    _add_training_verbs(verb)
    return parser


def _with_params(sub: argparse.ArgumentParser) -> None:
    sub.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")


Verb = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def _add_training_verbs(verb: Verb) -> None:
    """``patchpack train``, ``evaluate`` and ``compare``; Keras loads only when one of them runs."""
    sub = verb("train", cmd_train, "train a model on the train split, keeping the best val epoch")
    _with_params(sub)
    sub.add_argument("--model", required=True, choices=MODELS, help="which model to train")
    sub.add_argument(
        "--data", default=str(DEFAULT_DATA), help="dataset folder (default: data/patches)"
    )
    sub.add_argument(
        "--models", default="models", help="folder for <model>.keras (default: models)"
    )
    sub.add_argument("--live", default="dvclive", help="DVCLive folder, one subfolder per model")

    sub = verb(
        "evaluate", cmd_evaluate, "score a trained model on the test split: metrics and plots"
    )
    _with_params(sub)
    sub.add_argument("--model", required=True, choices=MODELS, help="which model to evaluate")
    sub.add_argument(
        "--data", default=str(DEFAULT_DATA), help="dataset folder (default: data/patches)"
    )
    sub.add_argument(
        "--models", default="models", help="folder holding <model>.keras (default: models)"
    )
    sub.add_argument(
        "--out", default="eval", help="output folder, one subfolder per model (default: eval)"
    )

    sub = verb("compare", cmd_compare, "both models side by side: a speed/accuracy table and plot")
    sub.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    sub.add_argument("--eval", default="eval", help="the evaluate stage's folder (default: eval)")
    sub.add_argument("--live", default="dvclive", help="the train stage's DVCLive folder")
    sub.add_argument("--out", default="eval/comparison.png", help="plot to write")


def _add_sharing_verbs(verb: Verb) -> None:
    """``patchpack remote {s3,local,check}`` and ``patchpack pull``; boto3 and DVC load only when one runs."""
    remote = verb("remote", _remote_help, "set up and check the DVC remote that partners pull from")
    kinds = remote.add_subparsers(dest="remote_verb", required=True, metavar="KIND")

    sub = kinds.add_parser("s3", help="check an S3 bucket, then make it the default DVC remote")
    sub.set_defaults(func=cmd_remote_s3)
    sub.add_argument("url", help="s3://BUCKET/PREFIX")
    sub.add_argument(
        "--endpoint-url", help="S3-compatible server, e.g. http://127.0.0.1:9000 (committed)"
    )
    sub.add_argument(
        "--profile", help="AWS profile to use (kept in .dvc/config.local, not committed)"
    )
    sub.add_argument(
        "--region", help="the bucket's region (default: detected, else AWS_DEFAULT_REGION)"
    )
    sub.add_argument(
        "--create-bucket", action="store_true", help="create the bucket when it does not exist"
    )
    sub.add_argument(
        "--read-only", action="store_true", help="accept credentials that cannot write (pull only)"
    )
    sub.add_argument(
        "--public",
        action="store_true",
        help="partners pull anonymously, without AWS credentials; prints the bucket policy",
    )
    sub.add_argument(
        "--name", default=DEFAULT_REMOTE, help=f"DVC remote name (default: {DEFAULT_REMOTE})"
    )

    sub = kinds.add_parser("local", help="make a local or mounted directory the default DVC remote")
    sub.set_defaults(func=cmd_remote_local)
    sub.add_argument("dir", help="directory to store DVC objects in (created if missing)")
    sub.add_argument(
        "--name", default=DEFAULT_REMOTE, help=f"DVC remote name (default: {DEFAULT_REMOTE})"
    )

    sub = kinds.add_parser(
        "check", help="report what works on the remote (list, read, write) and how to fix the rest"
    )
    sub.set_defaults(func=cmd_remote_check)
    sub.add_argument("--name", help="DVC remote name (default: the default remote)")
    sub.add_argument(
        "--read-only", action="store_true", help="a denied write is not a failure (pull only)"
    )

    sub = verb(
        "pull",
        cmd_pull,
        "dvc pull the dataset and verify it; rebuild with dvc repro when the remote fails",
    )
    sub.add_argument(
        "--data", default="data/patches", help="dataset folder (default: data/patches)"
    )
    sub.add_argument(
        "--rebuild",
        action="store_true",
        help="when the remote fails, rebuild locally with dvc repro",
    )
    sub.add_argument(
        "--split",
        action="append",
        choices=SPLITS,
        help="fetch the manifest and this split's shards only, and verify them (repeatable)",
    )


def _remote_help(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires a KIND
    raise ConfigError("choose s3, local or check")


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run one verb; returns its exit code (0, 1, 2; 130 after Ctrl-C; 141 when the reader of
    standard output went away, as for a command killed by SIGPIPE)."""
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


if __name__ == "__main__":
    sys.exit(main())
