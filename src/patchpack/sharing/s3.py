"""Probe an S3 remote with boto3, one small step per check, before DVC finds the problem late.

DVC reports a missing bucket, a wrong region or a denied write late and cryptically (often after it
has hashed the whole dataset). :func:`check_s3` asks the server first, in the order that a request
depends on: credentials, endpoint, bucket, region, list, read, write. Each step adds its
:class:`~patchpack.sharing.spec.Check` to the report; the first step that fails stops the probe and
every check after it is reported as skipped. Read and write only report: a denied write does not make
a read pointless, nor the other way round. The failure kinds and messages come from
:mod:`patchpack.sharing.s3errors`.

boto3 and botocore are imported inside the functions that need them, so ``patchpack --help`` stays
fast.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from patchpack.sharing.s3errors import NO_BUCKET_CODES, RegionMismatch, error_code, explain
from patchpack.sharing.spec import CHECK_NAMES, PROBE_PREFIX, Check, RemoteReport, RemoteSpec

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


def _session(spec: RemoteSpec) -> Any:
    import boto3

    return boto3.Session(
        profile_name=spec.profile,
        aws_access_key_id=spec.secrets.get("access_key_id"),
        aws_secret_access_key=spec.secrets.get("secret_access_key"),
        aws_session_token=spec.secrets.get("session_token"),
    )


def s3_client(spec: RemoteSpec, timeout: float = 5.0, *, anonymous: bool = False) -> Any:
    """A boto3 S3 client configured the way DVC would use the remote (endpoint, profile, region);
    ``anonymous`` sends unsigned requests, as DVC does for a public remote without credentials."""
    from botocore import UNSIGNED
    from botocore.config import Config

    session = _session(spec)
    region = spec.region or session.region_name or "us-east-1"
    config = Config(
        connect_timeout=timeout,
        read_timeout=timeout,
        retries={"max_attempts": 2, "mode": "standard"},
        signature_version=UNSIGNED if anonymous else None,
    )
    return session.client("s3", endpoint_url=spec.endpoint_url, region_name=region, config=config)


@dataclass
class _Probe:
    """What the steps of one :func:`check_s3` run share: the options, the report, what was learnt."""

    spec: RemoteSpec
    write: bool
    read_only: bool
    create_bucket: bool
    report: RemoteReport = field(init=False)
    region: str = field(init=False)  # the region requests are signed for
    client: Any = None
    head_error: BaseException | None = None  # HeadBucket's ClientError: the bucket step decides
    bucket_region: str | None = None  # x-amz-bucket-region, when the server reports it
    listing: Any = None  # a ListObjectsV2 response, when the bucket step already listed
    keys: list[str] = field(default_factory=list)  # objects under the prefix, probes left out
    written: str | None = None  # the probe object's key, once put
    write_check: Check | None = None  # a refused put, reported after read
    failed: str | None = None  # the check that stopped the probe
    anonymous: bool = False  # a public remote probed without credentials: unsigned requests

    def __post_init__(self) -> None:
        self.report = RemoteReport(self.spec)
        self.region = self.spec.region or "us-east-1"

    @property
    def endpoint(self) -> str:
        return self.spec.endpoint_url or f"AWS S3 ({self.region})"

    @property
    def key_prefix(self) -> str:
        return f"{self.spec.prefix}/" if self.spec.prefix else ""

    def add(self, check: Check) -> None:
        self.report.checks.append(check)

    def fail(self, name: str, exc: BaseException, action: str) -> None:
        """Report check ``name`` as failed because of ``exc``, and stop the probe."""
        kind, message = explain(exc, self.spec, action, self.region)
        if self.anonymous and kind == "access-denied":
            kind, message = (
                "not-public",
                (
                    f"{action} on {self.spec.url} refused an anonymous request: the bucket is not "
                    f"public (yet); the owner attaches the public-read bucket policy that "
                    f"`patchpack remote s3 {self.spec.url} --public` prints, or use credentials"
                ),
            )
        self.add(Check(name, "fail", message, kind))
        self.failed = name

    def list_objects(self) -> Any:
        return self.client.list_objects_v2(
            Bucket=self.spec.bucket, Prefix=self.key_prefix, MaxKeys=50
        )


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

    Returns
    -------
    RemoteReport
        One check per name in ``CHECK_NAMES``. Never raises for a remote problem: every outcome is a
        :class:`~patchpack.sharing.spec.Check` in the report.
    """
    probe = _Probe(spec, write=write, read_only=read_only, create_bucket=create_bucket)
    for step in _STEPS:
        step(probe)
        if probe.failed is not None:
            done = {check.name for check in probe.report.checks}
            for rest in CHECK_NAMES:
                if rest not in done:
                    probe.add(Check(rest, "skip", f"not checked: {probe.failed} failed"))
            break
    return probe.report


def _credentials(probe: _Probe) -> None:
    """credentials: the profile exists and some source (env, files, role) provides a whole key pair."""
    from botocore import exceptions as bx

    if probe.spec.public:  # DVC (s3fs anon) then sends unsigned requests, credentials or not
        probe.anonymous = True
        probe.add(Check("credentials", "ok", "none needed: a public remote, unsigned requests"))
        return
    missing = _half_pair(probe.spec)
    if missing is not None:
        # boto3 takes half a pair from DVC's config as given and fails signing with a TypeError.
        half = bx.PartialCredentialsError(provider="DVC's config", cred_var=missing)
        probe.fail("credentials", half, "loading credentials")
        return
    try:
        session = _session(probe.spec)
        probe.region = probe.spec.region or session.region_name or "us-east-1"
        credentials = session.get_credentials()
    except (bx.ProfileNotFound, bx.PartialCredentialsError) as exc:
        probe.fail("credentials", exc, "loading the AWS credentials")
        return
    if credentials is None:
        probe.fail("credentials", bx.NoCredentialsError(), "finding credentials")
        return
    source = _CREDENTIAL_SOURCES.get(credentials.method, credentials.method)
    probe.add(
        Check("credentials", "ok", f"access key {_mask(credentials.access_key)} from {source}")
    )


def _half_pair(spec: RemoteSpec) -> str | None:
    """The key DVC's config lacks when it gives credentials but not both halves of the pair."""
    if not spec.secrets:
        return None
    for key in ("access_key_id", "secret_access_key"):
        if not spec.secrets.get(key):
            return key
    return None


def _endpoint(probe: _Probe) -> None:
    """endpoint: HeadBucket gets an answer; it also tells existence and region in one request."""
    from botocore import exceptions as bx

    probe.client = s3_client(probe.spec, anonymous=probe.anonymous)
    try:
        response = probe.client.head_bucket(Bucket=probe.spec.bucket)
    except bx.ClientError as exc:
        # Any HTTP answer proves the endpoint; what it says about the bucket is the next step's.
        probe.head_error = exc
    except bx.BotoCoreError as exc:
        probe.fail("endpoint", exc, f"connecting to {probe.endpoint}")
        return
    else:
        headers = response["ResponseMetadata"]["HTTPHeaders"]
        probe.bucket_region = headers.get("x-amz-bucket-region")
    probe.add(Check("endpoint", "ok", f"{probe.endpoint} answered"))


def _bucket(probe: _Probe) -> None:
    """bucket: exists (HeadBucket succeeded), is created, or is missing or in another region."""
    bucket = probe.spec.bucket
    if probe.head_error is None:
        probe.add(Check("bucket", "ok", f"bucket {bucket!r} exists"))
        return
    missing = error_code(probe.head_error) in NO_BUCKET_CODES
    if missing and probe.create_bucket:
        _create(probe)
        return
    kind, _ = explain(probe.head_error, probe.spec, "HeadBucket", probe.region)
    if missing or kind == "wrong-region":
        name = "region" if kind == "wrong-region" else "bucket"
        probe.fail(name, probe.head_error, f"HeadBucket {bucket!r}")
        return
    _list_instead_of_head(probe)


def _create(probe: _Probe) -> None:
    """bucket, with --create-bucket: create the missing bucket in the region requests use."""
    from botocore import exceptions as bx

    bucket = probe.spec.bucket
    try:
        _create_bucket(probe.client, bucket, probe.region)
    except (bx.ClientError, bx.BotoCoreError) as exc:
        probe.fail("bucket", exc, f"CreateBucket {bucket!r}")
        return
    probe.bucket_region = probe.region
    probe.add(Check("bucket", "ok", f"created bucket {bucket!r} in {probe.region}"))


def _create_bucket(client: Any, bucket: str, region: str) -> None:
    # S3 rejects a LocationConstraint of us-east-1, its default region.
    if region == "us-east-1":
        client.create_bucket(Bucket=bucket)
    else:
        client.create_bucket(
            Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region}
        )


def _list_instead_of_head(probe: _Probe) -> None:
    """bucket, when HeadBucket was refused: listing decides.

    A 403 on HEAD is not final (S3-compatible servers map HEAD to their own permission), and
    listing is what DVC does first on push, pull and status anyway.
    """
    from botocore import exceptions as bx

    try:
        probe.listing = probe.list_objects()
    except (bx.ClientError, bx.BotoCoreError) as exc:
        probe.fail("bucket", exc, f"ListObjectsV2 on {probe.spec.url}")
        return
    detail = f"bucket {probe.spec.bucket!r} exists (HeadBucket refused, listing allowed)"
    probe.add(Check("bucket", "ok", detail))


def _region(probe: _Probe) -> None:
    """region: a bucket in another region than the one requests are signed for breaks DVC later."""
    actual = probe.bucket_region
    if actual and actual != probe.region:
        probe.fail("region", RegionMismatch(actual), "HeadBucket")
    elif actual:
        probe.report.region = actual
        probe.add(Check("region", "ok", f"bucket is in {actual}"))
    else:
        detail = f"not reported by the server; requests use {probe.region}"
        probe.add(Check("region", "skip", detail))


def _list(probe: _Probe) -> None:
    """list: what DVC does first on push, pull and status (unless the bucket step already did)."""
    from botocore import exceptions as bx

    if probe.listing is None:
        try:
            probe.listing = probe.list_objects()
        except (bx.ClientError, bx.BotoCoreError) as exc:
            probe.fail("list", exc, f"ListObjectsV2 on {probe.spec.url}")
            return
    contents = probe.listing.get("Contents", [])
    # Probe objects left behind by an interrupted check are not the dataset's.
    probe.keys = [item["Key"] for item in contents if PROBE_PREFIX not in item["Key"]]
    more = "+" if probe.listing.get("IsTruncated") else ""
    probe.add(Check("list", "ok", f"{len(probe.keys)}{more} objects under {probe.spec.url}"))


def _put_probe(probe: _Probe) -> None:
    """The first half of write: put a probe object, so that read can read it back.

    A refused put is kept in ``probe.write_check``, reported by :func:`_write` after read.
    """
    from botocore import exceptions as bx

    key = f"{probe.key_prefix}{PROBE_PREFIX}{uuid.uuid4().hex}"
    try:
        probe.client.put_object(Bucket=probe.spec.bucket, Key=key, Body=b"patchpack remote probe\n")
    except (bx.ClientError, bx.BotoCoreError) as exc:
        kind, message = explain(exc, probe.spec, "PutObject", probe.region)
        if probe.read_only and kind == "access-denied":
            detail = "not allowed (read-only: dvc pull works, dvc push will not)"
            probe.write_check = Check("write", "no", detail, kind)
        else:
            probe.write_check = Check("write", "fail", message, kind)
        return
    probe.written = key


def _read(probe: _Probe) -> None:
    """read: read back the probe object just put, or (with no write) an existing object."""
    from botocore import exceptions as bx

    if probe.write:
        _put_probe(probe)
    target = probe.written or (probe.keys[0] if probe.keys else None)
    if target is None:
        probe.add(Check("read", "skip", "nothing to read yet (empty remote); pushing will fill it"))
        return
    try:
        response = probe.client.get_object(Bucket=probe.spec.bucket, Key=target, Range="bytes=0-0")
        response["Body"].read()
    except (bx.ClientError, bx.BotoCoreError) as exc:
        kind, message = explain(exc, probe.spec, "GetObject", probe.region)
        probe.add(Check("read", "fail", message, kind))
        return
    what = (
        "read back the probe object" if probe.written else f"read s3://{probe.spec.bucket}/{target}"
    )
    probe.add(Check("read", "ok", what))


def _write(probe: _Probe) -> None:
    """write: delete the probe object that was put, and report the put and the delete."""
    from botocore import exceptions as bx

    if probe.written is None:
        probe.add(probe.write_check or Check("write", "skip", "not checked"))
        return
    try:
        probe.client.delete_object(Bucket=probe.spec.bucket, Key=probe.written)
    except (bx.ClientError, bx.BotoCoreError):
        # The write worked; a leftover probe only costs a few bytes, so this is no failure.
        leftover = f"s3://{probe.spec.bucket}/{probe.written}"
        detail = f"wrote a probe object but may not delete it: remove {leftover}"
        probe.add(Check("write", "ok", detail))
        return
    probe.add(Check("write", "ok", "wrote and deleted a probe object"))


# The steps in CHECK_NAMES order: each adds its check, or calls probe.fail() to stop the probe.
_STEPS: tuple[Callable[[_Probe], None], ...] = (
    _credentials,
    _endpoint,
    _bucket,
    _region,
    _list,
    _read,
    _write,
)
