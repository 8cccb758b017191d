"""``patchpack sources``, ``extract``, ``verify``, ``info``, ``card``, ``index`` and ``preview``: the
verbs that make, check, describe and show a dataset; and ``plugin-path``, the HDF5 filter folder
that other HDF5 tools need to read zstd shards."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from patchpack.cli._common import (
    DEFAULT_DATA,
    Verb,
    _dataset_required,
    _log_progress,
    _params,
    _positive_int,
    _require,
    _with_params,
)
from patchpack.errors import ConfigError
from patchpack.params import SPLITS


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
    from patchpack.audit.rebuild import verify_rebuild
    from patchpack.audit.verify import verify

    if _reads_remote(args):
        return _remote_verb(args)
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

    if _reads_remote(args):
        return _remote_verb(args)
    with _dataset_required():
        print(info(Path(args.data)))
    if Path(args.data).is_dir():  # which committed version it holds, from its bytes
        from patchpack.sharing.version_info import folder_version

        print(f"version      {folder_version(Path(args.data))}")
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    from patchpack.audit.preview import contact_sheet, slide_maps

    out = Path(args.out)
    if _reads_remote(args):
        return _remote_verb(args)
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


def cmd_card(args: argparse.Namespace) -> int:
    from patchpack.dataset.card import make_card
    from patchpack.dataset.manifest import load_manifest

    with _dataset_required():
        load_manifest(Path(args.data))  # not a dataset: bad input (exit 2), not a failed check
    for path in make_card(Path(args.data)):
        print(f"wrote {path}")
    return 0


def cmd_index(args: argparse.Namespace) -> int:
    from patchpack.dataset.card import export_index
    from patchpack.dataset.manifest import load_manifest

    with _dataset_required():
        load_manifest(Path(args.data))
    out = Path(args.out or f"index.{args.format}")
    print(f"wrote {export_index(Path(args.data), args.format, out)}")
    return 0


def _reads_remote(args: argparse.Namespace) -> bool:
    """Whether the verb reads the dataset on its remote (``--remote``, ``--repo``, ``--rev``,
    ``--lock``) rather than a folder."""
    return any(getattr(args, name, None) is not None for name in ("remote", "repo", "rev", "lock"))


def _remote_verb(args: argparse.Namespace) -> int:
    """``info``, ``verify`` or ``preview`` on the dataset left on its remote."""
    from patchpack.sharing import remote_audit
    from patchpack.sharing.remote_read import RemoteLocation, open_remote

    if getattr(args, "rebuild", False):
        raise ConfigError("--rebuild rebuilds a local folder; it does not go with --remote")
    location = RemoteLocation(
        data=Path(args.data).as_posix(),
        remote=args.remote or None,
        repo=args.repo,
        rev=args.rev,
        lock=None if args.lock is None else Path(args.lock),
    )
    if args.verb == "verify":  # a remote object that fails its hash fails the check: exit 1
        with open_remote(location, cache_dir=args.cache, cache_size=args.cache_size) as source:
            report = remote_audit.remote_verify(
                source,
                splits=tuple(args.split) if args.split else None,
                allow_container_diff=args.pixels_only,
            )
        print(report.render())
        return 0 if report.ok else 1
    with (
        _dataset_required(),
        open_remote(location, cache_dir=args.cache, cache_size=args.cache_size) as source,
    ):
        if args.verb == "info":
            print(remote_audit.remote_info(source))
        else:
            path = remote_audit.remote_preview(source, Path(args.out), per_cell=args.per_class)
            print(f"wrote {path} (slide maps need the sources: run preview on a pulled folder)")
    return 0


def _with_remote(sub: argparse.ArgumentParser) -> None:
    """The options that read the dataset on its DVC remote instead of a folder (no pull)."""
    group = sub.add_argument_group(
        "reading without pulling",
        "DATA is then the dataset's path in its project, as dvc.lock names it",
    )
    group.add_argument(
        "--remote",
        nargs="?",
        const="",
        metavar="NAME|URL",
        help="read from this DVC remote (default: the project's default remote), shards "
        "downloaded on demand and checked against the manifest",
    )
    group.add_argument("--repo", help="a repository path or git URL whose dvc.lock to read")
    group.add_argument("--rev", help="the git rev (tag, branch, commit) whose dvc.lock to read")
    group.add_argument("--lock", metavar="FILE", help="a dvc.lock file to read instead")
    group.add_argument(
        "--cache", metavar="DIR", help="shard cache folder (default: ~/.cache/patchpack/remote)"
    )
    group.add_argument(
        "--cache-size",
        default="2G",
        metavar="SIZE",
        help="most bytes of shards the cache holds, e.g. 512M (default 2G)",
    )


def _quiet_dask() -> None:
    """Dask logs a lost scheduler as tracebacks on stderr; patchpack reports it in one line."""
    import distributed  # noqa: F401  # configures its loggers on import: quiet them after

    for name in list(logging.root.manager.loggerDict):
        if name == "distributed" or name.startswith("distributed."):
            logging.getLogger(name).setLevel(logging.CRITICAL)


def cmd_plugin_path(args: argparse.Namespace) -> int:
    """Print the folder of hdf5plugin's filters, what HDF5_PLUGIN_PATH needs for zstd shards."""
    import hdf5plugin

    print(hdf5plugin.PLUGIN_PATH)
    return 0


def _add_dataset_verbs(verb: Verb) -> None:
    """``patchpack sources``, ``extract``, ``verify``, ``info`` and ``preview``."""
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
    _with_remote(sub)

    sub = verb(
        "info", cmd_info, "counts per split and class, bytes on disk, compression, fingerprint"
    )
    sub.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help="dataset folder")
    _with_remote(sub)

    sub = verb(
        "card",
        cmd_card,
        "write the dataset card (README.md), croissant.json and index.csv into a dataset folder",
    )
    sub.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help="dataset folder")

    sub = verb("index", cmd_index, "write the patch index: one row per patch, as CSV or Parquet")
    sub.add_argument("data", nargs="?", default=str(DEFAULT_DATA), help="dataset folder")
    sub.add_argument(
        "--format", default="csv", help="csv (default) or parquet (needs the index extra: pyarrow)"
    )
    sub.add_argument("--out", help="file to write (default: index.csv or index.parquet here)")

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
    _with_remote(sub)

    verb(
        "plugin-path",
        cmd_plugin_path,
        "print the HDF5 filter folder for HDF5_PLUGIN_PATH (h5dump, h5py without hdf5plugin)",
    )
