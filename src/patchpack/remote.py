"""DVC remote setup and checks: find out early, in plain words, why a remote would fail.

DVC reports a missing bucket, a wrong region or a denied write late and cryptically (often after it
has hashed the whole dataset). ``patchpack remote`` probes the remote with boto3 first, in the order
that a request depends on: credentials, endpoint, bucket (and its region), list, read, write. Each
failure mode gets its own one-line message saying what failed, where, and how to fix it:

==================  =================================================================================
kind                typical cause (botocore)
==================  =================================================================================
no-credentials      ``NoCredentialsError``: nothing in the environment, ``~/.aws`` or the profile
no-profile          ``ProfileNotFound``: the configured profile is not in the AWS config files
bad-credentials     ``InvalidAccessKeyId``, ``SignatureDoesNotMatch``, ``ExpiredToken``
access-denied       ``AccessDenied`` / HTTP 403: the credentials lack an s3 action
no-bucket           ``NoSuchBucket`` / HTTP 404
unreachable         ``EndpointConnectionError``, timeouts, TLS failures
wrong-region        ``AuthorizationHeaderMalformed``, ``PermanentRedirect``, ``IllegalLocationConstraint
                    Exception``, or a bucket whose ``x-amz-bucket-region`` differs from the remote's
==================  =================================================================================

Only non-secret settings are written to the committed ``.dvc/config`` (url, endpoint, region); the
profile name goes to ``.dvc/config.local``, and keys stay in the environment or the AWS config files.
boto3 and DVC are imported inside the functions that need them, so ``patchpack --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from patchpack.errors import RemoteError

DEFAULT_NAME = "storage"
PROBE_PREFIX = ".patchpack-probe-"
SECRET_OPTIONS = ("access_key_id", "secret_access_key", "session_token")
CHECK_NAMES = ("credentials", "endpoint", "bucket", "region", "list", "read", "write")
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_REGION_CODES = {
    "AuthorizationHeaderMalformed",
    "PermanentRedirect",
    "IllegalLocationConstraintException",
    "IncorrectEndpoint",
    "301",
}
_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidClientTokenId",
}
_DENIED_CODES = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem"}
_NO_BUCKET_CODES = {"NoSuchBucket", "404", "NotFound"}


class _RegionMismatch(Exception):
    """The server reported the bucket in another region than the one requests are signed for."""

    def __init__(self, region: str) -> None:
        super().__init__(region)
        self.region = region


class RemoteCheckFailed(RemoteError):
    """A remote probe failed; ``kind`` names the failure mode, ``report`` holds every check."""

    def __init__(self, message: str, kind: str, report: RemoteReport | None = None) -> None:
        super().__init__(message)
        self.kind = kind
        self.report = report


@dataclass(frozen=True)
class RemoteSpec:
    """A DVC remote as patchpack checks it: name, url and the non-secret S3 options.

    ``url`` is ``s3://bucket/prefix`` or an absolute local directory. ``secrets`` holds keys found in
    DVC's config (``.dvc/config.local``); they are passed to boto3 and never printed.
    """

    name: str
    url: str
    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    secrets: Mapping[str, str] = field(default_factory=dict, repr=False)

    @property
    def is_s3(self) -> bool:
        return self.url.startswith("s3://")

    @property
    def bucket(self) -> str:
        return parse_s3_url(self.url)[0]

    @property
    def prefix(self) -> str:
        return parse_s3_url(self.url)[1]

    def describe(self) -> str:
        parts = [f"remote '{self.name}': {self.url}"]
        if self.endpoint_url:
            parts.append(f"endpoint {self.endpoint_url}")
        if self.region:
            parts.append(f"region {self.region}")
        if self.profile:
            parts.append(f"profile {self.profile}")
        return ", ".join(parts)


@dataclass(frozen=True)
class Check:
    """One probe: ``status`` is ``ok``, ``fail``, ``no`` (failed but not needed) or ``skip``."""

    name: str
    status: str
    detail: str
    kind: str = ""


@dataclass
class RemoteReport:
    """Every probe of one remote, in the order a request depends on them."""

    spec: RemoteSpec
    checks: list[Check] = field(default_factory=list)
    region: str | None = None  # the bucket's region, when the server reports it

    @property
    def ok(self) -> bool:
        return all(check.status != "fail" for check in self.checks)

    @property
    def failures(self) -> list[Check]:
        return [check for check in self.checks if check.status == "fail"]

    def status(self, name: str) -> str:
        for check in self.checks:
            if check.name == name:
                return check.status
        return "skip"

    def render(self) -> str:
        marks = {"ok": "ok  ", "fail": "FAIL", "no": "no  ", "skip": "--  "}
        lines = [self.spec.describe()]
        lines += [f"  {marks[c.status]} {c.name:<12} {c.detail}" for c in self.checks]
        if self.ok:
            usable = {
                "ok": "push and pull",
                "no": "pull only (read-only)",
            }.get(self.status("write"), "pull (write not checked)")
            lines.append(f"  usable for: {usable}")
        return "\n".join(lines)

    def raise_for_failure(self) -> None:
        """Raise :class:`RemoteCheckFailed` with the first failure's one-line message."""
        if self.failures:
            first = self.failures[0]
            raise RemoteCheckFailed(first.detail, first.kind, self)


# ---------------------------------------------------------------------------------------------------
# Reading DVC's configuration


def find_root(start: str | Path = ".") -> Path:
    """The DVC project folder containing ``start`` (the folder holding ``.dvc/``)."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    raise RemoteError(
        f"{here}: not inside a DVC project (no .dvc folder); run from the project or `dvc init`"
    )


def _dvc_config(root: Path) -> Any:
    from dvc.config import Config, ConfigError

    try:
        return Config(dvc_dir=str(root / ".dvc"))
    except ConfigError as exc:
        raise RemoteError(
            f"{root / '.dvc'}: DVC config is invalid ({exc}); fix it with `dvc config`"
        ) from exc


def load_remote(root: str | Path = ".", name: str | None = None) -> RemoteSpec:
    """The remote ``name`` (default: DVC's default remote) from the merged DVC config.

    Raises
    ------
    RemoteError
        When there is no DVC project, no default remote, or no remote of that name.
    """
    root = find_root(root)
    config = _dvc_config(root)
    remotes = config.get("remote", {})
    if name is None:
        name = config.get("core", {}).get("remote")
        if not name:
            raise RemoteError(
                f"{root}: no default DVC remote; set one with `patchpack remote s3 s3://BUCKET/PREFIX` "
                f"or `patchpack remote local DIR`"
            )
    if name not in remotes:
        known = ", ".join(sorted(remotes)) or "none"
        raise RemoteError(
            f"{root}: no DVC remote named {name!r} (configured: {known}); "
            f"add it with `patchpack remote s3 ... --name {name}` or see `dvc remote list`"
        )
    section = remotes[name]
    secrets = {key: str(section[key]) for key in SECRET_OPTIONS if section.get(key)}
    url = str(section["url"])
    return RemoteSpec(
        name=name,
        url=url,
        endpoint_url=section.get("endpointurl"),
        profile=section.get("profile"),
        region=section.get("region"),
        secrets=secrets,
    )


def committed_secrets(root: Path) -> list[str]:
    """``remote.NAME.option`` for every credential found in the committed ``.dvc/config``."""
    config = _dvc_config(root)
    repo = config.load_one("repo")
    return [
        f"remote.{name}.{key}"
        for name, section in sorted(repo.get("remote", {}).items())
        for key in SECRET_OPTIONS
        if section.get(key)
    ]


def parse_s3_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` -> ``("bucket", "some/prefix")``.

    Raises
    ------
    RemoteError
        When the url is not ``s3://`` or the bucket name is not a valid S3 bucket name.
    """
    match = re.match(r"^s3://([^/]+)/*(.*?)/*$", url)
    if match is None:
        raise RemoteError(f"{url!r} is not an S3 url; write it as s3://BUCKET/PREFIX")
    bucket, prefix = match.groups()
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise RemoteError(
            f"{url}: {bucket!r} is not a valid bucket name (3-63 lowercase letters, digits, '.' or '-')"
        )
    return bucket, prefix


# ---------------------------------------------------------------------------------------------------
# Probing an S3 remote


_CREDENTIAL_SOURCES = {
    "env": "environment variables",
    "shared-credentials-file": "the AWS credentials file",
    "config-file": "the AWS config file",
    "explicit": "DVC's config (.dvc/config.local)",
    "assume-role": "an assumed role",
    "sso": "AWS SSO",
    "iam-role": "the instance's IAM role",
    "container-role": "the container's IAM role",
}


def _mask(key: str | None) -> str:
    """An access key id with its middle hidden: enough to tell keys apart in a report."""
    return f"{key[:4]}...{key[-4:]}" if key and len(key) >= 12 else "****"


def _explain(exc: BaseException, spec: RemoteSpec, action: str, region: str) -> tuple[str, str]:
    """(kind, one-line message) for an exception raised by an S3 request."""
    from botocore import exceptions as bx

    where = spec.url
    endpoint = spec.endpoint_url or f"AWS S3 ({region})"
    if isinstance(exc, _RegionMismatch):
        return "wrong-region", _wrong_region(spec, region, exc.region, "x-amz-bucket-region")
    if isinstance(exc, bx.NoCredentialsError | bx.PartialCredentialsError):
        return "no-credentials", _no_credentials(spec)
    if isinstance(exc, bx.ProfileNotFound):
        return "no-profile", _no_profile(spec)
    if isinstance(
        exc,
        bx.EndpointConnectionError | bx.ConnectTimeoutError | bx.ReadTimeoutError | bx.SSLError,
    ):
        return "unreachable", (
            f"cannot reach the S3 endpoint {endpoint} for {where} ({type(exc).__name__}): check the "
            f"address (`dvc remote modify {spec.name} endpointurl URL`), that the server runs, and "
            f"your network or proxy"
        )
    if not isinstance(exc, bx.ClientError):
        return "other", f"{action} on {where} failed: {type(exc).__name__}: {exc}"
    error = exc.response.get("Error", {})
    code = str(error.get("Code", ""))
    headers = exc.response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
    actual = headers.get("x-amz-bucket-region") or error.get("Region")
    if code in _REGION_CODES or (code == "400" and actual and actual != region):
        return "wrong-region", _wrong_region(spec, region, actual, code)
    if code in _CREDENTIAL_CODES:
        return "bad-credentials", (
            f"the S3 endpoint {endpoint} rejected the credentials ({code}) for {where}: check "
            f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or the profile, or renew an expired session token"
        )
    if code in _NO_BUCKET_CODES:
        return "no-bucket", (
            f"no bucket {spec.bucket!r} at {endpoint}: check the name in `dvc remote list`, or create "
            f"it with `patchpack remote s3 {spec.url} --create-bucket`"
        )
    if code in _DENIED_CODES:
        return "access-denied", (
            f"access denied: {action} on {where} is not allowed for these credentials; ask the bucket "
            f"owner to grant it (pull needs s3:ListBucket and s3:GetObject, push also s3:PutObject; "
            f"see docs/sharing.md)"
        )
    message = error.get("Message", "")
    return "other", f"{action} on {where} failed: {code} {message}".strip()


def _no_credentials(spec: RemoteSpec) -> str:
    profile = f" --profile {spec.profile}" if spec.profile else ""
    return (
        f"no AWS credentials found for {spec.url}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
        f"run `aws configure{profile}`, or name a profile with "
        f"`dvc remote modify --local {spec.name} profile NAME`"
    )


def _no_profile(spec: RemoteSpec) -> str:
    return (
        f"AWS profile {spec.profile!r} (remote '{spec.name}') is not in ~/.aws/config or "
        f"~/.aws/credentials: create it with `aws configure --profile {spec.profile}` or change it "
        f"with `dvc remote modify --local {spec.name} profile NAME`"
    )


def _wrong_region(spec: RemoteSpec, region: str, actual: str | None, code: str) -> str:
    if actual:
        return (
            f"bucket {spec.bucket!r} is in region {actual}, but remote '{spec.name}' uses {region}: "
            f"run `dvc remote modify {spec.name} region {actual}`"
        )
    return (
        f"bucket {spec.bucket!r} is not in region {region} ({code}): set the bucket's region with "
        f"`dvc remote modify {spec.name} region REGION`"
    )


def _session(spec: RemoteSpec) -> Any:
    import boto3

    return boto3.Session(
        profile_name=spec.profile,
        aws_access_key_id=spec.secrets.get("access_key_id"),
        aws_secret_access_key=spec.secrets.get("secret_access_key"),
        aws_session_token=spec.secrets.get("session_token"),
    )


def s3_client(spec: RemoteSpec, timeout: float = 5.0) -> Any:
    """A boto3 S3 client configured the way DVC would use the remote (endpoint, profile, region)."""
    from botocore.config import Config

    session = _session(spec)
    region = spec.region or session.region_name or "us-east-1"
    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 2, "mode": "standard"},
    )
    return session.client("s3", endpoint_url=spec.endpoint_url, region_name=region, config=config)


def check_s3(
    spec: RemoteSpec, *, write: bool = True, read_only: bool = False, create_bucket: bool = False
) -> RemoteReport:
    """Probe an S3 remote: credentials, endpoint, bucket, region, list, read, write.

    Parameters
    ----------
    spec : the remote to probe
    write : try to write (and delete) a small probe object under the prefix
    read_only : a failed write is reported as ``no`` (enough for ``dvc pull``), not as a failure
    create_bucket : create the bucket when it does not exist

    Never raises for a remote problem: every outcome is a :class:`Check` in the report.
    """
    from botocore import exceptions as bx

    report = RemoteReport(spec)
    add = report.checks.append

    def fail(name: str, exc: BaseException, action: str) -> None:
        kind, message = _explain(exc, spec, action, region)
        add(Check(name, "fail", message, kind))
        done = {check.name for check in report.checks}
        for rest in CHECK_NAMES:
            if rest not in done:
                add(Check(rest, "skip", f"not checked: {name} failed"))

    region = spec.region or "us-east-1"
    try:
        session = _session(spec)
        region = spec.region or session.region_name or "us-east-1"
        credentials = session.get_credentials()
    except bx.ProfileNotFound as exc:
        fail("credentials", exc, "loading the AWS profile")
        return report
    if credentials is None:
        fail("credentials", bx.NoCredentialsError(), "finding credentials")
        return report
    source = _CREDENTIAL_SOURCES.get(credentials.method, credentials.method)
    add(Check("credentials", "ok", f"access key {_mask(credentials.access_key)} from {source}"))
    client = s3_client(spec)
    bucket, prefix = spec.bucket, spec.prefix
    endpoint = spec.endpoint_url or f"AWS S3 ({region})"

    # HeadBucket: reachability, existence and the bucket's region in one request. A 403 here is not
    # final (S3-compatible servers map HEAD to their own permission), so listing decides access.
    actual_region = None
    head_error: BaseException | None = None
    created = False
    try:
        response = client.head_bucket(Bucket=bucket)
        actual_region = response["ResponseMetadata"]["HTTPHeaders"].get("x-amz-bucket-region")
    except bx.ClientError as exc:
        code = str(exc.response.get("Error", {}).get("Code", ""))
        if code in _NO_BUCKET_CODES and create_bucket:
            add(Check("endpoint", "ok", f"{endpoint} answered"))
            try:
                _create_bucket(client, bucket, region)
            except (bx.ClientError, bx.BotoCoreError) as create_exc:
                fail("bucket", create_exc, f"CreateBucket {bucket!r}")
                return report
            created = True
            actual_region = region
            add(Check("bucket", "ok", f"created bucket {bucket!r} in {region}"))
        elif (
            code in _NO_BUCKET_CODES
            or _explain(exc, spec, "HeadBucket", region)[0] == "wrong-region"
        ):
            add(Check("endpoint", "ok", f"{endpoint} answered"))
            kind, _ = _explain(exc, spec, "HeadBucket", region)
            fail("region" if kind == "wrong-region" else "bucket", exc, f"HeadBucket {bucket!r}")
            return report
        else:
            head_error = exc
    except bx.BotoCoreError as exc:
        fail("endpoint", exc, f"connecting to {endpoint}")
        return report
    if not created:
        add(Check("endpoint", "ok", f"{endpoint} answered"))

    # List: what DVC does first on push, pull and status. It decides the bucket when HEAD was refused.
    key_prefix = f"{prefix}/" if prefix else ""
    listing = None
    if head_error is not None:
        try:
            listing = client.list_objects_v2(Bucket=bucket, Prefix=key_prefix, MaxKeys=50)
        except (bx.ClientError, bx.BotoCoreError) as exc:
            fail("bucket", exc, f"ListObjectsV2 on {spec.url}")
            return report
        add(
            Check("bucket", "ok", f"bucket {bucket!r} exists (HeadBucket refused, listing allowed)")
        )
    elif not created:
        add(Check("bucket", "ok", f"bucket {bucket!r} exists"))

    # Region: a bucket in another region than the one requests are signed for breaks DVC later.
    if actual_region and actual_region != region:
        fail("region", _RegionMismatch(actual_region), "HeadBucket")
        return report
    if actual_region:
        report.region = actual_region
        add(Check("region", "ok", f"bucket is in {actual_region}"))
    else:
        add(Check("region", "skip", f"not reported by the server; requests use {region}"))

    if listing is None:
        try:
            listing = client.list_objects_v2(Bucket=bucket, Prefix=key_prefix, MaxKeys=50)
        except (bx.ClientError, bx.BotoCoreError) as exc:
            fail("list", exc, f"ListObjectsV2 on {spec.url}")
            return report
    keys = [item["Key"] for item in listing.get("Contents", []) if PROBE_PREFIX not in item["Key"]]
    shown = f"{len(keys)}{'+' if listing.get('IsTruncated') else ''} objects under {spec.url}"
    add(Check("list", "ok", shown))

    # Write a probe, read it back, delete it; with no write, read an existing object instead.
    written = None
    write_check: Check | None = None
    if write:
        probe = f"{key_prefix}{PROBE_PREFIX}{uuid.uuid4().hex}"
        try:
            client.put_object(Bucket=bucket, Key=probe, Body=b"patchpack remote probe\n")
            written = probe
        except (bx.ClientError, bx.BotoCoreError) as exc:
            kind, message = _explain(exc, spec, "PutObject", region)
            if read_only and kind == "access-denied":
                write_check = Check(
                    "write",
                    "no",
                    "not allowed (read-only: dvc pull works, dvc push will not)",
                    kind,
                )
            else:
                write_check = Check("write", "fail", message, kind)
    target = written or (keys[0] if keys else None)
    if target is None:
        add(Check("read", "skip", "nothing to read yet (empty remote); pushing will fill it"))
    else:
        try:
            client.get_object(Bucket=bucket, Key=target, Range="bytes=0-0")["Body"].read()
            what = "read back the probe object" if written else f"read s3://{bucket}/{target}"
            add(Check("read", "ok", what))
        except (bx.ClientError, bx.BotoCoreError) as exc:
            kind, message = _explain(exc, spec, "GetObject", region)
            add(Check("read", "fail", message, kind))
    if written is not None:
        try:
            client.delete_object(Bucket=bucket, Key=written)
            write_check = Check("write", "ok", "wrote and deleted a probe object")
        except (bx.ClientError, bx.BotoCoreError):
            write_check = Check(
                "write",
                "ok",
                f"wrote a probe object but may not delete it: remove s3://{bucket}/{written}",
            )
    if write_check is None:
        write_check = Check("write", "skip", "not checked")
    add(write_check)
    return report


def _create_bucket(client: Any, bucket: str, region: str) -> None:
    if region == "us-east-1":
        client.create_bucket(Bucket=bucket)
    else:
        client.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
        )


# ---------------------------------------------------------------------------------------------------
# Probing a local directory remote


def check_local(spec: RemoteSpec, *, write: bool = True, read_only: bool = False) -> RemoteReport:
    """Probe a local (or mounted network) directory remote: exists, list, read, write."""
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


def check_remote(spec: RemoteSpec, *, write: bool = True, read_only: bool = False) -> RemoteReport:
    """Probe ``spec`` (S3 or local directory); see :func:`check_s3`."""
    if spec.is_s3:
        return check_s3(spec, write=write, read_only=read_only)
    if re.match(r"^\w+://", spec.url):
        scheme = spec.url.split("://", 1)[0]
        raise RemoteError(
            f"remote '{spec.name}' uses {scheme}://, which patchpack cannot check; it checks s3:// and "
            f"local directories (DVC itself may still work: try `dvc push`)"
        )
    return check_local(spec, write=write, read_only=read_only)


# ---------------------------------------------------------------------------------------------------
# Configuring DVC


def run_dvc(args: list[str], root: Path, *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run ``dvc ARGS`` with this interpreter's DVC in ``root``; raise :class:`RemoteError` on failure."""
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=root, capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        lines = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        detail = lines[-1].strip() if lines else f"exit code {proc.returncode}"
        raise RemoteError(f"`dvc {' '.join(args)}` failed in {root}: {detail}")
    return proc


def configure_s3(
    root: Path,
    url: str,
    *,
    name: str = DEFAULT_NAME,
    endpoint_url: str | None = None,
    profile: str | None = None,
    region: str | None = None,
) -> None:
    """Make ``url`` DVC's default remote. Endpoint and region are committed; the profile is local."""
    run_dvc(["remote", "add", "--default", "--force", name, url], root)
    if endpoint_url:
        run_dvc(["remote", "modify", name, "endpointurl", endpoint_url], root)
    if region:
        run_dvc(["remote", "modify", name, "region", region], root)
    local = _dvc_config(root).load_one("local").get("remote", {}).get(name, {})
    if profile:
        run_dvc(["remote", "modify", "--local", name, "profile", profile], root)
    elif local.get("profile"):
        run_dvc(["remote", "modify", "--local", name, "--unset", "profile"], root)


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
) -> RemoteReport:
    """Check an S3 remote, then configure it as DVC's default remote.

    Raises
    ------
    RemoteCheckFailed
        When a check fails (a denied write only fails without ``read_only``); nothing is configured.
    """
    root = find_root(root)
    parse_s3_url(url)
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
    )
    return report


def setup_local(
    root: str | Path, directory: str | Path, *, name: str = DEFAULT_NAME
) -> RemoteReport:
    """Create ``directory`` if needed, check it, and make it DVC's default remote (absolute path)."""
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
    if not (root / ".git").exists():
        return  # not a git repository: nothing gets committed
    ignore = root / ".dvc" / ".gitignore"
    lines = ignore.read_text(encoding="utf-8").splitlines() if ignore.exists() else []
    if "/config.local" not in lines:
        raise RemoteError(
            f"{ignore}: /config.local is not git-ignored, so local DVC settings could be committed; "
            f"add the line /config.local"
        )


# ---------------------------------------------------------------------------------------------------
# Command line


def cmd_remote_s3(args: argparse.Namespace) -> int:
    report = setup_s3(
        ".",
        args.url,
        name=args.name,
        endpoint_url=args.endpoint_url,
        profile=args.profile,
        region=args.region,
        create_bucket=args.create_bucket,
        read_only=args.read_only,
    )
    print(report.render())
    print(f"configured DVC remote '{args.name}' -> {args.url} (default); commit .dvc/config")
    return 0


def cmd_remote_local(args: argparse.Namespace) -> int:
    report = setup_local(".", args.dir, name=args.name)
    print(report.render())
    print(f"configured DVC remote '{args.name}' -> {report.spec.url} (default); commit .dvc/config")
    return 0


def cmd_remote_check(args: argparse.Namespace) -> int:
    report = check(".", args.name, read_only=args.read_only)
    print(report.render())
    report.raise_for_failure()
    return 0


def cmd_pull(args: argparse.Namespace) -> int:
    from patchpack.pull import pull

    return 0 if pull(Path(args.data), root=Path("."), rebuild=args.rebuild) else 1


Verb = Callable[[str, Callable[[argparse.Namespace], int], str], argparse.ArgumentParser]


def add_verbs(verb: Verb) -> None:
    """Register ``patchpack remote {s3,local,check}`` and ``patchpack pull`` with the CLI's ``verb``."""
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
        "--name", default=DEFAULT_NAME, help=f"DVC remote name (default: {DEFAULT_NAME})"
    )

    sub = kinds.add_parser("local", help="make a local or mounted directory the default DVC remote")
    sub.set_defaults(func=cmd_remote_local)
    sub.add_argument("dir", help="directory to store DVC objects in (created if missing)")
    sub.add_argument(
        "--name", default=DEFAULT_NAME, help=f"DVC remote name (default: {DEFAULT_NAME})"
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


def _remote_help(args: argparse.Namespace) -> int:  # pragma: no cover - argparse requires a KIND
    raise RemoteError("choose s3, local or check")


def read_only_policy(bucket: str, prefix: str = "") -> dict[str, Any]:
    """An IAM policy that lets a partner ``dvc pull`` from ``s3://bucket/prefix`` and nothing more.

    ``s3:ListBucket`` (limited to the prefix) lets DVC see which objects exist; ``s3:GetObject`` on
    the prefix lets it download them. Attach it to the partner's IAM user or role.
    """
    prefix = prefix.strip("/")
    objects = f"arn:aws:s3:::{bucket}/{prefix}/*" if prefix else f"arn:aws:s3:::{bucket}/*"
    listing: dict[str, Any] = {
        "Sid": "ListTheDatasetPrefix",
        "Effect": "Allow",
        "Action": "s3:ListBucket",
        "Resource": f"arn:aws:s3:::{bucket}",
    }
    if prefix:
        listing["Condition"] = {"StringLike": {"s3:prefix": [prefix, f"{prefix}/*"]}}
    reading = {
        "Sid": "ReadTheDatasetObjects",
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": objects,
    }
    return {"Version": "2012-10-17", "Statement": [listing, reading]}
