"""Probe a local (or mounted network) directory remote: exists, list, read, write.

The checks mirror the S3 probe's last three (list, read, write) with the same kinds, so a report
reads the same whichever remote a partner uses.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

from patchpack.sharing.spec import PROBE_PREFIX, Check, RemoteReport, RemoteSpec


def check_local(spec: RemoteSpec, *, write: bool = True, read_only: bool = False) -> RemoteReport:
    """Probe a local (or mounted network) directory remote: exists, list, read, write.

    Parameters
    ----------
    spec : the remote to probe; ``spec.url`` is the directory
    write : try to write (and delete) a small probe file in the directory
    read_only : a failed write is reported as ``no`` (enough for ``dvc pull``), not as a failure

    Returns
    -------
    RemoteReport
        A list, a read and a write check. Never raises for a remote problem.
    """
    report = RemoteReport(spec)
    add = report.checks.append
    folder = Path(spec.url)
    if not folder.is_dir():
        add(
            Check(
                "list",
                "fail",
                f"remote '{spec.name}': no such directory {folder}; create or mount it, or set another with "
                f"`patchpack remote local DIR --name {spec.name}`",
                "no-bucket",
            )
        )
        add(Check("read", "skip", "not checked: list failed"))
        add(Check("write", "skip", "not checked: list failed"))
        return report
    try:
        names = os.listdir(folder)
    except OSError as exc:
        add(
            Check(
                "list",
                "fail",
                f"cannot list {folder} ({exc.strerror}); fix its permissions",
                "access-denied",
            )
        )
        return report
    add(Check("list", "ok", f"{len(names)} entries in {folder}"))
    # DVC 3 stores objects as files/md5/XX/REST; one of them proves reading when no probe is written.
    sample = next((p for p in sorted((folder / "files").glob("md5/*/*"))[:1] if p.is_file()), None)
    written = None
    write_check = Check("write", "skip", "not checked")
    if write:
        probe = folder / f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            probe.write_bytes(b"patchpack remote probe\n")
            written = probe
        except OSError as exc:
            status = "no" if read_only else "fail"
            write_check = Check(
                "write",
                status,
                f"cannot write to {folder} ({exc.strerror}); fix its permissions or "
                f"use it read-only (dvc pull only)",
                "access-denied",
            )
    target = written or sample
    if target is None:
        add(Check("read", "skip", "nothing to read yet (empty remote); pushing will fill it"))
    else:
        try:
            with open(target, "rb") as handle:
                handle.read(1)
            add(Check("read", "ok", "read back the probe file" if written else f"read {target}"))
        except OSError as exc:
            add(
                Check(
                    "read",
                    "fail",
                    f"cannot read {target} ({exc.strerror}); fix its permissions",
                    "access-denied",
                )
            )
    if written is not None:
        written.unlink(missing_ok=True)
        write_check = Check("write", "ok", "wrote and deleted a probe file")
    add(write_check)
    return report
