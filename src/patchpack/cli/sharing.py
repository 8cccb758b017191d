"""``patchpack remote {s3,local,check}`` and ``patchpack pull``: boto3 and DVC load only when one runs."""

from __future__ import annotations

import argparse
from pathlib import Path

from patchpack.cli._common import Verb
from patchpack.errors import ConfigError
from patchpack.params import SPLITS

DEFAULT_REMOTE = "storage"  # the DVC remote name `patchpack remote` configures


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
    if args.rev or args.out:
        return _pull_rev(args)
    if args.split:
        if args.rebuild:
            raise ConfigError("--split pulls from the remote; --rebuild rebuilds the whole dataset")
        from patchpack.sharing.splits import pull_splits

        return 0 if pull_splits(Path(args.data), list(dict.fromkeys(args.split))) else 1
    from patchpack.sharing.pull import pull

    return 0 if pull(Path(args.data), root=Path("."), rebuild=args.rebuild) else 1


def _pull_rev(args: argparse.Namespace) -> int:
    if not args.rev:
        raise ConfigError(
            "--out goes with --rev: a named version is pulled into a folder of its own"
        )
    if args.rebuild:
        raise ConfigError(
            "--rev pulls a committed version from the remote; --rebuild rebuilds HEAD's"
        )
    from patchpack.sharing.versions import pull_rev

    splits = tuple(dict.fromkeys(args.split or ()))
    out = Path(args.out) if args.out else None
    return 0 if pull_rev(Path(args.data), args.rev, splits=splits, out=out) else 1


def cmd_import(args: argparse.Namespace) -> int:
    from patchpack.sharing.imports import import_dataset
    from patchpack.sharing.versions import split_names

    splits = split_names(args.split)
    out = Path(args.out) if args.out else None
    verified = import_dataset(args.repo, rev=args.rev, data=args.data, splits=splits, out=out)
    return 0 if verified else 1


def _add_import_verb(verb: Verb) -> None:
    """``patchpack import REPO``: a dataset from a data registry, with ``dvc import``, verified."""
    sub = verb(
        "import",
        cmd_import,
        "dvc import a dataset from another repository (a data registry) and verify it; "
        "again with another --rev to update it",
    )
    sub.add_argument("repo", help="the registry: a git folder or URL of a DVC project")
    sub.add_argument("--rev", help="tag, branch or commit (default: its default branch)")
    sub.add_argument(
        "--data",
        default="data/patches",
        help="the dataset folder in the registry (default: data/patches)",
    )
    sub.add_argument(
        "--split",
        action="append",
        metavar="NAME",
        help="import the manifest and this split only (repeatable)",
    )
    sub.add_argument(
        "--out", help="folder to import into (default: the dataset's folder name, as dvc import)"
    )


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
    sub.add_argument(
        "--rev",
        help="the dataset as committed at this git tag, branch or commit, into a folder of its own",
    )
    sub.add_argument(
        "--out",
        help="with --rev: the folder to fill (default: the dataset folder's name plus -REV)",
    )
    _add_import_verb(verb)


def _remote_help(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires a KIND
    raise ConfigError("choose s3, local or check")
