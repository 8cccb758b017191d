"""DVC remote setup and checks: find out early, in plain words, why a remote would fail.

This is what the command line calls (``patchpack remote s3|local|check``, ``patchpack pull``). It
puts the other ``patchpack.sharing`` modules together:

=================  ================================================================================
module             job
=================  ================================================================================
``spec``           the remote, one check, the report, the failure (no I/O)
``dvcconfig``      find the DVC project, read and write DVC's config, run ``python -m dvc``
``s3``             probe an S3 remote with boto3, one step per check
``s3errors``       the failure kinds and their one-line messages (the table of botocore causes)
``local``          probe a local or mounted directory remote
``policy``         the IAM policy for a read-only partner
=================  ================================================================================

A remote is checked before DVC is configured, so a setup that would fail configures nothing.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from patchpack.errors import RemoteError
from patchpack.sharing.dvcconfig import (
    committed_secrets,
    configure_s3,
    find_root,
    load_remote,
    run_dvc,
)
from patchpack.sharing.local import check_local
from patchpack.sharing.s3 import check_s3
from patchpack.sharing.spec import (
    DEFAULT_NAME,
    Check,
    RemoteReport,
    RemoteSpec,
    parse_s3_url,
    refuse_credentials,
)


def check_remote(spec: RemoteSpec, *, write: bool = True, read_only: bool = False) -> RemoteReport:
    """Probe ``spec`` (S3 or local directory); see :func:`~patchpack.sharing.s3.check_s3`.

    Raises
    ------
    RemoteError
        When the url has a scheme other than ``s3://`` (patchpack cannot check it).
    """
    if spec.is_s3:
        return check_s3(spec, write=write, read_only=read_only)
    if re.match(r"^\w+://", spec.url):
        scheme = spec.url.split("://", 1)[0]
        raise RemoteError(
            f"remote '{spec.name}' uses {scheme}://, which patchpack cannot check; it checks s3:// and "
            f"local directories (DVC itself may still work: try `dvc push`)"
        )
    return check_local(spec, write=write, read_only=read_only)


def setup_s3(
    root: str | Path,
    url: str,
    *,
    name: str = DEFAULT_NAME,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
    create_bucket: bool = False,
    read_only: bool = False,
    public: bool = False,
) -> RemoteReport:
    """Check an S3 remote, then configure it as DVC's default remote (``public``: partners read it
    anonymously, without credentials).

    Raises
    ------
    RemoteCheckFailed
        When a check fails (a denied write only fails without ``read_only``); nothing is configured.
    RemoteError
        When there is no DVC project, the url or endpoint is malformed or carries credentials, or
        ``config.local`` is not git-ignored.
    """
    root = find_root(root)
    parse_s3_url(url)
    if endpoint_url is not None:
        refuse_credentials(endpoint_url, "--endpoint-url")
    if endpoint_url is not None and not re.match(r"^https?://[^/\s]+", endpoint_url):
        raise RemoteError(
            f"--endpoint-url {endpoint_url!r}: expected http://HOST:PORT or https://HOST"
        )
    spec = RemoteSpec(name=name, url=url, endpoint_url=endpoint_url, profile=profile, region=region)
    _check_local_config_ignored(root)
    report = check_s3(spec, read_only=read_only, create_bucket=create_bucket)
    report.raise_for_failure()
    # Commit the bucket's own region when the server reports one, so partners sign for it too.
    configure_s3(
        root,
        url,
        name=name,
        endpoint_url=endpoint_url,
        profile=profile,
        region=region or report.region,
        public=public,
    )
    if public:  # what a partner without credentials sees now (before the policy, a refusal)
        anonymous = dataclasses.replace(spec, region=region or report.region, public=True)
        report.anonymous = check_s3(anonymous, write=False)
    return report


def setup_local(
    root: str | Path, directory: str | Path, *, name: str = DEFAULT_NAME
) -> RemoteReport:
    """Create ``directory`` if needed, check it, and make it DVC's default remote (absolute path).

    Raises
    ------
    RemoteCheckFailed
        When a check fails; nothing is configured.
    RemoteError
        When there is no DVC project or the directory cannot be created.
    """
    root = find_root(root)
    folder = Path(directory).expanduser().resolve()
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RemoteError(
            f"cannot create remote directory {folder} ({exc.strerror}); pick another"
        ) from exc
    spec = RemoteSpec(name=name, url=str(folder))
    report = check_local(spec)
    report.raise_for_failure()
    run_dvc(["remote", "add", "--default", "--force", name, str(folder)], root)
    return report


def check(
    root: str | Path = ".", name: str | None = None, *, read_only: bool = False
) -> RemoteReport:
    """Probe the configured remote; the report also flags credentials in the committed config."""
    root = find_root(root)
    spec = load_remote(root, name)
    report = check_remote(spec, read_only=read_only)
    leaked = committed_secrets(root)
    if leaked:
        report.checks.insert(
            0,
            Check(
                "secrets",
                "fail",
                f"{root / '.dvc' / 'config'} holds {', '.join(leaked)}, which git would publish: move them with "
                f"`dvc remote modify --local NAME OPTION VALUE` and `dvc remote modify NAME --unset OPTION`",
                "committed-secrets",
            ),
        )
    return report


def _check_local_config_ignored(root: Path) -> None:
    """Refuse to write ``.dvc/config.local`` (the profile) where git would commit it."""
    if not (root / ".git").exists():
        return  # not a git repository: nothing gets committed
    ignore = root / ".dvc" / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if "/config.local" not in lines:
        raise RemoteError(
            f"{ignore}: /config.local is not git-ignored, so local DVC settings could be committed; "
            f"add the line /config.local"
        )
